"""The loop's features, one module each. A feature declares, each in one place (all but KEYS optional):

- `KEYS`: the spec keys it owns; `rules(values)` (or `..._rules`, where ltgen.rules runs a feature's rules at
  different points of its fixed order): its rules across keys, as (dotted key, message) pairs;
- `flags(values)`: the flags and values its templates test and paste, from the spec's values alone;
- `paste(f)`: code its fragments paste, from every feature's flags `f`;
- `units(f)`: the fragment files it turns on (templates/features/UNIT.py.jinja, listed in UNIT_ORDER);
- `imports(f)`: train.py's imports its code needs; `fields(f)`: its Config fields (ltgen.unit.Field), with
  their checks and fast-dev-run values; `state(f)`: its checkpoint state (ltgen.unit.Entry: saved and restored
  as one pair).

ltgen.context gathers them; adding a loop feature is a module here and its fragment file.
"""

from __future__ import annotations

from types import ModuleType

from ltgen.features import (
    accumulation,
    anomaly,
    checkpoint_kind,
    clipping,
    compile,
    core,
    deterministic,
    early_stopping,
    ema,
    export,
    gpu_memory,
    grad_norm,
    hooks,
    last_checkpoint,
    loggers,
    manual,
    nan_grads,
    nonfinite,
    optimizer,
    overfit,
    param_summary,
    precision,
    pretrained,
    profiler,
    progress,
    scheduler,
    slurm,
    strategy,
    sweep,
    task,
    test,
    top_k,
    tuning,
    validation,
)

# The features in the order their checkpoint state is saved and restored (the model first, then what steps it,
# then the counters and what watches them); the spec's key order is ltgen.schema's, the rules' ltgen.rules'.
FEATURES: list[ModuleType] = [
    strategy,
    optimizer,
    scheduler,
    precision,
    task,
    pretrained,
    ema,
    checkpoint_kind,
    core,
    early_stopping,
    top_k,
    last_checkpoint,
    accumulation,
    clipping,
    validation,
    test,
    nonfinite,
    compile,
    manual,
    loggers,
    progress,
    slurm,
    sweep,
    hooks,
    param_summary,
    grad_norm,
    anomaly,
    overfit,
    nan_grads,
    gpu_memory,
    deterministic,
    profiler,
    tuning,
    export,
]

# The units (templates/features/UNIT.py.jinja), in the order their code fills a slot that several fill: the order
# of the code in train.py. A fragment that must come earlier or later in one slot says so itself (`order`).
# Orders the code depends on (tests/test_combinations.py and the render oracle catch a break):
# - wrap: gan's models dict, then ddp's wrappers, then compile, then manual's {"model": model};
# - after_optimizers: manual's optimizers dict before precision's scalers, which are made per optimizer;
# - decide: validation's `validate` before early_stopping widens it and val_every_n_epoch narrows it, as Lightning;
# - after_read: throughput's speed and rate before loggers, progress and plain_log print them;
# - on_signal_stop: loggers close before slurm's requeue returns.
UNIT_ORDER: tuple[str, ...] = (
    "gan",
    "single",
    "distributed",
    "ddp",
    "fsdp",
    "compile",
    "whole_model",
    "overfit",
    "automatic",
    "manual",
    "accumulation",
    "precision",
    "anomaly",
    "deterministic",
    "clipping",
    "grad_norm",
    "nan_grads",
    "evaluation",
    "validation",
    "test",
    "outputs",
    "checkpointing",
    "ema",
    "optimizer",
    "scheduler",
    "early_stopping",
    "val_every_n_epoch",
    "top_k",
    "samples",
    "throughput",
    "gpu_memory",
    "loggers",
    "progress",
    "timer",
    "plain_log",
    "param_summary",
    "hooks",
    "profiler",
    "tuning",
    "nonfinite",
    "logging",
    "last_checkpoint",
    "slurm",
)
