"""Turn a validated spec into the template context: plain flags and ready-to-paste values.

Templates only test flags and paste values, so every decision lives here. Values that
reach Python code are `repr` literals of validated numbers and strings: no spec value
can change the code around it.
"""

from __future__ import annotations

from typing import Any

from ltgen.spec import SCHEMA, Spec, distributed

LINE_LENGTH = 120  # black's, in the generator and in the emitted project's pyproject.toml

# Each dataset belongs to a task family: its data.py, steps.py and predict.py (or sample.py) come from
# templates/tasks/FAMILY/, its model.py from templates/tasks/models/ARCH.py.jinja.
TASKS = {
    "mnist": "image",
    "synthetic": "image",
    "cifar10": "image",
    "image_folder": "image",
    "text": "text",
    "csv": "tabular",
    "custom": "custom",
}
# (channels, side) of the images of each image dataset; image_folder's side is [data] image_size.
IMAGE_SHAPES = {"mnist": (1, 28), "synthetic": (1, 28), "cifar10": (3, 32), "image_folder": (3, None)}


def build(spec: Spec) -> dict[str, Any]:
    """The context for rendering `templates/` (its keys are the questions in copier.yml)."""
    model, data, optim, trainer = spec["model"], spec["data"], spec["optim"], spec["trainer"]
    early, ckpt, logging, cluster = spec["early_stopping"], spec["checkpoint"], spec["logging"], spec["cluster"]
    slurm, debug = spec["cluster.slurm"], spec["debug"]
    hooks = spec["hooks"]["emit"]

    validation = trainer["limit_val_batches"] != 0
    top_k = ckpt["save_top_k"] != 0
    multiprocess = distributed(spec.values)
    fsdp = multiprocess and cluster["strategy"] == "fsdp"
    compile_model = trainer["compile"]
    amp_dtype = {"32": "", "16-mixed": "torch.float16", "bf16-mixed": "torch.bfloat16"}[trainer["precision"]]
    flags = {
        "distributed": multiprocess,
        "ddp": multiprocess and not fsdp,
        # FSDP2 shards the model in place (no wrapper); its checkpoints are folders of shards, not .pt files.
        "fsdp": fsdp,
        "fsdp_cpu_offload": fsdp and cluster["fsdp_cpu_offload"],
        "ckpt_ext": "" if fsdp else ".pt",
        "slurm": slurm["enabled"],
        "compile": compile_model,
        "wrapped": (multiprocess and not fsdp) or compile_model,
        # training_step(models, optimizers, batch, step) runs backward and the steps through manual.py's helpers.
        "manual": trainer["manual_optimization"],
        # build_model returns an nn.ModuleDict of models, each with its own optimizer (a GAN's two).
        "several_models": model["arch"] == "gan",
        # a grid of generated images at each validation, from a latent batch fixed at the start, written to out_dir.
        "samples": model["arch"] == "gan" and validation and (ckpt["save_last"] or top_k or logging["tensorboard"]),
        "amp_dtype": amp_dtype,
        "fsdp_param_dtype": amp_dtype if fsdp else "",  # FSDP's mixed precision: parameters cast once per gather
        # torch.autocast's arguments: with no dtype it takes float16 on a GPU and bfloat16 on the CPU, which is
        # what 16-mixed means (float16 autocast on the CPU is slow and unscaled: Lightning switches to bf16 too).
        "autocast_args": {"32": "", "16-mixed": "device.type", "bf16-mixed": "device.type, dtype=torch.bfloat16"}[
            trainer["precision"]
        ],
        "tf32": trainer["tf32"],
        "grad_scaler": trainer["precision"] == "16-mixed",
        "accumulate": trainer["accumulate_grad_batches"] > 1,
        "clip": trainer["gradient_clip_val"] > 0,
        "grad_norm": (debug["log_grad_norm"] and logging["tensorboard"]) or trainer["nonfinite_loss"] == "skip",
        "log_grad_norm": debug["log_grad_norm"] and logging["tensorboard"],
        "nonfinite": trainer["nonfinite_loss"],
        "validation": validation,
        "val_interval": validation and trainer["val_check_interval"] != 1.0,
        "val_every_n_epoch": validation and trainer["check_val_every_n_epoch"] != 1,
        "sanity": validation and trainer["num_sanity_val_steps"] != 0,
        "test": trainer["limit_test_batches"] != 0,
        "early_stopping": early["enabled"],
        "stopping_threshold": early["enabled"] and early["stopping_threshold"] is not False,
        "divergence_threshold": early["enabled"] and early["divergence_threshold"] is not False,
        "top_k": top_k,
        "save_last": ckpt["save_last"],
        "checkpointing": ckpt["save_last"] or top_k,
        "tensorboard": logging["tensorboard"],
        "progress_bar": logging["progress_bar"],
        "param_summary": debug["param_summary"],
        "detect_anomaly": debug["detect_anomaly"],
        "overfit": debug["overfit_batches"] > 0,
        "workers": data["num_workers"] > 0,
        "hooks": list(hooks),
    }
    flags |= _task(data, model)
    fields = _config_fields(spec, flags)
    return {
        "project_name": spec["project"]["name"],
        "line_length": LINE_LENGTH,
        "dataset": data["dataset"],
        "synthetic_samples": repr(data["synthetic_samples"]),
        "val_fraction": repr(data["val_fraction"]),
        "val_size": repr(data["val_size"]),
        **flags,
        **_optimizer(optim),
        "step_imports": _step_imports(flags),
        **_monitors(early, ckpt, optim),
        **_cluster(cluster, slurm),
        "config_fields": fields,
        "config_checks": _config_checks(spec, fields),
    }


