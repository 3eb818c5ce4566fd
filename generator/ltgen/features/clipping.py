"""Gradient clipping by norm."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, number
from ltgen.unit import Field

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {"gradient_clip_val": Key(number(0.0), 0.0, "clip the gradient norm to this; 0: off")}
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"clip": values["trainer"]["gradient_clip_val"] > 0}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"clipping": f["clip"]}


def fields(f: dict[str, Any]) -> list[Field]:
    expected = "a finite number > 0 (turn clipping off in ltgen.toml)"
    clip = Field("gradient_clip_val", "trainer.gradient_clip_val", "float", "0 < {v} < math.inf", expected)
    return [clip] if f["clip"] else []
