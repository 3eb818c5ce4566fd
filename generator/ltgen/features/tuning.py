"""Tools run before training: Lightning's learning-rate finder (--find-lr) and a batch-size finder
(--find-batch-size), in the emitted tune.py; train.py runs one on a copy of the model and ends."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean

KEYS: dict[str, dict[str, Key]] = {
    "tune": {
        "lr_finder": Key(boolean, False, "emit --find-lr: Lightning's learning-rate finder, on a copy of the model"),
        "batch_size_finder": Key(
            boolean, False, "emit --find-batch-size (CUDA): the largest batch that trains without running out of memory"
        ),
    }
}
FINDERS = {"lr_finder": "--find-lr", "batch_size_finder": "--find-batch-size"}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The finders run training_step(model, batch) and then the loop's own backward and optimizer step."""
    out = []
    for key, flag in FINDERS.items():
        if not values["tune"][key]:
            continue
        if values["trainer"]["manual_optimization"]:
            why = "its training_step steps the optimizers itself" + (
                " (a GAN's two)" if values["model"]["arch"] == "gan" else ""
            )
            out.append(
                (f"tune.{key}", f"expected false with manual_optimization: {flag} runs the loop's step, and {why}")
            )
    return out


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"lr_finder": values["tune"]["lr_finder"], "batch_size_finder": values["tune"]["batch_size_finder"]}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    return {
        "finder_flags": [flag for key, flag in FINDERS.items() if f[key]],
        # where lr_find.csv and lr_find.png go: --out-dir, or the working folder of a project that writes no run
        "tune_dir": "Path(cfg.out_dir)" if f["run_folders"] else 'Path(".")',
        # the training loader's arguments, at the batch size being tried
        "tune_loader_args": f["loader_args"].replace("cfg.batch_size", "size"),
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"tuning": f["lr_finder"] or f["batch_size_finder"]}


def imports(f: dict[str, Any]) -> list[str]:
    if not (f["lr_finder"] or f["batch_size_finder"]):
        return []
    return ["import tune", *(["import math", "from pathlib import Path"] if f["lr_finder"] else [])]


def dependencies(values: dict[str, dict[str, Any]]) -> list[str]:
    """What the emitted code imports for these features: the finder's chart."""
    return ["matplotlib>=3.7"] if values["tune"]["lr_finder"] else []
