"""Validation: how many batches, how often, and the sanity check before training."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Applies, Key, batch_limit, integer
from ltgen.unit import LIMIT, Field

VALIDATING = (Applies(("trainer.limit_val_batches",), lambda limit: limit != 0, "when validation runs"),)

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "limit_val_batches": Key(batch_limit(zero_ok=True), 1.0, "0: no validation"),
        "val_check_interval": Key(
            batch_limit(), 1.0, "validate every fraction of an epoch (float) or every N batches (int)", VALIDATING
        ),
        "check_val_every_n_epoch": Key(integer(1), 1, "validate in every Nth epoch only", VALIDATING),
        "num_sanity_val_steps": Key(
            integer(0, also=(-1,)),
            2,
            "validation batches run before training, to fail fast; -1: all",
            VALIDATING,
        ),
    }
}


def validates(values: dict[str, dict[str, Any]]) -> bool:
    """Whether the spec runs validation at all."""
    return values["trainer"]["limit_val_batches"] != 0


def needs_validation(values: dict[str, dict[str, Any]], key: str, needed: bool) -> list[tuple[str, str]]:
    """The problem of a `key` that is `needed` and reads validation metrics, when validation is off."""
    if needed and not validates(values):
        return [(key, "needs validation, but trainer.limit_val_batches = 0 turns it off")]
    return []


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trainer, validation = values["trainer"], validates(values)
    return {
        "validation": validation,
        "val_interval": validation and trainer["val_check_interval"] != 1.0,  # validate within epochs
        "val_every_n_epoch": validation and trainer["check_val_every_n_epoch"] != 1,
        "sanity": validation and trainer["num_sanity_val_steps"] != 0,
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"validation": f["validation"], "val_every_n_epoch": f["val_every_n_epoch"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from steps import validation_step"] if f["validation"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    out = []
    if f["validation"]:
        expected = "a fraction in (0, 1] or a count >= 1 (turn validation off in ltgen.toml)"
        out.append(Field("limit_val_batches", "trainer.limit_val_batches", "int | float", LIMIT, expected, "1"))
    if f["val_interval"]:
        expected = "a fraction of an epoch in (0, 1] or a count of batches >= 1"
        out.append(Field("val_check_interval", "trainer.val_check_interval", "int | float", LIMIT, expected, "1"))
    if f["val_every_n_epoch"]:
        source = "trainer.check_val_every_n_epoch"
        out.append(Field("check_val_every_n_epoch", source, "int", "{v} >= 1", "an integer >= 1", "1"))
    if f["sanity"]:
        expected = "an integer >= 0, or -1 for all"
        out.append(Field("num_sanity_val_steps", "trainer.num_sanity_val_steps", "int", "{v} >= -1", expected))
    return out
