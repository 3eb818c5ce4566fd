"""What a NaN or infinite loss does: stop training, skip the optimizer step, or nothing."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, choice

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "nonfinite_loss": Key(choice("stop", "skip", "off"), "stop", '"stop" | "skip" (the optimizer step) | "off"')
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"nonfinite": values["trainer"]["nonfinite_loss"]}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    """When the loss is read: at logging steps and, with "stop", before any step that may save a checkpoint."""
    guard_saves = f["nonfinite"] == "stop" and f["checkpointing"]
    gate = ("stepped and " if f["nonfinite"] == "skip" else "") + "global_step % cfg.log_every_n_steps == 0"
    if guard_saves:
        gate += " or validate" if f["validation"] else ""
        if f["save_last"]:
            gate += " or periodic"
            if not (f["validation"] and not f["val_interval"] and not f["val_every_n_epoch"]):
                gate += " or batch_idx + 1 == n_train"  # an epoch's end saves, and validates only sometimes
            if not f["distributed"]:
                gate += " or stop_signal is not None"
    return {"guard_saves": guard_saves, "log_gate": gate}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"nonfinite": f["nonfinite"] == "stop"}  # "skip" is a way of stepping: the automatic unit's


def imports(f: dict[str, Any]) -> list[str]:
    return ["import math"] if f["nonfinite"] == "stop" else []