def _step_imports(flags: dict[str, Any]) -> list[str]:
    """What train.py imports from steps.py, sorted as ruff's isort wants it."""
    names = ["configure_optimizers", "training_step", *flags["hooks"]]
    names += ["validation_step"] if flags["validation"] or flags["sanity"] else []
    names += ["test_step"] if flags["test"] else []
    names += ["summarize"] if flags["summarize"] and (flags["validation"] or flags["sanity"] or flags["test"]) else []
    names += ["throughput"] if flags["throughput"] else []
    names += ["sample_images", "sample_latent", "save_grid"] if flags["samples"] else []
    return sorted(names)


def _task(data: dict[str, Any], model: dict[str, Any]) -> dict[str, Any]:
    """What the task's templates need: its family, model, and every [data] and [model] value as a literal."""
    task, arch = TASKS[data["dataset"]], model["arch"]
    channels, side = IMAGE_SHAPES.get(data["dataset"], (0, 0))
    return {
        "task": task,
        "arch": arch,
        "real_data": data["dataset"] != "synthetic",  # files to read from --data-dir
        "image_channels": channels,
        "image_side": side or data["image_size"],
        "augment": task == "image" and data["augment"],
        "pillow": data["dataset"] == "image_folder",
        "lazy_images": data["dataset"] == "image_folder" and not data["in_memory"],  # decoded per batch
        "regression": task == "tabular" and data["task"] == "regression",
        # steps.py's summarize() turns averaged batch metrics into ones that are not averages (perplexity, R^2).
        "summarize": task == "text" or (task == "tabular" and data["task"] == "regression"),
        # steps.py's throughput() adds tokens per second (and MFU on a GPU) to what is logged.
        "throughput": arch == "gpt",
        "dropout": model["dropout"] > 0,
        "dependencies": _dependencies(data, task),
        "model_description": _describe_model(model),
        "data_description": DATA_DESCRIPTIONS[data["dataset"]],
        "data_keys": {key: repr(value) for key, value in data.items()},
        "model_keys": {key: repr(value) for key, value in model.items()},
    }


