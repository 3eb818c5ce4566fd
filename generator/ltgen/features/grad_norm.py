"""The gradient norm, logged at logging steps."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean, only_with

KEYS: dict[str, dict[str, Key]] = {
    "debug": {
        "log_grad_norm": Key(
            boolean,
            False,
            "log the gradient norm at logging steps",
            (only_with("logging.tensorboard", True, where="when tensorboard = true, where the norm is logged"),),
        )
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    logged = values["debug"]["log_grad_norm"] and values["logging"]["tensorboard"]
    # the gradient norm is needed each step: to log it, or to skip a step whose gradients are not finite
    return {"log_grad_norm": logged, "grad_norm": logged or values["trainer"]["nonfinite_loss"] == "skip"}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"grad_norm": f["grad_norm"]}
