"""TensorBoard event files."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {"logging": {"tensorboard": Key(boolean, True, "event files in --out-dir")}}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"tensorboard": values["logging"]["tensorboard"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"tensorboard": f["tensorboard"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from torch.utils.tensorboard import SummaryWriter"] if f["tensorboard"] else []