DATA_DESCRIPTIONS = {
    "mnist": "MNIST",
    "synthetic": "MNIST-shaped synthetic images",
    "cifar10": "CIFAR-10",
    "image_folder": "your own images (an ImageNet-style folder of class folders)",
    "text": "a text file, character by character",
    "csv": "a CSV table",
    "custom": "your own data (data.py's stub)",
}


def _dependencies(data: dict[str, Any], task: str) -> list[str]:
    """The emitted pyproject.toml's dependencies: what its code imports."""
    extra = {"cifar10": ["numpy>=1.24"]}.get(data["dataset"], [])
    extra += ["pillow>=10"] if task == "image" else []  # image_folder reads images; predict.py reads any image file
    return ["torch>=2.9", "tensorboard>=2.14", "tqdm>=4.64", *extra]


def _describe_model(model: dict[str, Any]) -> str:
    dropout = f", dropout {model['dropout']}" if model["dropout"] > 0 else ""
    return {
        "mlp": f"an MLP with hidden layers of {', '.join(map(str, model['hidden_sizes'])) or 'no'} units, ReLU{dropout}",
        "cnn": f"a CNN of {len(model['channels'])} conv blocks ({', '.join(map(str, model['channels']))} channels){dropout}",
        "resnet": f"a ResNet-{model['depth']} (CIFAR stem, first stage {model['width']} channels wide){dropout}",
        "gpt": f"a GPT of {model['n_layer']} layers, {model['n_head']} heads, {model['n_embd']} wide{dropout}",
        "gan": f"a DCGAN: a generator of images from {model['latent_dim']}-dimensional noise, and a discriminator",
        "custom": "your own model (model.py's stub)",
    }[model["arch"]]


def _optimizer(optim: dict[str, Any]) -> dict[str, Any]:
    scheduler, warmup = optim["scheduler"], optim["warmup_steps"]
    # What the schedule counts: epochs or optimizer steps (plateau is stepped after each validation).
    unit = "epoch" if optim["scheduler_interval"] == "epoch" and scheduler != "plateau" else "step"
    after = {
        "cosine": f"then a cosine decay to 0 at total_{unit}s",
        "step": f"then x{optim['gamma']} every {optim['step_size']} {unit}s",
        "none": "then constant",
    }
    return {
        "optimizer": optim["optimizer"],
        "weight_decay": repr(optim["weight_decay"]),
        "momentum": repr(optim["momentum"]),
        "betas": repr(tuple(optim["betas"])),
        "scheduler": scheduler,
        "has_scheduler": scheduler != "none" or warmup > 0,
        "total_steps": scheduler == "cosine",
        "epoch_schedule": unit == "epoch" and (scheduler != "none" or warmup > 0),
        "schedule_unit": unit,
        "plateau": scheduler == "plateau",
        "warmup_lambda": warmup > 0,
        "warmup_steps": repr(warmup),
        "warmup_doc": f"Learning-rate factor: linear warm-up over {warmup} {unit}s, {after.get(scheduler, '')}.",
        "step_size": repr(optim["step_size"]),
        "gamma": repr(optim["gamma"]),
        "plateau_patience": repr(optim["plateau_patience"]),
    }


def _monitors(early: dict[str, Any], ckpt: dict[str, Any], optim: dict[str, Any]) -> dict[str, Any]:
    return {
        "es_monitor": repr(early["monitor"]),
        "es_monitor_name": early["monitor"],
        "es_mode": early["mode"],
        "ckpt_monitor": repr(ckpt["monitor"]),
        "ckpt_monitor_name": ckpt["monitor"],
        "ckpt_mode": ckpt["mode"],
        "plateau_monitor": repr(optim["monitor"]),
        "plateau_mode": repr(optim["mode"]),
    }


def _cluster(cluster: dict[str, Any], slurm: dict[str, Any]) -> dict[str, Any]:
    return {
        "gpus": cluster["gpus"],
        "gpus_per_node": max(1, cluster["gpus"]),  # processes per node: one per GPU, or one on the CPU
        "nodes": cluster["nodes"],
        "slurm_partition": slurm["partition"],
        "slurm_time": slurm["time"],
        "slurm_cpus_per_task": slurm["cpus_per_task"],
        "requeue_signal": slurm["requeue_signal"],
        "signal_seconds": slurm["signal_seconds"],
        "sbatch_options": list(slurm["sbatch_options"]),
    }


