"""torch.autograd anomaly detection."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {
    "debug": {"detect_anomaly": Key(boolean, False, "torch.autograd anomaly detection (slow)")}
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"detect_anomaly": values["debug"]["detect_anomaly"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"anomaly": f["detect_anomaly"]}
