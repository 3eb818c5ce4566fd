"""EMA weights: an exponential moving average of the weights, which validation, the test, top-k ranking,
predict.py and sample.py use while the raw weights train (Lightning's EMAWeightAveraging)."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Applies, Key, integer, number
from ltgen.unit import Entry, Field

EMA_ON = (Applies(("trainer.ema_decay",), lambda decay: decay > 0, "with EMA on: ema_decay > 0"),)

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "ema_decay": Key(
            number(0.0, 1.0, hi_open=True),
            0.0,
            "an EMA of the weights for validation, test and inference (e.g. 0.999); 0: off",
        ),
        "ema_every_n_steps": Key(integer(1), 1, "update the EMA every N optimizer steps", EMA_ON),
        "ema_start_step": Key(integer(0), 0, "until this optimizer step the EMA is a copy of the weights", EMA_ON),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"ema": values["trainer"]["ema_decay"] > 0}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    """The model that validation, the test and the samples use."""
    return {"eval_model": "ema_model" if f["ema"] else "raw_model" if f["wrapped"] else "model"}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"ema": f["ema"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import copy"] if f["ema"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    if not f["ema"]:
        return []
    return [
        Field("ema_decay", "trainer.ema_decay", "float", "0 <= {v} < 1", "a number from 0 up to (not including) 1"),
        Field("ema_every_n_steps", "trainer.ema_every_n_steps", "int", "{v} >= 1", "an integer >= 1"),
        Field("ema_start_step", "trainer.ema_start_step", "int", "{v} >= 0", "an integer >= 0"),
    ]


def state(f: dict[str, Any]) -> list[Entry]:
    if not f["ema"] or f["fsdp"]:  # FSDP's EMA shards go into its checkpoint folder, beside the model's
        return []
    # A run that turns EMA on when it resumes starts the average from the weights it resumes with.
    restore = 'ema_model.load_state_dict(state["ema"] if "ema" in state else state["model"])'
    return [Entry((("ema", "ema_model.state_dict()"),), restore)]
