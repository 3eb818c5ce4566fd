"""Deterministic mode: torch's deterministic algorithms, so that two runs give bit-equal weights."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "deterministic": Key(
            boolean, False, "deterministic algorithms only (cuDNN, cuBLAS): bit-equal reruns, somewhat slower"
        )
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"deterministic": values["trainer"]["deterministic"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"deterministic": f["deterministic"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import os"] if f["deterministic"] else []
