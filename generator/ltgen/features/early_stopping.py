"""Early stopping: end training when a validation metric stops improving, or crosses a threshold."""

from __future__ import annotations

from typing import Any

from ltgen.checks import METRIC, MODE, Key, boolean, integer, number, off_or_number, only_with
from ltgen.features.validation import needs_validation
from ltgen.unit import Entry, Field, plain

ENABLED = (only_with("early_stopping.enabled", True, where="when early stopping is enabled"),)

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "min_epochs": Key(integer(0), 0, "early stopping waits for at least this many completed epochs", ENABLED),
        "min_steps": Key(integer(0), 0, "and for at least this many optimizer steps", ENABLED),
    },
    "early_stopping": {
        "enabled": Key(boolean, False, "stop when the monitored metric stops improving"),
        "monitor": Key(
            METRIC, "val_loss", "val_loss, val_acc, or val_<name> for any metric validation_step returns", ENABLED
        ),
        "mode": Key(MODE, "min", "min: lower is better; max: higher is better", ENABLED),
        "patience": Key(integer(1), 3, "validations without improvement before stopping", ENABLED),
        "min_delta": Key(number(0.0), 0.0, "the smallest change that counts as improvement", ENABLED),
        "stopping_threshold": Key(
            off_or_number, False, "stop as soon as the metric is better than this (e.g. 0.01); false: off", ENABLED
        ),
        "divergence_threshold": Key(
            off_or_number, False, "stop as soon as the metric is worse than this (e.g. 10.0); false: off", ENABLED
        ),
    },
}


def epoch_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """min_epochs fits within max_epochs."""
    trainer = values["trainer"]
    if trainer["max_epochs"] != -1 and trainer["min_epochs"] > trainer["max_epochs"]:
        return [("trainer.min_epochs", f"expected at most max_epochs ({trainer['max_epochs']})")]
    return []


def validation_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Early stopping watches a validation metric."""
    return needs_validation(values, "early_stopping.enabled", values["early_stopping"]["enabled"])


# When a stop that early stopping asked for ends training: once min_epochs and min_steps are done.
EARLY_STOP_DUE = "early_stop and epoch >= cfg.min_epochs and global_step >= cfg.min_steps"


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    early = values["early_stopping"]
    return {
        "early_stopping": early["enabled"],
        "stopping_threshold": early["enabled"] and early["stopping_threshold"] is not False,
        "divergence_threshold": early["enabled"] and early["divergence_threshold"] is not False,
        "es_monitor": repr(early["monitor"]),
        "es_monitor_name": early["monitor"],
        "es_mode": early["mode"],
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    minimum = f["es_mode"] == "min"
    return {
        "es_better": "<" if minimum else ">",
        "es_worse": ">" if minimum else "<",
        "early_stop_due": EARLY_STOP_DUE,
        "early_stop_note": ", or when early stopping may end it" if f["early_stopping"] else "",
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"early_stopping": f["early_stopping"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import math"] if f["early_stopping"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    if not f["early_stopping"]:
        return []
    at_least = "an integer >= 0"
    out = [
        Field("min_epochs", "trainer.min_epochs", "int", "{v} >= 0", at_least),
        Field("min_steps", "trainer.min_steps", "int", "{v} >= 0", at_least),
        Field("patience", "early_stopping.patience", "int", "{v} >= 1", "an integer >= 1"),
        Field("min_delta", "early_stopping.min_delta", "float", "0 <= {v} < math.inf", "a finite number >= 0"),
    ]
    for threshold in ("stopping_threshold", "divergence_threshold"):
        if f[threshold]:
            out.append(
                Field(threshold, f"early_stopping.{threshold}", "float", "math.isfinite({v})", "a finite number")
            )
    return out


def state(f: dict[str, Any]) -> list[Entry]:
    if not f["early_stopping"]:
        return []
    restore = 'best_score, bad_validations = state["best_score"], state["bad_validations"]\n'
    restore += 'early_stop = state.get("early_stop", "")'
    return [plain(restore, "best_score", "bad_validations", "early_stop")]
