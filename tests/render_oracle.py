"""The render oracle: a few hundred random valid specs, and a digest of every file each one renders to.

tests/render_oracle/specs.json holds the specs (dotted overrides of the default spec, drawn once with a fixed
seed); tests/render_oracle/digests.json holds, for each, {path: sha256 of the rendered file}. test_render_oracle.py
renders them all again and requires the same bytes: a refactor of the generator or the templates that is meant to
change nothing is proven to change nothing, across far more combinations than the goldens.

When a change to the emitted code is intended, rewrite the digests and read the golden diff that goes with it:

    python tests/render_oracle.py            # rewrite digests.json from the specs
    python tests/render_oracle.py --draw     # draw the specs afresh (only when the spec's keys change)
"""

from __future__ import annotations

import hashlib
import json
import random
import sys
from pathlib import Path
from typing import Any

from ltgen import render, spec

FOLDER = Path(__file__).resolve().parent / "render_oracle"
SPECS, DIGESTS = FOLDER / "specs.json", FOLDER / "digests.json"
COUNT, SEED = 300, 20261206

# The keys that change train.py and its companions, and values worth drawing for each (the default first).
CHOICES: dict[str, list[Any]] = {
    "data.dataset": ["synthetic", "mnist", "cifar10", "image_folder", "text", "csv", "custom"],
    "model.arch": ["mlp", "cnn", "resnet", "gpt", "custom", "gan"],
    "model.dropout": [0.1, 0.0],
    "data.num_workers": [0, 2],
    "data.augment": [False, True],
    "data.in_memory": [True, False],
    "data.task": ["classification", "regression"],
    "optim.optimizer": ["adamw", "adam", "sgd"],
    "optim.scheduler": ["cosine", "none", "step", "plateau"],
    "optim.scheduler_interval": ["step", "epoch"],
    "optim.warmup_steps": [0, 5],
    "trainer.precision": ["32", "16-mixed", "bf16-mixed"],
    "trainer.tf32": [True, False],
    "trainer.accumulate_grad_batches": [1, 3],
    "trainer.gradient_clip_val": [0.0, 1.0],
    "trainer.limit_val_batches": [1.0, 0],
    "trainer.limit_test_batches": [1.0, 0],
    "trainer.val_check_interval": [1.0, 0.5, 20],
    "trainer.check_val_every_n_epoch": [1, 2],
    "trainer.num_sanity_val_steps": [2, 0, -1],
    "trainer.nonfinite_loss": ["stop", "skip", "off"],
    "trainer.compile": [False, True],
    "trainer.manual_optimization": [False, True],
    "early_stopping.enabled": [False, True],
    "early_stopping.stopping_threshold": [False, 0.01],
    "early_stopping.divergence_threshold": [False, 10.0],
    "early_stopping.mode": ["min", "max"],
    "checkpoint.save_top_k": [1, 0, -1, 3],
    "checkpoint.save_last": [True, False],
    "checkpoint.every_n_steps": [0, 10],
    "checkpoint.every_n_minutes": [0.0, 5.0],
    "logging.tensorboard": [True, False],
    "logging.progress_bar": [True, False],
    "cluster.gpus": [1, 0, 2, 4],
    "cluster.nodes": [1, 2],
    "cluster.strategy": ["ddp", "fsdp"],
    "cluster.fsdp_cpu_offload": [False, True],
    "cluster.slurm.enabled": [False, True],
    "cluster.slurm.requeue_signal": ["USR2", "USR1"],
    "debug.param_summary": [True, False],
    "debug.log_grad_norm": [False, True],
    "debug.detect_anomaly": [False, True],
    "debug.overfit_batches": [0, 2],
    "debug.nan_grad_report": [False, True],
    "debug.profiler": [False, True],
    "trainer.ema_decay": [0.0, 0.999],
    "trainer.deterministic": [False, True],
    "logging.log_gpu_memory": [True, False],
    "tune.lr_finder": [False, True],
    "tune.batch_size_finder": [False, True],
    "export.enabled": [False, True],
}
GAN_MONITORS = ["val_loss_d", "val_d_real"]


def draw(rng: random.Random) -> dict[str, Any]:
    """A random set of overrides: each key keeps its default half the time."""
    overrides = {key: rng.choice(values[1:]) for key, values in CHOICES.items() if rng.random() < 0.3}
    if rng.random() < 0.3:
        overrides["hooks.emit"] = sorted(rng.sample(sorted(spec.HOOKS), rng.randint(1, 4)))
    if overrides.get("model.arch") == "gan" or rng.random() < 0.1:  # the GAN's monitors, so that some GANs are valid
        overrides["checkpoint.monitor"] = overrides["early_stopping.monitor"] = rng.choice(GAN_MONITORS)
    return overrides


def valid(overrides: dict[str, Any]) -> bool:
    try:
        spec.parse(spec.with_values(spec.default_text("oracle"), overrides))
    except spec.SpecError:
        return False
    return True


def draw_specs() -> list[dict[str, Any]]:
    """COUNT valid specs, the same ones on every machine; invalid draws are skipped, with their arch fixed once."""
    rng, specs = random.Random(SEED), []
    fits = {"text": "gpt", "csv": "mlp", "custom": "custom"}
    while len(specs) < COUNT:
        overrides = draw(rng)
        if not valid(overrides) and overrides.get("data.dataset") in fits:
            overrides["model.arch"] = fits[overrides["data.dataset"]]
        if not valid(overrides) and overrides.get("model.arch") == "gan":
            overrides.update({"trainer.manual_optimization": True, "optim.scheduler": "none", "optim.warmup_steps": 0})
        if valid(overrides):
            specs.append(overrides)
    return specs


def digests_of(overrides: dict[str, Any]) -> dict[str, str]:
    """{path: sha256} of every file the spec renders to (ltgen.toml aside: it is the input)."""
    tree = render.render(spec.parse(spec.with_values(spec.default_text("oracle"), overrides)))
    return {path: hashlib.sha256(text.encode()).hexdigest() for path, text in sorted(tree.items())}


def main(args: list[str]) -> None:
    if "--draw" in args or not SPECS.exists():
        FOLDER.mkdir(exist_ok=True)
        SPECS.write_text(json.dumps(draw_specs(), indent=1, sort_keys=True) + "\n")
    specs = json.loads(SPECS.read_text())
    digests = [digests_of(overrides) for overrides in specs]
    DIGESTS.write_text(json.dumps(digests, indent=1) + "\n")
    distinct = len({json.dumps(d["train.py"]) for d in digests})
    print(
        f"rewrote {DIGESTS.relative_to(Path.cwd()) if DIGESTS.is_relative_to(Path.cwd()) else DIGESTS}: "
        f"{len(specs)} specs, {distinct} distinct train.py"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
