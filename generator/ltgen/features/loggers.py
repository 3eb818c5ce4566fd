"""The loggers ([logging]): TensorBoard, metrics.csv, Weights & Biases and MLflow, each writing into the run folder
(loggers.py in the project), behind one `logger` the loop calls."""

from __future__ import annotations

import re
from typing import Any

from ltgen.checks import Key, boolean, only_with, text

WANDB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,128}")
TRACKING_URI = re.compile(r"[^\s\"'\\]{1,1024}")
WANDB = (only_with("logging.wandb", True, where="when wandb = true"),)
MLFLOW = (only_with("logging.mlflow", True, where="when mlflow = true"),)

KEYS: dict[str, dict[str, Key]] = {
    "logging": {
        "tensorboard": Key(boolean, True, "event files in the run folder (tensorboard --logdir outputs)"),
        "csv": Key(boolean, True, "metrics.csv in the run folder: step, epoch and a column per metric"),
        "wandb": Key(boolean, False, "Weights & Biases (WANDB_MODE=offline works without an account)"),
        "wandb_project": Key(
            text(WANDB_NAME, "a W&B project name (letters, digits, '_', '.', '-')", empty_ok=True),
            "",
            "empty: the project's name",
            WANDB,
        ),
        "wandb_entity": Key(
            text(WANDB_NAME, "a W&B user or team name (letters, digits, '_', '.', '-')", empty_ok=True),
            "",
            "the W&B user or team; empty: your default",
            WANDB,
        ),
        "mlflow": Key(boolean, False, "MLflow: one run per run folder, in the experiment named after the project"),
        "mlflow_tracking_uri": Key(
            text(TRACKING_URI, 'an MLflow tracking URI such as "http://localhost:5000" (no spaces)', empty_ok=True),
            "",
            "empty: a SQLite file mlflow.db in --out-dir",
            MLFLOW,
        ),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    logging = values["logging"]
    on = [name for name in ("tensorboard", "csv", "wandb", "mlflow") if logging[name]]
    return {
        **{name: logging[name] for name in ("tensorboard", "csv", "wandb", "mlflow")},
        "loggers": bool(on),  # loggers.py, and the `logger` the loop logs to
        "logger_names": _and([NAMES[name] for name in on]),
        "wandb_project": logging["wandb_project"] or values["project"]["name"],
        "wandb_entity": logging["wandb_entity"],
        "mlflow_tracking_uri": logging["mlflow_tracking_uri"],
    }


NAMES = {"tensorboard": "TensorBoard", "csv": "metrics.csv", "wandb": "Weights & Biases", "mlflow": "MLflow"}


def _and(words: list[str]) -> str:
    return ", ".join(words[:-1]) + " and " + words[-1] if len(words) > 1 else "".join(words)


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"loggers": f["loggers"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import loggers"] if f["loggers"] else []