def _config_fields(spec: Spec, flags: dict[str, Any]) -> list[dict[str, Any]]:
    """The emitted Config dataclass, field by field: only the settings of features that are on.

    A field takes its value and comment from the spec key it names; a comment that would
    make the line too long goes on the line above it.
    """
    rows: list[tuple[str, str, str, bool]] = [  # (field, spec key or literal value, type, emitted?)
        ("dataset", f'"{spec["data"]["dataset"]}"', "str", True),  # one of spec.DATASETS: a plain word
        ("data_dir", '"data"', "str", flags["real_data"]),
        ("out_dir", '"outputs"', "str", flags["checkpointing"] or flags["tensorboard"]),
        ("batch_size", "data.batch_size", "int", True),
        ("num_workers", "data.num_workers", "int", flags["workers"]),
        ("lr", "optim.lr", "float", not flags["several_models"]),
        ("lr_g", "optim.lr_g", "float", flags["several_models"]),
        ("lr_d", "optim.lr_d", "float", flags["several_models"]),
        ("max_epochs", "trainer.max_epochs", "int", True),
        ("max_steps", "trainer.max_steps", "int", True),
        ("min_epochs", "trainer.min_epochs", "int", flags["early_stopping"]),
        ("min_steps", "trainer.min_steps", "int", flags["early_stopping"]),
        ("accumulate_grad_batches", "trainer.accumulate_grad_batches", "int", flags["accumulate"]),
        ("gradient_clip_val", "trainer.gradient_clip_val", "float", flags["clip"]),
        ("limit_train_batches", "trainer.limit_train_batches", "int | float", True),
        ("limit_val_batches", "trainer.limit_val_batches", "int | float", flags["validation"]),
        ("limit_test_batches", "trainer.limit_test_batches", "int | float", flags["test"]),
        ("val_check_interval", "trainer.val_check_interval", "int | float", flags["val_interval"]),
        ("check_val_every_n_epoch", "trainer.check_val_every_n_epoch", "int", flags["val_every_n_epoch"]),
        ("num_sanity_val_steps", "trainer.num_sanity_val_steps", "int", flags["sanity"]),
        ("overfit_batches", "debug.overfit_batches", "int", flags["overfit"]),
        ("seed", "trainer.seed", "int", True),
        ("patience", "early_stopping.patience", "int", flags["early_stopping"]),
        ("min_delta", "early_stopping.min_delta", "float", flags["early_stopping"]),
        ("stopping_threshold", "early_stopping.stopping_threshold", "float", flags["stopping_threshold"]),
        ("divergence_threshold", "early_stopping.divergence_threshold", "float", flags["divergence_threshold"]),
        ("save_top_k", "checkpoint.save_top_k", "int", flags["top_k"]),
        ("ckpt_every_n_steps", "checkpoint.every_n_steps", "int", flags["save_last"]),
        ("ckpt_every_n_minutes", "checkpoint.every_n_minutes", "float", flags["save_last"]),
        ("log_every_n_steps", "logging.log_every_n_steps", "int", True),
        ("progress_bar", "logging.progress_bar", "bool", flags["progress_bar"]),
    ]
    dataset = spec["data"]["dataset"]
    literal_comments = {
        "dataset": (
            f'"{dataset}", or "synthetic": generated data of its shapes (no files)'
            if dataset != "synthetic"
            else '"synthetic": generated data (no files)'
        ),
        "data_dir": "datasets are read (and downloaded) here",
        "out_dir": "logs and checkpoints go here",
    }
    fields = []
    for name, source, kind, emitted in rows:
        if not emitted:
            continue
        if source.startswith('"'):
            value, comment = source, literal_comments[name]
        else:
            section, key = source.rsplit(".", 1)
            value, comment = repr(spec[section][key]), SCHEMA[section].keys[key].doc
        if kind == "float" and not any(c in value for c in ".en"):
            value += ".0"  # an int in the spec (lr = 1) is still a float here
        line = f"    {name}: {kind} = {value}  # {comment}"
        fields.append(
            {"name": name, "type": kind, "value": value, "comment": comment, "comment_above": len(line) > LINE_LENGTH}
        )
    return fields


