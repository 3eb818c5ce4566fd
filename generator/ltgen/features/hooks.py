"""Hooks: stubs in steps.py that the loop calls at fixed points, for your own code."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, as_toml, did_you_mean
from ltgen.features.validation import validates

HOOKS = {
    "on_fit_start": "before the first training step",
    "on_fit_end": "after training, before the test pass",
    "on_train_epoch_start": "at the start of every training epoch",
    "on_train_epoch_end": "at the end of every training epoch",
    "on_train_batch_end": "after every optimizer step",
    "on_before_optimizer_step": "after backward (gradients unscaled), before clipping and the step",
    "on_validation_epoch_end": "after every validation, with its metrics",
    "on_test_epoch_end": "after the test pass, with its metrics",
    "on_save_checkpoint": "before a checkpoint is written; may add entries to it",
    "on_load_checkpoint": "after a checkpoint is loaded to resume",
}


def hook_list(value: Any) -> str | None:
    """A list of hook names, each once."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in HOOKS]
        if not unknown and len(set(value)) == len(value):
            return None
        if unknown:
            return (
                "hook names from: "
                + ", ".join(HOOKS)
                + f"|{as_toml(unknown[0])} is not one; {did_you_mean(unknown[0], HOOKS)}".rstrip("; ")
            )
        return "each hook listed once"
    return "a list of hook names: " + ", ".join(HOOKS)


KEYS: dict[str, dict[str, Key]] = {
    "hooks": {"emit": Key(hook_list, [], "hook stubs to emit in steps.py: " + ", ".join(HOOKS))}
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """A hook is emitted only where the loop calls it."""
    checkpoint, trainer = values["checkpoint"], values["trainer"]
    hook_needs = {
        "on_save_checkpoint": (
            checkpoint["save_last"] or checkpoint["save_top_k"] != 0,
            "checkpoints (save_last or save_top_k)",
        ),
        "on_load_checkpoint": (checkpoint["save_last"], "checkpoint.save_last = true (resuming)"),
        "on_validation_epoch_end": (validates(values), "validation (trainer.limit_val_batches != 0)"),
        "on_test_epoch_end": (trainer["limit_test_batches"] != 0, "a test pass (trainer.limit_test_batches != 0)"),
    }
    return [
        ("hooks.emit", f"{hook} is never called without {what}")
        for hook, (available, what) in hook_needs.items()
        if hook in values["hooks"]["emit"] and not available
    ]


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"hooks": list(values["hooks"]["emit"])}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"hooks": bool(f["hooks"])}


def imports(f: dict[str, Any]) -> list[str]:
    return [f"from steps import {hook}" for hook in f["hooks"]]
