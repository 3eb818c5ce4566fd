"""The gradient norm, logged at logging steps."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Applies, Key, boolean

LOGGERS = tuple(f"logging.{name}" for name in ("tensorboard", "csv", "wandb", "mlflow"))
# Where a key about what is logged has an effect (this one's, and [logging] log_gpu_memory's).
LOGGED = Applies(LOGGERS, lambda *on: any(on), "where a logger is on: tensorboard, csv, wandb or mlflow")

KEYS: dict[str, dict[str, Key]] = {
    "debug": {"log_grad_norm": Key(boolean, False, "log the gradient norm at logging steps", (LOGGED,))}
}


def any_logger(values: dict[str, dict[str, Any]]) -> bool:
    return any(values["logging"][key.split(".")[1]] for key in LOGGERS)


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    logged = values["debug"]["log_grad_norm"] and any_logger(values)
    # the gradient norm is needed each step: to log it, or to skip a step whose gradients are not finite
    return {"log_grad_norm": logged, "grad_norm": logged or values["trainer"]["nonfinite_loss"] == "skip"}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"grad_norm": f["grad_norm"]}
