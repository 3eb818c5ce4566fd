"""The model's parameter counts, and each top-level layer's input and output shapes, printed at start."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {
    "debug": {
        "param_summary": Key(
            boolean, True, "print the model's parameter counts, and its layers' input and output shapes, at start"
        )
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"param_summary": values["debug"]["param_summary"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"param_summary": f["param_summary"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from model import example_input, summary"] if f["param_summary"] else []
