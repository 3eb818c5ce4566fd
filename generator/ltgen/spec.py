"""The spec (`ltgen.toml`): its schema, parsing and validation.

A spec is a TOML file of sections and keys. `parse` checks everything at once and
returns a `Spec` (every key present, defaults filled in) or raises `SpecError`
with one `Problem` per mistake.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SPEC_FILE = "ltgen.toml"

NAME_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")
METRIC_PATTERN = re.compile(r"val_[A-Za-z0-9_]{1,64}")
SLURM_TIME_PATTERN = re.compile(r"([0-9]+-)?[0-9]{1,3}(:[0-9]{2}){0,2}")  # ASCII digits: \d matches any script's
SLURM_WORD_PATTERN = re.compile(r"[A-Za-z0-9_.,:=+-]{1,128}")

HOOKS = {
    "on_fit_start": "before the first training step",
    "on_fit_end": "after training, before the test pass",
    "on_train_epoch_start": "at the start of every training epoch",
    "on_train_epoch_end": "at the end of every training epoch",
    "on_train_batch_end": "after every optimizer step",
    "on_before_optimizer_step": "after backward (gradients unscaled), before clipping and the step",
    "on_validation_epoch_end": "after every validation, with its metrics",
    "on_test_epoch_end": "after the test pass, with its metrics",
    "on_save_checkpoint": "before a checkpoint is written; may add entries to it",
    "on_load_checkpoint": "after a checkpoint is loaded to resume",
}


@dataclass(frozen=True)
class Problem:
    """One mistake in a spec: where it is and what was expected."""

    file: str
    key: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.key}: {self.message}" if self.key else f"{where}: {self.message}"


class SpecError(Exception):
    """A spec with one or more problems."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(map(str, problems)))
        self.problems = problems


# --- value checks: each returns None when the value is fine, else what was expected (and, after a
# "|", a hint such as a did-you-mean) ---

Check = Callable[[Any], str | None]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# The bound of an integer key that has no tighter one: beyond any real run, and small enough for every
# integer the emitted code hands to torch (int64), to the shell or to SLURM.
MAX_COUNT = 10**9


def integer(lo: int, hi: int = MAX_COUNT, also: tuple[int, ...] = ()) -> Check:
    """An integer from lo to hi, or one of `also`; the message names the bound a value breaks."""

    def check(value: Any) -> str | None:
        if _is_int(value) and (value in also or lo <= value <= hi):
            return None
        too_big = _is_int(value) and value > hi
        return f"an integer >= {lo}" + (f" and <= {hi}" if too_big else "") + "".join(f" (or {a})" for a in also)

    return check


def number(lo: float, hi: float | None = None, hi_open: bool = False, lo_open: bool = False) -> Check:
    """A finite number from lo to hi (either end excluded with lo_open, hi_open)."""

    def check(value: Any) -> str | None:
        finite = _is_number(value) and math.isfinite(value)
        above = finite and (value > lo or (value == lo and not lo_open))
        if above and (hi is None or value < hi or (value == hi and not hi_open)):
            return None
        upper = "" if hi is None else f" and {'<' if hi_open else '<='} {hi}"
        kind = "a finite number" if _is_number(value) and not finite else "a number"
        return f"{kind} {'>' if lo_open else '>='} {lo}{upper}"

    return check


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "true or false"


def choice(*options: str) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and value in options:
            return None
        hint = f'write it as a string: "{value}"' if str(value) in options else _did_you_mean(str(value), options)
        return "one of " + ", ".join(f'"{o}"' for o in options) + f"|{hint}"

    return check


def text(pattern: re.Pattern[str], what: str, empty_ok: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, str) and ((empty_ok and value == "") or pattern.fullmatch(value)):
            return None
        return what

    return check


def int_list(lo: int, min_len: int, max_len: int, hi: int = MAX_COUNT) -> Check:
    def check(value: Any) -> str | None:
        if (
            isinstance(value, list)
            and min_len <= len(value) <= max_len
            and all(_is_int(v) and lo <= v <= hi for v in value)
        ):
            return None
        return f"a list of {min_len} to {max_len} integers >= {lo}" + (
            f" and <= {hi}" if isinstance(value, list) and any(_is_int(v) and v > hi for v in value) else ""
        )

    return check


