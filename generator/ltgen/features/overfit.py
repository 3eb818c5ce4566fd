"""Overfitting a few batches: train and validate on the same N batches, to debug a model."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from ltgen.checks import Key, integer
from ltgen.unit import Field

KEYS: dict[str, dict[str, Key]] = {
    "debug": {"overfit_batches": Key(integer(0), 0, "train and validate on the same N batches; 0: off")}
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """overfit_batches chooses the training batches itself."""
    if values["debug"]["overfit_batches"] and values["trainer"]["limit_train_batches"] != 1.0:
        return [
            (
                "debug.overfit_batches",
                "overfit_batches sets the training batches itself: leave limit_train_batches at 1.0",
            )
        ]
    return []


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"overfit": values["debug"]["overfit_batches"] > 0}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    def batches(split: str) -> str:
        first = f"min(cfg.overfit_batches, len({split}_loader)) if cfg.overfit_batches else " if f["overfit"] else ""
        return first + f'flags.num_batches(cfg.limit_{split}_batches, len({split}_loader), "limit-{split}-batches")'

    return {
        "shuffle_train": "not cfg.overfit_batches" if f["overfit"] else "True",
        "n_train": batches("train"),
        "n_val": batches("val"),
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"overfit": f["overfit"]}


def fields(f: dict[str, Any]) -> list[Field]:
    if not f["overfit"]:
        return []
    batches = Field("overfit_batches", "debug.overfit_batches", "int", "{v} >= 0", "an integer >= 0")
    # listed with the other batch counts, not at the end among the debug keys
    return [replace(batches, fast_dev_run="min(1, cfg.overfit_batches)", position="trainer.num_sanity_val_steps")]
