"""The best k checkpoints, ranked by a validation metric."""

from __future__ import annotations

from typing import Any

from ltgen.checks import METRIC, MODE, Applies, Key, integer
from ltgen.features.validation import needs_validation
from ltgen.unit import Entry, Field, plain

RANKING = (Applies(("checkpoint.save_top_k",), lambda k: k != 0, "when save_top_k != 0 ranks checkpoints"),)
KEYS: dict[str, dict[str, Key]] = {
    "checkpoint": {
        "monitor": Key(METRIC, "val_loss", "the metric that ranks checkpoints", RANKING),
        "mode": Key(MODE, "min", "min: lower is better; max: higher is better", RANKING),
        "save_top_k": Key(integer(0, also=(-1,)), 1, "keep the k best by monitor; 0: none; -1: all"),
    }
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Ranking checkpoints reads a validation metric."""
    return needs_validation(values, "checkpoint.save_top_k", values["checkpoint"]["save_top_k"] != 0)


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checkpoint = values["checkpoint"]
    return {
        "top_k": checkpoint["save_top_k"] != 0,
        "ckpt_monitor": repr(checkpoint["monitor"]),
        "ckpt_monitor_name": checkpoint["monitor"],
        "ckpt_mode": checkpoint["mode"],
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    return {"test_note": ", with the best checkpoint's weights" if f["top_k"] else ""}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"top_k": f["top_k"]}


def fields(f: dict[str, Any]) -> list[Field]:
    k = Field("save_top_k", "checkpoint.save_top_k", "int", "{v} >= -1", "an integer >= 0, or -1 for all")
    return [k] if f["top_k"] else []


def state(f: dict[str, Any]) -> list[Entry]:
    return [plain('top_k = [tuple(entry) for entry in state["top_k"]]', "top_k")] if f["top_k"] else []