def batch_limit(zero_ok: bool = False) -> Check:
    """Lightning's limit: a float is a fraction of the batches, an int a count."""

    def check(value: Any) -> str | None:
        if _is_int(value) and (0 if zero_ok else 1) <= value <= MAX_COUNT:
            return None
        if isinstance(value, float) and (0.0 <= value if zero_ok else 0.0 < value) and value <= 1.0:
            return None
        low = "[0.0, 1.0]" if zero_ok else "(0.0, 1.0]"
        count = "an integer >= 0" if zero_ok else "a positive integer"
        at_most = f" (at most {MAX_COUNT})" if _is_int(value) and value > MAX_COUNT else ""
        return f"a fraction in {low} (write 1.0, not 1, for all batches) or {count} count of batches{at_most}"

    return check


def betas(value: Any) -> str | None:
    if isinstance(value, list) and len(value) == 2 and all(_is_number(b) and 0 <= b < 1 for b in value):
        return None
    return "two numbers in [0, 1), such as [0.5, 0.999]"


def off_or_number(value: Any) -> str | None:
    """A threshold: false (off) or a finite number."""
    if value is False or (_is_number(value) and math.isfinite(value)):
        return None
    return "false (off) or a finite number"


def hook_list(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        unknown = [v for v in value if v not in HOOKS]
        if not unknown and len(set(value)) == len(value):
            return None
        if unknown:
            return (
                "hook names from: "
                + ", ".join(HOOKS)
                + f"|{_as_toml(unknown[0])} is not one; {_did_you_mean(unknown[0], HOOKS)}".rstrip("; ")
            )
        return "each hook listed once"
    return "a list of hook names: " + ", ".join(HOOKS)


def word_list(value: Any) -> str | None:
    if isinstance(value, list) and all(isinstance(v, str) and SLURM_WORD_PATTERN.fullmatch(v) for v in value):
        return None
    return 'a list of sbatch options such as "--mem=64G" (letters, digits and _.,:=+- only)'


def choice_int(*options: int) -> Check:
    def check(value: Any) -> str | None:
        return None if _is_int(value) and value in options else "one of " + ", ".join(map(str, options))

    return check


def file_name(value: Any) -> str | None:
    """A file name relative to --data-dir: no absolute path, no "..", no control characters."""
    if (
        isinstance(value, str)
        and 0 < len(value) <= 255
        and value.isprintable()
        and not value.startswith(("/", "\\", "~"))
        and ".." not in re.split(r"[/\\]", value)
        and not re.match(r"[A-Za-z]:", value)
    ):
        return None
    return 'a file name relative to --data-dir, such as "input.txt" (no absolute path, no "..")'


def column_name(value: Any) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 255 and value.isprintable():
        return None
    return "the name of a column of the CSV header (printable, at most 255 characters)"


@dataclass(frozen=True)
class Key:
    """One key of the schema: its check, default and one-line doc (written into new specs)."""

    check: Check
    default: Any
    doc: str = ""


@dataclass(frozen=True)
class Section:
    keys: dict[str, Key]
    doc: str = ""


DATASETS = ("mnist", "cifar10", "image_folder", "text", "csv", "custom", "synthetic")
ARCHS = ("mlp", "cnn", "resnet", "gpt", "custom", "gan")
IMAGE_ARCHS = ("mlp", "cnn", "resnet")
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
    "text": {"model.arch": "gpt"},
    "csv": {"model.arch": "mlp"},
    "custom": {"model.arch": "custom"},
}
# What `ltgen new --model M` sets besides [model] arch (under what the command line says).
MODEL_SEEDS: dict[str, dict[str, Any]] = {
    # A GAN steps two optimizers by hand, at constant learning rates; it has no loss to rank checkpoints by.
    "gan": {"trainer.manual_optimization": True, "optim.scheduler": "none", "checkpoint.save_top_k": 0},
}
GAN_METRICS = ("val_loss_d", "val_loss_g", "val_d_real", "val_d_fake")  # what the GAN's validation_step returns
RESNET_STAGES = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}  # basic blocks per stage
METRIC = text(METRIC_PATTERN, 'a validation metric name such as "val_loss" or "val_acc"')
MODE = choice("min", "max")