# What each Config field accepts, as a condition on {v} and the words for it. train.py checks every
# field (flags included) before any work, so a typo fails in a second with one line, not after an epoch.
_LIMIT = "is_limit({v})"
_FIELD_CHECKS = {
    "batch_size": ("{v} >= 1", "an integer >= 1"),
    "num_workers": ("{v} >= 0", "an integer >= 0"),
    "lr": ("0 < {v} < math.inf", "a finite number > 0"),
    "lr_g": ("0 < {v} < math.inf", "a finite number > 0"),
    "lr_d": ("0 < {v} < math.inf", "a finite number > 0"),
    "max_epochs": ("{v} >= 1 or {v} == -1", "an integer >= 1, or -1 for no limit"),
    "max_steps": ("{v} >= 1 or {v} == -1", "an integer >= 1, or -1 for no limit"),
    "min_epochs": ("{v} >= 0", "an integer >= 0"),
    "min_steps": ("{v} >= 0", "an integer >= 0"),
    "accumulate_grad_batches": ("{v} >= 1", "an integer >= 1"),
    "gradient_clip_val": ("0 < {v} < math.inf", "a finite number > 0 (turn clipping off in ltgen.toml)"),
    "limit_train_batches": (_LIMIT, "a fraction in (0, 1] or a count >= 1"),
    "limit_val_batches": (_LIMIT, "a fraction in (0, 1] or a count >= 1 (turn validation off in ltgen.toml)"),
    "limit_test_batches": (_LIMIT, "a fraction in (0, 1] or a count >= 1 (turn the test off in ltgen.toml)"),
    "val_check_interval": (_LIMIT, "a fraction of an epoch in (0, 1] or a count of batches >= 1"),
    "check_val_every_n_epoch": ("{v} >= 1", "an integer >= 1"),
    "num_sanity_val_steps": ("{v} >= -1", "an integer >= 0, or -1 for all"),
    "overfit_batches": ("{v} >= 0", "an integer >= 0"),
    "seed": ("0 <= {v} < 2**32", "an integer from 0 to 2**32 - 1"),
    "patience": ("{v} >= 1", "an integer >= 1"),
    "min_delta": ("0 <= {v} < math.inf", "a finite number >= 0"),
    "stopping_threshold": ("math.isfinite({v})", "a finite number"),
    "divergence_threshold": ("math.isfinite({v})", "a finite number"),
    "save_top_k": ("{v} >= -1", "an integer >= 0, or -1 for all"),
    "ckpt_every_n_steps": ("{v} >= 0", "an integer >= 0"),
    "ckpt_every_n_minutes": ("0 <= {v} < math.inf", "a finite number >= 0"),
    "log_every_n_steps": ("{v} >= 1", "an integer >= 1"),
}


def _config_checks(spec: Spec, fields: list[dict[str, Any]]) -> list[dict[str, str]]:
    """For flags.py: the check of every emitted Config field that has one, as code on `cfg`."""
    datasets = tuple(dict.fromkeys((spec["data"]["dataset"], "synthetic")))
    checks = [{"name": "dataset", "condition": f"cfg.dataset in {datasets!r}", "expected": " or ".join(datasets)}]
    for field in fields:
        if field["name"] in _FIELD_CHECKS:
            condition, expected = _FIELD_CHECKS[field["name"]]
            checks.append(
                {"name": field["name"], "condition": condition.format(v=f"cfg.{field['name']}"), "expected": expected}
            )
    return checks
