"""torch.compile of the model."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean
from ltgen.features.strategy import distributed

KEYS: dict[str, dict[str, Key]] = {"trainer": {"compile": Key(boolean, False, "torch.compile the model")}}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    compiled = values["trainer"]["compile"]
    ddp = distributed(values) and values["cluster"]["strategy"] == "ddp"
    # the trained model is wrapped (DDP or compile), so raw_model is kept for saving
    return {"compile": compiled, "wrapped": ddp or compiled}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    return {"raw": "raw_model" if f["wrapped"] else "model"}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"compile": f["compile"]}