SCHEMA: dict[str, Section] = {
    "project": Section(
        {
            "name": Key(
                text(NAME_PATTERN, "a name of letters, digits, '_' and '-' starting with a letter (at most 64)"),
                "project",
                "the project's name, and its folder's",
            )
        }
    ),
    "model": Section(
        {
            "arch": Key(
                choice(*ARCHS),
                "mlp",
                '"mlp" | "cnn" | "resnet" | "gan" (images) | "gpt" (text) | "custom" (your own, with dataset "custom")',
            ),
            "hidden_sizes": Key(int_list(1, 0, 8, hi=65536), [128], "mlp: widths of the hidden layers"),
            "channels": Key(
                int_list(1, 1, 4, hi=4096), [32, 64], "cnn: channels of the conv blocks (each halves the image)"
            ),
            "dropout": Key(number(0.0, 1.0, hi_open=True), 0.1, "dropout probability; 0 for none"),
            "depth": Key(choice_int(*RESNET_STAGES), 18, "resnet: 10, 18 or 34 layers (basic blocks, CIFAR stem)"),
            "width": Key(integer(1, 1024), 64, "resnet: channels of the first stage, doubled at each of the next 3"),
            "n_layer": Key(integer(1, 128), 6, "gpt: transformer blocks"),
            "n_head": Key(integer(1, 128), 6, "gpt: attention heads (n_embd must be a multiple of n_head)"),
            "n_embd": Key(integer(1, 16384), 384, "gpt: embedding width"),
            "bias": Key(boolean, False, "gpt: biases in the linear layers and LayerNorms"),
            "latent_dim": Key(integer(1, 4096), 100, "gan: size of the noise vector the generator starts from"),
            "generator_width": Key(integer(1, 1024), 64, "gan: channels of the generator's last hidden layer"),
            "discriminator_width": Key(integer(1, 1024), 64, "gan: channels of the discriminator's first layer"),
        }
    ),
    "data": Section(
        {
            "dataset": Key(
                choice(*DATASETS),
                "mnist",
                '"mnist" | "cifar10" | "image_folder" | "text" | "csv" | "custom" | "synthetic"',
            ),
            "batch_size": Key(integer(1), 64, "per process"),
            "num_workers": Key(integer(0, 256), 0, "data loading processes; the data sits in memory, so 0 is fastest"),
            "val_fraction": Key(
                number(0.0, 1.0, hi_open=True), 0.1, "share of the training set held out for validation"
            ),
            "val_size": Key(integer(0), 0, "a fixed number of validation samples instead (0: use val_fraction)"),
            "synthetic_samples": Key(integer(10, 10**7), 12000, "synthetic: training + validation samples"),
            "image_size": Key(integer(8, 4096), 64, "image_folder: images are resized to image_size x image_size"),
            "augment": Key(boolean, False, "images: random crop (4-pixel padding) and horizontal flip, on the device"),
            "in_memory": Key(boolean, True, "image_folder: decode every image once, hold them as uint8 in memory"),
            "text_file": Key(file_name, "input.txt", "text: a UTF-8 file in --data-dir"),
            "block_size": Key(integer(1, 65536), 256, "text: characters of context"),
            "samples_per_epoch": Key(integer(1), 32000, "text: random windows that make an epoch"),
            "csv_file": Key(file_name, "data.csv", "csv: a file with a header row, in --data-dir"),
            "target": Key(column_name, "target", "csv: the column to predict; the other columns are the features"),
            "task": Key(
                choice("classification", "regression"), "classification", 'csv: "classification" | "regression"'
            ),
            "input_shape": Key(int_list(1, 1, 4, hi=65536), [3, 32, 32], "custom: the shape of one input"),
            "num_classes": Key(integer(1, 10**6), 10, "custom: classes of the target"),
        }
    ),
    "optim": Section(
        {
            "optimizer": Key(choice("adam", "adamw", "sgd"), "adamw", '"adam" | "adamw" | "sgd"'),
            "lr": Key(number(0.0, lo_open=True), 1e-3, "the learning rate (the peak, with a schedule)"),
            "weight_decay": Key(number(0.0), 0.01, "decoupled for adamw; an L2 penalty for adam and sgd"),
            "momentum": Key(number(0.0, 1.0, hi_open=True), 0.9, "sgd only"),
            "scheduler": Key(
                choice("none", "cosine", "step", "plateau"), "cosine", '"none" | "cosine" | "step" | "plateau"'
            ),
            "scheduler_interval": Key(
                choice("step", "epoch"),
                "step",
                '"step": the schedule counts optimizer steps; "epoch": epochs, as Lightning does by default',
            ),
            "warmup_steps": Key(
                integer(0), 0, "linear warm-up, in schedule steps (see scheduler_interval; not with plateau)"
            ),
            "step_size": Key(integer(1), 1000, "step: multiply the lr by gamma every step_size schedule steps"),
            "gamma": Key(number(0.0, 1.0), 0.1, "step and plateau: the factor"),
            "plateau_patience": Key(integer(0), 2, "plateau: validations without improvement before the lr drops"),
            "monitor": Key(METRIC, "val_loss", "plateau: the metric watched"),
            "mode": Key(MODE, "min", "plateau: whether the metric should go down (min) or up (max)"),
            "lr_g": Key(number(0.0, lo_open=True), 2e-4, "gan: the generator's Adam learning rate"),
            "lr_d": Key(number(0.0, lo_open=True), 2e-4, "gan: the discriminator's Adam learning rate"),
            "betas": Key(betas, [0.5, 0.999], "gan: Adam's betas, for both optimizers"),
        }
    ),
    "trainer": Section(
        {
            "max_epochs": Key(integer(1, also=(-1,)), 10, "-1: no limit (then set max_steps)"),
            "max_steps": Key(integer(1, also=(-1,)), -1, "optimizer steps; -1: no limit"),
            "min_epochs": Key(integer(0), 0, "early stopping waits for at least this many completed epochs"),
            "min_steps": Key(integer(0), 0, "and for at least this many optimizer steps"),
            "precision": Key(
                choice("32", "16-mixed", "bf16-mixed"),
                "32",
                '"32" | "16-mixed" | "bf16-mixed" (16-mixed needs a GPU: on the CPU it runs as bf16-mixed)',
            ),
            "tf32": Key(boolean, True, "TF32 matmuls on Ampere+ GPUs: faster, slightly less precise float32"),
            "accumulate_grad_batches": Key(integer(1), 1, "batches per optimizer step"),
            "gradient_clip_val": Key(number(0.0), 0.0, "clip the gradient norm to this; 0: off"),
            "limit_train_batches": Key(batch_limit(), 1.0, "a float is a fraction of the batches, an int a count"),
            "limit_val_batches": Key(batch_limit(zero_ok=True), 1.0, "0: no validation"),
            "limit_test_batches": Key(batch_limit(zero_ok=True), 1.0, "0: no test pass"),
            "val_check_interval": Key(
                batch_limit(), 1.0, "validate every fraction of an epoch (float) or every N batches (int)"
            ),
            "check_val_every_n_epoch": Key(integer(1), 1, "validate in every Nth epoch only"),
            "num_sanity_val_steps": Key(
                integer(0, also=(-1,)), 2, "validation batches run before training, to fail fast; -1: all"
            ),
            "seed": Key(integer(0, 2**32 - 1), 42, "seeds the weights, the data split and order, and random layers"),
            "nonfinite_loss": Key(
                choice("stop", "skip", "off"), "stop", '"stop" | "skip" (the optimizer step) | "off"'
            ),
            "compile": Key(boolean, False, "torch.compile the model"),
            "manual_optimization": Key(
                boolean, False, "training_step runs backward and the optimizer steps itself (a GAN needs it)"
            ),
        }
    ),
    "early_stopping": Section(
        {
            "enabled": Key(boolean, False, "stop when the monitored metric stops improving"),
            "monitor": Key(
                METRIC, "val_loss", "val_loss, val_acc, or val_<name> for any metric validation_step returns"
            ),
            "mode": Key(MODE, "min", "min: lower is better; max: higher is better"),
            "patience": Key(integer(1), 3, "validations without improvement before stopping"),
            "min_delta": Key(number(0.0), 0.0, "the smallest change that counts as improvement"),
            "stopping_threshold": Key(
                off_or_number, False, "stop as soon as the metric is better than this (e.g. 0.01); false: off"
            ),
            "divergence_threshold": Key(
                off_or_number, False, "stop as soon as the metric is worse than this (e.g. 10.0); false: off"
            ),
        }
    ),
    "checkpoint": Section(
        {
            "monitor": Key(METRIC, "val_loss", "the metric that ranks checkpoints"),
            "mode": Key(MODE, "min", "min: lower is better; max: higher is better"),
            "save_top_k": Key(integer(0, also=(-1,)), 1, "keep the k best by monitor; 0: none; -1: all"),
            "save_last": Key(boolean, True, "last.pt, for --resume last"),
            "every_n_steps": Key(integer(0), 0, "also write last.pt every N optimizer steps; 0: off"),
            "every_n_minutes": Key(number(0.0), 0.0, "also write last.pt every M minutes; 0: off"),
        }
    ),
    "logging": Section(
        {
            "tensorboard": Key(boolean, True, "event files in --out-dir"),
            "log_every_n_steps": Key(integer(1), 50, "read the loss (a host sync) every N steps"),
            "progress_bar": Key(boolean, True, "a tqdm bar per epoch"),
        }
    ),
    "cluster": Section(
        {
            "gpus": Key(
                integer(0, 1024), 1, "GPUs per node; more than 1 (or more nodes) trains distributed, by strategy"
            ),
            "nodes": Key(integer(1, 100000), 1, "machines"),
            "strategy": Key(
                choice("ddp", "fsdp"),
                "ddp",
                '"ddp": a model copy per GPU | "fsdp": parameters, gradients and optimizer state sharded (FSDP2)',
            ),
            "fsdp_cpu_offload": Key(
                boolean, False, "fsdp: keep the sharded parameters and optimizer state in CPU memory"
            ),
        }
    ),
    "cluster.slurm": Section(
        {
            "enabled": Key(boolean, False, "emit launch/slurm.sbatch with walltime auto-requeue"),
            "partition": Key(
                text(SLURM_WORD_PATTERN, "a partition name", empty_ok=True), "", "empty: the cluster's default"
            ),
            "time": Key(
                text(SLURM_TIME_PATTERN, 'a SLURM time limit such as "04:00:00" or "2-00:00:00"'),
                "04:00:00",
                "the job's time limit",
            ),
            "cpus_per_task": Key(integer(1, 4096), 8, "CPUs for each node's task (all its GPU processes)"),
            "requeue_signal": Key(
                choice("USR1", "USR2"), "USR2", "sent before the time limit: checkpoint, then requeue"
            ),
            "signal_seconds": Key(integer(10, 3600), 120, "how long before the time limit the signal comes"),
            "sbatch_options": Key(word_list, [], 'extra #SBATCH options, e.g. ["--mem=64G", "--account=lab"]'),
        }
    ),
    "hooks": Section({"emit": Key(hook_list, [], "hook stubs to emit in steps.py: " + ", ".join(HOOKS))}),
    "debug": Section(
        {
            "param_summary": Key(boolean, True, "print the model's parameter counts at start"),
            "log_grad_norm": Key(boolean, False, "log the gradient norm at logging steps"),
            "detect_anomaly": Key(boolean, False, "torch.autograd anomaly detection (slow)"),
            "overfit_batches": Key(integer(0), 0, "train and validate on the same N batches; 0: off"),
        }
    ),
}


