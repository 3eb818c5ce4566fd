"""The task: the dataset and the model that trains on it (MLP, CNN, ResNet, GPT, GAN, or your own)."""

from __future__ import annotations

import math
from typing import Any

from ltgen.checks import (
    Applies,
    Key,
    boolean,
    choice,
    choice_int,
    column_name,
    file_name,
    int_list,
    integer,
    number,
    only_with,
)
from ltgen.features import export, pretrained, tuning
from ltgen.features.strategy import distributed
from ltgen.features.validation import validates
from ltgen.unit import Entry, Field, plain

DATASETS = ("mnist", "cifar10", "image_folder", "text", "csv", "custom", "synthetic")
ARCHS = ("mlp", "cnn", "resnet", "timm", "gpt", "custom", "gan")
IMAGE_ARCHS = ("mlp", "cnn", "resnet", "timm")
IMAGE_DATASETS = ("mnist", "synthetic", "cifar10", "image_folder")
# The models each dataset can train: the model's input and output must fit the data's.
VALID_ARCHS = {
    "mnist": (*IMAGE_ARCHS, "gan"),
    "synthetic": (*IMAGE_ARCHS, "gan"),
    "cifar10": (*IMAGE_ARCHS, "gan"),
    "image_folder": IMAGE_ARCHS,
    "text": ("gpt",),
    "csv": ("mlp",),
    "custom": ("custom", "mlp"),
}
# What `ltgen new --dataset D` sets besides [data] dataset: the model that fits it best, and its usual settings.
DATASET_SEEDS: dict[str, dict[str, Any]] = {
    "cifar10": {"model.arch": "resnet", "data.augment": True},
    "image_folder": {"model.arch": "resnet", "data.augment": True},
    # nanoGPT's optimizer: beta2 0.99 (small models), decay 0.1, gradients clipped at 1, 100 warm-up steps, and a
    # cosine that ends at lr / 10.
    "text": {
        "model.arch": "gpt",
        "optim.betas": [0.9, 0.99],
        "optim.weight_decay": 0.1,
        "optim.min_lr": 1e-4,
        "optim.warmup_steps": 100,
        "trainer.gradient_clip_val": 1.0,
    },
    "csv": {"model.arch": "mlp"},
    "custom": {"model.arch": "custom"},
}
# What `ltgen new --model M` sets besides [model] arch (under what the command line says).
MODEL_SEEDS: dict[str, dict[str, Any]] = {
    # A GAN steps two optimizers by hand, at constant learning rates; it has no loss to rank checkpoints by.
    "gan": {
        "trainer.manual_optimization": True,
        "optim.scheduler": "none",
        "checkpoint.save_top_k": 0,
        "optim.betas": [0.5, 0.999],  # DCGAN's: a short memory of the gradients' mean keeps the two players stable
    },
}
# What `ltgen new --dataset D --model M` sets for that pair besides both: a timm backbone sees image files at the
# size it was pretrained at (ImageNet's 224), not resized up from image_size's default 64.
PAIR_SEEDS: dict[tuple[str, str], dict[str, Any]] = {("image_folder", "timm"): {"data.image_size": 224}}
GAN_METRICS = ("val_loss_d", "val_loss_g", "val_d_real", "val_d_fake")  # what the GAN's validation_step returns
RESNET_STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # basic blocks per stage
# Samples in each dataset: (training + validation, test); None where only the files know.
DATASET_SIZES = {
    "mnist": lambda data: (60000, 10000),
    "cifar10": lambda data: (50000, 10000),
    "synthetic": lambda data: (data["synthetic_samples"], data["synthetic_samples"] // 6),
}


def _arch(arch: str) -> tuple[Applies, ...]:
    """A [model] key that only this arch's model.py reads."""
    return (only_with("model.arch", arch, where=f'to arch "{arch}"'),)


def _dataset(dataset: str) -> tuple[Applies, ...]:
    """A [data] key that only this dataset's data.py reads."""
    return (only_with("data.dataset", dataset, where=f'to dataset "{dataset}"'),)


# Keys the GAN's model and optimizers do not read (it has two Adams, of optimizer.py's lr_g, lr_d and betas).
NOT_GAN = only_with("model.arch", *(a for a in ARCHS if a != "gan"), where='to every arch but "gan"')


def _not_text(why: str) -> Applies:
    """A [data] key that every dataset's data.py reads but the text's; `why` says why not."""
    return only_with("data.dataset", *(d for d in DATASETS if d != "text"), where=f'to every dataset but "text", {why}')


SPLIT = _not_text("whose split is fixed: 90% training, 5% validation, 5% test")

KEYS: dict[str, dict[str, Key]] = {
    "model": {
        "arch": Key(
            choice(*ARCHS),
            "mlp",
            '"mlp" | "cnn" | "resnet" | "timm" | "gan" (images) | "gpt" (text) | "custom" (your own, with dataset "custom")',
        ),
        "hidden_sizes": Key(int_list(1, 0, 8, hi=65536), [128], "mlp: widths of the hidden layers", _arch("mlp")),
        "channels": Key(
            int_list(1, 1, 4, hi=4096),
            [32, 64],
            "cnn: channels of the conv blocks (each halves the image)",
            _arch("cnn"),
        ),
        "dropout": Key(number(0.0, 1.0, hi_open=True), 0.1, "dropout probability; 0 for none", (NOT_GAN,)),
        "depth": Key(
            choice_int(*RESNET_STAGES), 18, "resnet: 10, 18 or 34 layers (basic blocks, CIFAR stem)", _arch("resnet")
        ),
        "width": Key(
            integer(1, 1024), 64, "resnet: channels of the first stage, doubled at each of the next 3", _arch("resnet")
        ),
        "n_layer": Key(integer(1, 128), 6, "gpt: transformer blocks", _arch("gpt")),
        "n_head": Key(integer(1, 128), 6, "gpt: attention heads (n_embd must be a multiple of n_head)", _arch("gpt")),
        "n_embd": Key(integer(1, 16384), 384, "gpt: embedding width", _arch("gpt")),
        "bias": Key(boolean, False, "gpt: biases in the linear layers and LayerNorms", _arch("gpt")),
        "latent_dim": Key(
            integer(1, 4096), 100, "gan: size of the noise vector the generator starts from", _arch("gan")
        ),
        "generator_width": Key(
            integer(1, 1024), 64, "gan: channels of the generator's last hidden layer", _arch("gan")
        ),
        "discriminator_width": Key(
            integer(1, 1024), 64, "gan: channels of the discriminator's first layer", _arch("gan")
        ),
    },
    "data": {
        "dataset": Key(
            choice(*DATASETS),
            "mnist",
            '"mnist" | "cifar10" | "image_folder" | "text" | "csv" | "custom" | "synthetic"',
        ),
        "val_fraction": Key(
            number(0.0, 1.0, hi_open=True),
            0.1,
            "share of the training set held out for validation",
            (SPLIT, only_with("data.val_size", 0, where="when val_size = 0")),
        ),
        "val_size": Key(integer(0), 0, "a fixed number of validation samples instead (0: use val_fraction)", (SPLIT,)),
        "synthetic_samples": Key(
            integer(10, 10**7),
            12000,
            "synthetic: training + validation samples",
            (_not_text("whose --dataset synthetic is a generated text"),),
        ),
        "image_size": Key(
            integer(8, 4096),
            64,
            "image_folder: images are resized to image_size x image_size",
            _dataset("image_folder"),
        ),
        "augment": Key(
            boolean,
            False,
            "images: random crop (4-pixel padding) and horizontal flip, on the device",
            (only_with("data.dataset", *IMAGE_DATASETS, where="to image datasets"),),
        ),
        "in_memory": Key(
            boolean,
            True,
            "image_folder: decode every image once, hold them as uint8 in memory",
            _dataset("image_folder"),
        ),
        "text_file": Key(
            file_name,
            "input.txt",
            "text: a UTF-8 file, or a folder of .txt, .md and .jsonl files (each may be .gz), in --data-dir",
            _dataset("text"),
        ),
        "block_size": Key(integer(1, 65536), 256, "text: tokens of context", _dataset("text")),
        "samples_per_epoch": Key(integer(1), 32000, "text: random windows that make an epoch", _dataset("text")),
        "csv_file": Key(file_name, "data.csv", "csv: a file with a header row, in --data-dir", _dataset("csv")),
        "target": Key(
            column_name,
            "target",
            "csv: the column to predict; the other columns are the features",
            _dataset("csv"),
        ),
        "task": Key(
            choice("classification", "regression"),
            "classification",
            'csv: "classification" | "regression"',
            _dataset("csv"),
        ),
        "input_shape": Key(
            int_list(1, 1, 4, hi=65536), [3, 32, 32], "custom: the shape of one input", _dataset("custom")
        ),
        "num_classes": Key(integer(1, 10**6), 10, "custom: classes of the target", _dataset("custom")),
    },
}


def fit_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The model must fit the dataset, and its settings must fit each other."""
    data, model = values["data"], values["model"]
    valid = VALID_ARCHS[data["dataset"]]
    if model["arch"] not in valid:
        options = " or ".join(f'"{arch}"' for arch in valid)
        return [("model.arch", f'"{model["arch"]}" does not fit data.dataset = "{data["dataset"]}": choose {options}')]
    out = []
    if model["arch"] == "gpt" and model["n_embd"] % model["n_head"]:
        out.append(("model.n_embd", f"expected a multiple of n_head ({model['n_head']}), got {model['n_embd']}"))
    if (
        model["arch"] == "cnn"
        and data["dataset"] == "image_folder"
        and data["image_size"] >> len(model["channels"]) == 0
    ):
        needed = 2 ** len(model["channels"])
        out.append(
            (
                "data.image_size",
                f"expected at least {needed}: each of the {len(model['channels'])} conv blocks halves it",
            )
        )
    return out


def batch_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Limits that select no batch at all, and a validation interval longer than an epoch, as train.py would find
    them at start-up for this spec's dataset and number of processes."""
    data, trainer, cluster = values["data"], values["trainer"], values["cluster"]
    if values["debug"]["overfit_batches"] or data["dataset"] not in DATASET_SIZES:
        return []
    total, test = DATASET_SIZES[data["dataset"]](data)
    held_out = data["val_size"] or int(total * data["val_fraction"])
    if held_out >= total:
        return [("data.val_size", f"expected fewer than the {total} samples of the {data['dataset']} training set")]
    processes = max(1, cluster["gpus"]) * cluster["nodes"] if distributed(values) else 1
    per_process = {
        "train": math.ceil(math.ceil((total - held_out) / processes) / data["batch_size"]),
        "val": math.ceil(math.ceil(held_out / processes) / data["batch_size"]),
        "test": math.ceil(math.ceil(test / processes) / data["batch_size"]),
    }
    out = []
    if held_out == 0 and trainer["limit_val_batches"] != 0:
        out.append(
            ("data.val_fraction", "holds out no validation sample: raise it, or set trainer.limit_val_batches = 0")
        )
    for split, batches in per_process.items():
        limit = trainer[f"limit_{split}_batches"]
        if batches and isinstance(limit, float) and limit > 0 and int(limit * batches) == 0:
            smallest = math.ceil(1e4 / batches) / 1e4
            out.append(
                (
                    f"trainer.limit_{split}_batches",
                    f"{limit} of the {batches} {split} batches per process is none: use at least {smallest}",
                )
            )
    interval = trainer["val_check_interval"]
    if isinstance(interval, int) and interval > per_process["train"]:
        out.append(
            (
                "trainer.val_check_interval",
                f"expected at most the {per_process['train']} training batches of an epoch (per process)",
            )
        )
    return out


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
TOKENS = {"char": ", character by character", "bpe": ", in byte-level BPE tokens", "gpt2": ", in GPT-2's tokens"}
# (channels, side) of the images of each image dataset; image_folder's side is [data] image_size.
IMAGE_SHAPES = {"mnist": (1, 28), "synthetic": (1, 28), "cifar10": (3, 32), "image_folder": (3, None)}
DATA_DESCRIPTIONS = {
    "mnist": "MNIST",
    "synthetic": "MNIST-shaped synthetic images",
    "cifar10": "CIFAR-10",
    "image_folder": "your own images (an ImageNet-style folder of class folders)",
    "text": "a text corpus",  # and its tokens: TOKENS
    "csv": "a CSV table",
    "custom": "your own data (data.py's stub)",
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """What the task's templates need: its family, model, and every [data] and [model] value as a literal."""
    data, model = values["data"], values["model"]
    task, arch = TASKS[data["dataset"]], model["arch"]
    channels, side = IMAGE_SHAPES.get(data["dataset"], (0, 0))
    logs = values["checkpoint"]["save_last"] or values["checkpoint"]["save_top_k"] != 0
    logs = logs or any(values["logging"][name] for name in ("tensorboard", "csv", "wandb", "mlflow"))
    return {
        "dataset": data["dataset"],
        "synthetic_samples": repr(data["synthetic_samples"]),
        "val_fraction": repr(data["val_fraction"]),
        "val_size": repr(data["val_size"]),
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
        # build_model returns an nn.ModuleDict of models, each with its own optimizer (a GAN's two).
        "several_models": arch == "gan",
        # a grid of generated images at each validation, from a latent batch fixed at the start, written out.
        "samples": arch == "gan" and validates(values) and logs,
        "dependencies": _dependencies(data, task, values),
        "model_description": _describe_model(model),
        "data_description": DATA_DESCRIPTIONS[data["dataset"]]
        + (TOKENS[pretrained.tokenizer(values)] if task == "text" else ""),
        "data_keys": {key: repr(value) for key, value in data.items()},
        "model_keys": {key: repr(value) for key, value in model.items()},
    }


def _dependencies(data: dict[str, Any], task: str, values: dict[str, dict[str, Any]]) -> list[str]:
    """The emitted pyproject.toml's dependencies: what its code imports (optional ones only when the spec uses them)."""
    # csv: pyarrow parses the file into arrays of numbers (16: the first to work with numpy 2)
    extra = {"cifar10": ["numpy>=1.24"], "csv": ["numpy>=1.24", "pyarrow>=16"]}.get(data["dataset"], [])
    extra += ["pillow>=10"] if task == "image" else []  # image_folder reads images; predict.py reads any image file
    extra += pretrained.dependencies(values) + export.dependencies(values) + tuning.dependencies(values)
    logging, sweep = values["logging"], values["sweep"]
    extra += ["wandb>=0.31"] if logging["wandb"] else []
    extra += ["mlflow>=2.16"] if logging["mlflow"] else []
    extra += ["matplotlib>=3.7"] if sweep["enabled"] else []  # sweep.py report's chart
    extra += ["optuna>=4"] if sweep["enabled"] and sweep["method"] == "optuna" else []
    extra = list(dict.fromkeys(extra))  # matplotlib: the sweep's report and the lr finder's plot
    return ["torch>=2.9", *(["tensorboard>=2.14"] if logging["tensorboard"] else []), "tqdm>=4.64", *extra]


def _describe_model(model: dict[str, Any]) -> str:
    dropout = f", dropout {model['dropout']}" if model["dropout"] > 0 else ""
    return {
        "mlp": f"an MLP with hidden layers of {', '.join(map(str, model['hidden_sizes'])) or 'no'} units, ReLU{dropout}",
        "cnn": f"a CNN of {len(model['channels'])} conv blocks ({', '.join(map(str, model['channels']))} channels){dropout}",
        "resnet": f"a ResNet-{model['depth']} (CIFAR stem, first stage {model['width']} channels wide){dropout}",
        "gpt": f"a GPT of {model['n_layer']} layers, {model['n_head']} heads, {model['n_embd']} wide{dropout}"
        + (f", from {model['init_from']}'s weights" if model["init_from"] != "scratch" else ""),
        "timm": f"timm's {model['timm_model']}" + (" (pretrained)" if model["pretrained"] else "") + dropout,
        "gan": f"a DCGAN: a generator of images from {model['latent_dim']}-dimensional noise, and a discriminator",
        "custom": "your own model (model.py's stub)",
    }[model["arch"]]


def paste(f: dict[str, Any]) -> dict[str, Any]:
    per_step = " * cfg.accumulate_grad_batches" if f["accumulate"] else ""
    return {
        "make_datasets_args": "cfg.dataset, " + ("Path(cfg.data_dir), " if f["real_data"] else "") + "cfg.seed",
        "samples_per_step": "cfg.batch_size" + per_step + (" * world_size" if f["distributed"] else ""),
        # throughput() figures, printed wherever the loss is printed
        "speed_text": ' + "".join(f", {name} {value:.3g}" for name, value in speed.items())' if f["throughput"] else "",
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"gan": f["several_models"], "samples": f["samples"], "throughput": f["throughput"]}


def imports(f: dict[str, Any]) -> list[str]:
    lines = ["from pathlib import Path"] if f["real_data"] else []
    lines += ["from steps import summarize"] if f["summarize"] and (f["validation"] or f["test"]) else []
    lines += ["import time", "from steps import throughput"] if f["throughput"] else []
    lines += ["from steps import sample_images, sample_latent, save_grid"] if f["samples"] else []
    return lines


def fields(f: dict[str, Any]) -> list[Field]:
    datasets = tuple(dict.fromkeys((f["dataset"], "synthetic")))
    comment = '"synthetic": generated data (no files)'
    if f["dataset"] != "synthetic":  # one of DATASETS: a plain word
        comment = f'"{f["dataset"]}", or "synthetic": generated data of its shapes (no files)'
    check, expected = f"{{v}} in {datasets!r}", " or ".join(datasets)
    out = [Field("dataset", f'"{f["dataset"]}"', "str", check, expected, comment=comment, position="data.dataset")]
    if f["real_data"]:
        where = "datasets are read (and downloaded) here"
        check, expected = "is_folder_path({v})", "a folder, or a path to make one at (no file there or on the way)"
        out.append(Field("data_dir", '"data"', "str", check, expected, comment=where, position="data.dataset"))
    return out


def state(f: dict[str, Any]) -> list[Entry]:
    return [plain('fixed_latent = state["fixed_latent"].to(device)', "fixed_latent")] if f["samples"] else []
