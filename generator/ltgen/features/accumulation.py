"""Gradient accumulation: several batches per optimizer step."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, integer
from ltgen.unit import Field

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {"accumulate_grad_batches": Key(integer(1), 1, "batches per optimizer step")}
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"accumulate": values["trainer"]["accumulate_grad_batches"] > 1}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    around = []  # what training_step runs inside: the window's gradient sync, then autocast
    if f["accumulate"] and f["manual"]:
        around.append("step.batch(last_in_window=step_now)")
    elif f["accumulate"] and f["ddp"]:
        around.append("sync")
    if f["autocast_args"]:
        around.append(f"torch.autocast({f['autocast_args']})")
    scaled = "loss / cfg.accumulate_grad_batches" if f["accumulate"] else "loss"
    backward = f"({scaled})" if f["accumulate"] else scaled
    return {
        "forward_context": ", ".join(around),
        "backward": f"scaler.scale({scaled})" if f["grad_scaler"] else backward,
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"accumulation": f["accumulate"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import contextlib"] if f["accumulate"] and f["ddp"] and not f["manual"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    if not f["accumulate"]:
        return []
    source = "trainer.accumulate_grad_batches"
    return [Field("accumulate_grad_batches", source, "int", "{v} >= 1", "an integer >= 1", "1")]