@dataclass(frozen=True)
class Spec:
    """A validated spec: `spec["trainer"]["max_epochs"]`, every key present."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


SHOWN_LENGTH = 60  # values and keys in messages are cut short after this many characters
HINTED_PROBLEMS = 100  # unknown names past this many problems get no did-you-mean (difflib is slow)


def _did_you_mean(word: str, options: Any) -> str:
    if len(word) > SHOWN_LENGTH:  # too long to be a typo, and difflib is slow on long words
        return ""
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f'did you mean "{close[0]}"?' if close else ""


def _as_toml(value: Any, budget: int = SHOWN_LENGTH) -> str:
    """A value as it would be written in TOML (what the user wrote, near enough), cut short when long."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        parts: list[str] = []
        for item in value:
            used = sum(len(part) + 2 for part in parts)
            if used >= budget:
                parts.append("...")
                break
            parts.append(_as_toml(item, budget - used))
        return "[" + ", ".join(parts) + "]"
    if isinstance(value, str) and len(value) > budget:
        return _toml_value(value[:budget]) + "..."
    return _toml_value(value)


def _toml_value(value: Any) -> str:
    import tomlkit

    return tomlkit.item(value).as_string()


BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _shown_key(key: str) -> str:
    """A key from the spec as TOML writes it: bare when it can be, else quoted (and cut short)."""
    return key if len(key) <= SHOWN_LENGTH and BARE_KEY.fullmatch(key) else _as_toml(key)


