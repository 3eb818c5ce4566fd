"""The loop every project has: its name, the batches it loads, how long it trains, its seed, how often it logs."""

from __future__ import annotations

from typing import Any

from ltgen.checks import NAME_PATTERN, Key, batch_limit, integer, text
from ltgen.unit import LIMIT, Entry, Field, plain

KEYS: dict[str, dict[str, Key]] = {
    "project": {
        "name": Key(
            text(NAME_PATTERN, "a name of letters, digits, '_' and '-' starting with a letter (at most 64)"),
            "project",
            "the project's name, and its folder's",
        )
    },
    "data": {
        "batch_size": Key(integer(1), 64, "per process"),
        "num_workers": Key(integer(0, 256), 0, "data loading processes; the data sits in memory, so 0 is fastest"),
    },
    "trainer": {
        "max_epochs": Key(integer(1, also=(-1,)), 10, "-1: no limit (then set max_steps)"),
        "max_steps": Key(integer(1, also=(-1,)), -1, "optimizer steps; -1: no limit"),
        "limit_train_batches": Key(batch_limit(), 1.0, "a float is a fraction of the batches, an int a count"),
        "seed": Key(integer(0, 2**32 - 1), 42, "seeds the weights, the data split and order, and random layers"),
    },
    "logging": {"log_every_n_steps": Key(integer(1), 50, "read the loss (a host sync) every N steps")},
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Training must end."""
    trainer = values["trainer"]
    if trainer["max_epochs"] == -1 and trainer["max_steps"] == -1:
        return [("trainer.max_epochs", "training would never end: set max_epochs or max_steps")]
    return []


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checkpoint = values["checkpoint"]
    checkpointing = checkpoint["save_last"] or checkpoint["save_top_k"] != 0
    logs = any(values["logging"][name] for name in ("tensorboard", "csv", "wandb", "mlflow"))
    return {
        "workers": values["data"]["num_workers"] > 0,
        "checkpointing": checkpointing,  # last.pt or the top k
        "run_folders": checkpointing or logs,  # a run writes: runs.py gives it a folder of its own
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    note = ": what a checkpoint must hold to continue as if it had never stopped" if f["checkpointing"] else ""
    return {
        "split_names": ("val_set" if f["validation"] else "_") + ", " + ("test_set" if f["test"] else "_"),
        "loader_args": "cfg.batch_size, cfg.seed, device" + (", cfg.num_workers" if f["workers"] else ""),
        "state_note": note,
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {
        "evaluation": f["validation"] or f["test"],  # evaluate(), shared by validation and the test pass
        "outputs": f["run_folders"],
        "checkpointing": f["checkpointing"],  # the checkpoint folder and save_checkpoint
        "logging": True,
    }


def imports(f: dict[str, Any]) -> list[str]:
    lines = ["import argparse", "import dataclasses", "import random", "import torch", "import flags"]
    lines += ["from data import make_datasets, make_loader", "from model import build_model"]
    lines += ["from steps import configure_optimizers, training_step"]
    lines += ["import itertools"] if f["validation"] or f["test"] else []
    lines += ["from pathlib import Path"] if f["run_folders"] else []
    lines += ["import checkpoint"] if f["checkpointing"] else []
    lines += ["import runs"] if f["run_folders"] else []
    return lines


def fields(f: dict[str, Any]) -> list[Field]:
    out = []
    if f["run_folders"]:
        where = "a folder, or a path to make one at (no file there or on the way)"
        comment = "each run writes in a folder of its own here: --run-name, else version_N"
        out.append(
            Field("out_dir", '"outputs"', "str", "is_folder_path({v})", where, comment=comment, position="data.dataset")
        )
    out.append(Field("batch_size", "data.batch_size", "int", "{v} >= 1", "an integer >= 1"))
    if f["workers"]:
        # The loader keeps its workers between epochs, which needs at least one; the spec's bound keeps a typo from
        # starting millions of processes.
        workers = "an integer from 1 to 256 (for none, set [data] num_workers = 0 and run ltgen regen)"
        out.append(Field("num_workers", "data.num_workers", "int", "1 <= {v} <= 256", workers))
    limit = "an integer >= 1, or -1 for no limit"
    out.append(Field("max_epochs", "trainer.max_epochs", "int", "{v} >= 1 or {v} == -1", limit, "1"))
    out.append(Field("max_steps", "trainer.max_steps", "int", "{v} >= 1 or {v} == -1", limit, "1"))
    batches = "a fraction in (0, 1] or a count >= 1"
    out.append(Field("limit_train_batches", "trainer.limit_train_batches", "int | float", LIMIT, batches, "1"))
    out.append(Field("seed", "trainer.seed", "int", "0 <= {v} < 2**32", "an integer from 0 to 2**32 - 1"))
    out.append(Field("log_every_n_steps", "logging.log_every_n_steps", "int", "{v} >= 1", "an integer >= 1"))
    return out


def state(f: dict[str, Any]) -> list[Entry]:
    counters = ["epoch", "global_step"] + (["batch_in_epoch"] if f["save_last"] else [])
    restore = ", ".join(counters) + " = " + ", ".join(f'state["{counter}"]' for counter in counters)
    return [plain(restore, *counters)]
