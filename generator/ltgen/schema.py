"""The schema of the spec: its sections and keys, in the order `ltgen new` writes them.

The keys and their checks come from the features (ltgen.features); the layout below says where each one goes.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from ltgen.checks import Key
from ltgen.features import FEATURES

# Each section's keys, in the order of the spec `ltgen new` writes (and of every problem list).
LAYOUT: dict[str, tuple[str, ...]] = {
    "project": ("name",),
    "model": (
        "arch",
        "hidden_sizes",
        "channels",
        "dropout",
        "depth",
        "width",
        "n_layer",
        "n_head",
        "n_embd",
        "bias",
        "init_from",
        "timm_model",
        "pretrained",
        "pretrained_file",
        "freeze_backbone",
        "activation_checkpointing",
        "latent_dim",
        "generator_width",
        "discriminator_width",
    ),
    "data": (
        "dataset",
        "batch_size",
        "num_workers",
        "val_fraction",
        "val_size",
        "synthetic_samples",
        "image_size",
        "augment",
        "in_memory",
        "text_file",
        "tokenizer",
        "vocab_size",
        "block_size",
        "samples_per_epoch",
        "csv_file",
        "target",
        "task",
        "input_shape",
        "num_classes",
    ),
    "optim": (
        "optimizer",
        "lr",
        "weight_decay",
        "momentum",
        "betas",
        "backbone_lr_scale",
        "scheduler",
        "scheduler_interval",
        "warmup_steps",
        "min_lr",
        "step_size",
        "gamma",
        "plateau_patience",
        "monitor",
        "mode",
        "lr_g",
        "lr_d",
    ),
    "trainer": (
        "max_epochs",
        "max_steps",
        "min_epochs",
        "min_steps",
        "precision",
        "tf32",
        "accumulate_grad_batches",
        "gradient_clip_val",
        "limit_train_batches",
        "limit_val_batches",
        "limit_test_batches",
        "val_check_interval",
        "check_val_every_n_epoch",
        "num_sanity_val_steps",
        "seed",
        "nonfinite_loss",
        "compile",
        "manual_optimization",
        "ema_decay",
        "ema_every_n_steps",
        "ema_start_step",
        "deterministic",
    ),
    "early_stopping": (
        "enabled",
        "monitor",
        "mode",
        "patience",
        "min_delta",
        "stopping_threshold",
        "divergence_threshold",
    ),
    "checkpoint": ("monitor", "mode", "save_top_k", "save_last", "every_n_steps", "every_n_minutes"),
    "logging": (
        "tensorboard",
        "csv",
        "wandb",
        "wandb_project",
        "wandb_entity",
        "mlflow",
        "mlflow_tracking_uri",
        "log_every_n_steps",
        "progress_bar",
        "log_gpu_memory",
    ),
    "cluster": ("gpus", "nodes", "strategy", "fsdp_cpu_offload"),
    "cluster.slurm": (
        "enabled",
        "partition",
        "time",
        "cpus_per_task",
        "requeue_signal",
        "signal_seconds",
        "sbatch_options",
    ),
    "sweep": ("enabled", "name", "method", "trials", "parallel", "monitor", "mode", "seed", "prune", "space"),
    "hooks": ("emit",),
    "debug": ("param_summary", "log_grad_norm", "detect_anomaly", "overfit_batches", "nan_grad_report", "profiler"),
    "tune": ("lr_finder", "batch_size_finder"),
    "export": ("enabled",),
}


@dataclass(frozen=True)
class Section:
    """One [section] of the schema: its keys, in order."""

    keys: dict[str, Key]
    doc: str = ""


class SchemaError(Exception):
    """The features' keys and the layout disagree: a bug in ltgen, found at import."""


def assemble(features: list[ModuleType], layout: dict[str, tuple[str, ...]]) -> dict[str, Section]:
    """The schema: each feature's keys placed by the layout, which must name each of them exactly once."""
    declared: dict[str, tuple[Key, str]] = {}
    for feature in features:
        owner = feature.__name__.rpartition(".")[2]
        for section, keys in feature.KEYS.items():
            for name, key in keys.items():
                dotted = f"{section}.{name}"
                if dotted in declared:
                    raise SchemaError(f"{dotted} is declared by two features: {declared[dotted][1]} and {owner}")
                declared[dotted] = (key, owner)
    placed = [f"{section}.{name}" for section, names in layout.items() for name in names]
    twice = sorted({dotted for dotted in placed if placed.count(dotted) > 1})
    if twice:
        raise SchemaError(f"keys the layout places twice: {', '.join(twice)}")
    unplaced = [dotted for dotted in declared if dotted not in placed]
    if unplaced:
        raise SchemaError(f"keys the layout does not place: {', '.join(unplaced)}")
    undeclared = [dotted for dotted in placed if dotted not in declared]
    if undeclared:
        raise SchemaError(f"layout keys no feature declares: {', '.join(undeclared)}")
    unknown = [
        f"{dotted} (on {on})"
        for dotted, (key, _) in declared.items()
        for condition in key.applies
        for on in condition.on
        if on not in declared
    ]
    if unknown:
        raise SchemaError(f"keys whose applies names a key no feature declares: {', '.join(unknown)}")
    return {
        section: Section({name: declared[f"{section}.{name}"][0] for name in names})
        for section, names in layout.items()
    }


SCHEMA: dict[str, Section] = assemble(FEATURES, LAYOUT)