def _dotted(key: str) -> str:
    """A TOML key or table name as written (`"cluster" . slurm`) -> its dotted path (`cluster.slurm`)."""
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def _line_index(text: str) -> dict[tuple[str, str], int]:
    """The first line of each (table, key) and, with key "", of each [table] header: best effort, in one pass."""
    index: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            table = _dotted(stripped[1:].partition("]")[0])
            index.setdefault((table, ""), number)
            continue
        key, equals, _ = stripped.partition("=")
        if equals:
            index.setdefault((table, _dotted(key)), number)
    return index


def _line_of(index: dict[tuple[str, str], int], section: str, key: str) -> int | None:
    """The line of `key` in `[section]`, also when written as a dotted key in a table above it (None: unknown)."""
    parts = section.split(".")
    for split in range(len(parts), -1, -1):
        table, prefix = ".".join(parts[:split]), ".".join(parts[split:])
        dotted = ".".join(p for p in (prefix, key) if p)
        if (table, dotted) in index:
            return index[(table, dotted)]
    return None


def parse(text: str, file: str = SPEC_FILE) -> Spec:
    """Parse and validate spec text; raise SpecError listing every problem."""
    if text.startswith("\ufeff"):
        raise SpecError([Problem(file, "", "starts with a byte order mark (BOM): save it as UTF-8 without one", 1)])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        raise SpecError(
            [Problem(file, "", f"not valid TOML: {error}", int(match.group(1)) if match else None)]
        ) from None
    except RecursionError:
        raise SpecError([Problem(file, "", "arrays or tables nested too deeply to be read")]) from None

    problems: list[Problem] = []
    lines = _line_index(text)

    def problem(section: str, key: str, message: str) -> None:
        path = ".".join(name if name in SCHEMA else _shown_key(name) for name in (section, key) if name)
        problems.append(Problem(file, path, message, _line_of(lines, section, key)))

    values: dict[str, dict[str, Any]] = {}
    for name, section in SCHEMA.items():
        table = _lookup(document, name)
        if table is not None and not isinstance(table, dict):
            problem(name, "", f"expected a table [{name}], got {_as_toml(table)}")
            table = None
        table = table or {}
        values[name] = {}
        for key, spec_key in section.keys.items():
            value = table.get(key, spec_key.default)
            expected = spec_key.check(value)
            if expected is not None:
                expected, _, hint = expected.partition("|")
                problem(name, key, f"expected {expected}, got {_as_toml(value)}" + (f" ({hint})" if hint else ""))
            values[name][key] = value
        subsections = [s.split(".", 1)[1] for s in SCHEMA if s.startswith(name + ".")]
        for key in table:
            if key not in section.keys and key not in subsections:
                hint = _did_you_mean(key, [*section.keys, *subsections]) if len(problems) < HINTED_PROBLEMS else ""
                problem(name, key, f"unknown key ({hint})" if hint else "unknown key")
    top_level = [name for name in SCHEMA if "." not in name]
    for name in document:
        if name not in top_level:
            hint = _did_you_mean(name, top_level) if len(problems) < HINTED_PROBLEMS else ""
            problem(name, "", f"unknown section{f' ({hint})' if hint else ''}; sections: " + ", ".join(top_level))

    if not problems:
        problems += [
            Problem(file, key, message, _line_of(lines, *key.rsplit(".", 1))) for key, message in _cross_checks(values)
        ]
    if problems:
        raise SpecError(sorted(problems, key=lambda p: (p.line is None, p.line or 0)))
    return Spec(values)


def _lookup(document: dict[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _cross_checks(v: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Rules that involve more than one key: (key path, message) pairs."""
    out = _task_checks(v)
    trainer, optim = v["trainer"], v["optim"]
    validates = trainer["limit_val_batches"] != 0
    if trainer["max_epochs"] == -1 and trainer["max_steps"] == -1:
        out.append(("trainer.max_epochs", "training would never end: set max_epochs or max_steps"))
    if trainer["max_epochs"] != -1 and trainer["min_epochs"] > trainer["max_epochs"]:
        out.append(("trainer.min_epochs", f"expected at most max_epochs ({trainer['max_epochs']})"))
    if optim["scheduler"] == "plateau" and optim["warmup_steps"] > 0:
        out.append(
            ("optim.warmup_steps", 'expected 0 with scheduler = "plateau" (warm-up works with none, cosine and step)')
        )
    needs_validation = {
        "early_stopping.enabled": v["early_stopping"]["enabled"],
        "checkpoint.save_top_k": v["checkpoint"]["save_top_k"] != 0,
        "optim.scheduler": optim["scheduler"] == "plateau",
    }
    for key, needed in needs_validation.items():
        if needed and not validates:
            out.append((key, "needs validation, but trainer.limit_val_batches = 0 turns it off"))
    checkpoint = v["checkpoint"]
    for key in ("every_n_steps", "every_n_minutes"):
        if checkpoint[key] and not checkpoint["save_last"]:
            out.append((f"checkpoint.{key}", "writes last.pt, so it needs save_last = true"))
    hooks = v["hooks"]["emit"]
    hook_needs = {
        "on_save_checkpoint": (
            checkpoint["save_last"] or checkpoint["save_top_k"] != 0,
            "checkpoints (save_last or save_top_k)",
        ),
        "on_load_checkpoint": (checkpoint["save_last"], "checkpoint.save_last = true (resuming)"),
        "on_validation_epoch_end": (validates, "validation (trainer.limit_val_batches != 0)"),
        "on_test_epoch_end": (trainer["limit_test_batches"] != 0, "a test pass (trainer.limit_test_batches != 0)"),
    }
    for hook, (available, what) in hook_needs.items():
        if hook in hooks and not available:
            out.append(("hooks.emit", f"{hook} is never called without {what}"))
    out += _batch_count_checks(v)
    out += _optimization_checks(v)
    if v["debug"]["overfit_batches"] and trainer["limit_train_batches"] != 1.0:
        out.append(
            (
                "debug.overfit_batches",
                "overfit_batches sets the training batches itself: leave limit_train_batches at 1.0",
            )
        )
    return out


def _task_checks(v: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The model must fit the dataset, and its settings must fit each other."""
    data, model = v["data"], v["model"]
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


def distributed(values: dict[str, dict[str, Any]]) -> bool:
    """Whether the spec trains in several processes: more than one GPU or node, or under SLURM."""
    cluster = values["cluster"]
    return cluster["gpus"] > 1 or cluster["nodes"] > 1 or values["cluster.slurm"]["enabled"]


def _optimization_checks(v: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Manual optimization and FSDP: what they need, and what they do not support (yet)."""
    model, trainer, optim, cluster = v["model"], v["trainer"], v["optim"], v["cluster"]
    manual, fsdp = trainer["manual_optimization"], cluster["strategy"] == "fsdp"
    out = []
    if model["arch"] == "gan" and "gan" in VALID_ARCHS[v["data"]["dataset"]]:  # else the arch is the problem
        if not manual:
            out.append(
                ("trainer.manual_optimization", 'expected true with arch = "gan": it steps two optimizers by hand')
            )
        if optim["scheduler"] != "none" or optim["warmup_steps"]:
            out.append(
                ("optim.scheduler", 'expected "none" (and no warm-up) with arch = "gan": lr_g and lr_d stay constant')
            )
        monitors = {
            "checkpoint.monitor": v["checkpoint"]["save_top_k"] != 0,
            "early_stopping.monitor": v["early_stopping"]["enabled"],
        }
        for key, used in monitors.items():
            section, name = key.split(".")
            if used and v[section][name] not in GAN_METRICS:
                expected = ", ".join(f'"{metric}"' for metric in GAN_METRICS)
                out.append((key, f"expected one of the GAN's validation metrics, {expected}"))
    if manual:
        if optim["scheduler"] == "plateau" or (optim["scheduler_interval"] == "epoch" and optim["scheduler"] != "none"):
            out.append(
                (
                    "optim.scheduler",
                    'steps with its optimizer under manual_optimization: use scheduler_interval = "step", not "plateau"',
                )
            )
        if trainer["nonfinite_loss"] == "skip":
            out.append(
                ("trainer.nonfinite_loss", 'expected "stop" or "off" with manual_optimization (training_step steps)')
            )
        if v["debug"]["log_grad_norm"]:
            out.append(
                ("debug.log_grad_norm", "expected false with manual_optimization: training_step sees the gradients")
            )
        for hook in ("on_before_optimizer_step", "on_train_batch_end"):
            if hook in v["hooks"]["emit"]:
                out.append(("hooks.emit", f"{hook} is not called with manual_optimization: do it in training_step"))
    if fsdp and not distributed(v):
        out.append(("cluster.strategy", '"fsdp" shards across processes: set gpus > 1, nodes > 1 or slurm'))
    if fsdp and model["arch"] == "gan":
        out.append(("cluster.strategy", '"fsdp" does not support arch = "gan" (two models) yet: use "ddp"'))
    if fsdp and trainer["compile"]:
        out.append(("trainer.compile", 'expected false with strategy = "fsdp" (not supported together yet)'))
    if cluster["fsdp_cpu_offload"] and not fsdp:
        out.append(("cluster.fsdp_cpu_offload", 'needs strategy = "fsdp"'))
    return out


# Samples in each dataset: (training + validation, test); None where only the files know.
DATASET_SIZES = {
    "mnist": lambda data: (60000, 10000),
    "cifar10": lambda data: (50000, 10000),
    "synthetic": lambda data: (data["synthetic_samples"], data["synthetic_samples"] // 6),
}


def _batch_count_checks(v: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Limits that select no batch at all, and a validation interval longer than an epoch, as train.py would find
    them at start-up for this spec's dataset and number of processes."""
    data, trainer, cluster = v["data"], v["trainer"], v["cluster"]
    if v["debug"]["overfit_batches"] or data["dataset"] not in DATASET_SIZES:
        return []
    total, test = DATASET_SIZES[data["dataset"]](data)
    held_out = data["val_size"] or int(total * data["val_fraction"])
    if held_out >= total:
        return [("data.val_size", f"expected fewer than the {total} samples of the {data['dataset']} training set")]
    processes = max(1, cluster["gpus"]) * cluster["nodes"] if distributed(v) else 1
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


def dataset_seeds(dataset: str) -> dict[str, Any]:
    """The dotted keys `ltgen new --dataset D` sets besides data.dataset."""
    return dict(DATASET_SEEDS.get(dataset, {}))


def model_seeds(arch: str) -> dict[str, Any]:
    """The dotted keys `ltgen new --model M` sets besides model.arch."""
    return dict(MODEL_SEEDS.get(arch, {}))


def default_text(name: str) -> str:
    """A complete, commented spec with every key at its default, for `ltgen new`."""
    lines = [
        f"# {SPEC_FILE}: the spec of this project. Edit it, then run `ltgen regen` to bring the",
        "# change into the code (your own edits to the code are kept).",
    ]
    for section_name, section in SCHEMA.items():
        lines += ["", f"[{section_name}]"]
        for key, spec_key in section.keys.items():
            value = name if (section_name, key) == ("project", "name") else spec_key.default
            rendered = f"{key} = {_toml_value(value)}"
            lines.append(f"{rendered}  # {spec_key.doc}" if spec_key.doc else rendered)
    return "\n".join(lines) + "\n"


def with_values(text: str, updates: dict[str, Any]) -> str:
    """Set dotted keys (`cluster.gpus`) in spec text, keeping its comments and layout (and inline tables).

    ValueError when the text is not TOML, or holds something else where a key's table should be.
    """
    import tomlkit  # only here and in _toml_value: reading a spec needs tomllib alone

    try:
        document = tomlkit.parse(text)
        for dotted, value in updates.items():
            *sections, key = dotted.split(".")
            table: Any = document
            for part in sections:
                if part not in table:
                    inline = isinstance(table, tomlkit.items.InlineTable)
                    table[part] = tomlkit.inline_table() if inline else tomlkit.table()
                table = table[part]
            table[key] = value
        return tomlkit.dumps(document)
    except (ValueError, TypeError, KeyError) as error:  # tomlkit's ParseError is a ValueError
        raise ValueError(str(error)) from None


def read(path: Path) -> str:
    """The text of a spec file: SpecError if it is not UTF-8, OSError if it cannot be read."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        message = f"not UTF-8 text (byte {data[error.start]:#04x}): save it as UTF-8"
        raise SpecError([Problem(str(path), "", message, line)]) from None


def load(path: Path) -> Spec:
    """Read and validate a spec file."""
    return parse(read(path), file=str(path))
