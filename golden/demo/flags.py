"""The command line: a flag for every field of train.py's Config, each value checked before any work starts;
and the numbers, paths and output files every script of the project shares."""

import argparse
import dataclasses
import math
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:  # torch is imported where it is used: prepare.py shares this module and runs without it
    import torch

# Whole numbers on the command line stay within a 64-bit integer: torch, numpy and the loaders take no larger,
# and a typo of extra digits should be an error at start-up, not an OverflowError an epoch later.
INT_LIMIT = 2**63 - 1


def parse(config_class: type, parser: argparse.ArgumentParser) -> tuple:
    """Add a flag per Config field to parser (--max-epochs 3, --no-progress-bar), parse the command line and
    return (config, the other options); exit with status 2 and one line per bad value."""
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            # Whole numbers of any size here: config_problems bounds them, reporting every bad value at once.
            kind = {int: whole_number, int | float: parse_number}.get(field.type, field.type)
            parser.add_argument(flag, type=kind, default=field.default, help=f"default: {field.default}")
    args = parser.parse_args()
    cfg = config_class(**{field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)})
    if problems := config_problems(cfg):
        fail("\n".join(problems))
    return cfg, args


def whole_number(text: str) -> int:
    """An argparse type: a whole number (of any size), else argparse's one-line error (exit 2)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def integer(low: int, high: int = INT_LIMIT) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high, else argparse's one-line error (exit 2)."""

    def parse(text: str) -> int:
        value = whole_number(text)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range: expected {low} to {high}")
        return value

    parse.__name__ = "integer"  # argparse names the type in its messages
    return parse


def existing(kind: str, *words: str) -> Callable[[str], Path | str]:
    """An argparse type: the path of an existing file (kind "file": a regular one, as a named pipe would block the
    read) or folder (kind "folder"), or one of `words` as it is; else argparse's one-line error (exit 2)."""

    def parse(text: str) -> Path | str:
        if text in words:
            return text
        path = Path(text)
        if not path.exists():
            raise argparse.ArgumentTypeError(f"{text}: no such {kind}")
        if kind == "folder" and not path.is_dir():
            raise argparse.ArgumentTypeError(f"{text} is a file: name a folder")
        if kind == "file" and not path.is_file():
            what = "a folder" if path.is_dir() else "not a regular file (a named pipe or a device)"
            raise argparse.ArgumentTypeError(f"{text} is {what}: name a file")
        return path

    return parse


def is_folder_path(text: str) -> bool:
    """Whether a folder is at `text`, or can be made there: no file (nor dangling link) is at it or on the way."""
    path = Path(text).absolute()
    return next(p for p in (path, *path.parents) if os.path.lexists(p)).is_dir()


def parse_number(text: str) -> int | float:
    """'20' is a count of batches, '0.5' a fraction (Lightning's convention)."""
    if any(c in text for c in ".eEnN"):  # nan and inf are refused by the field's check
        return float(text)
    return whole_number(text)


def config_problems(cfg) -> list[str]:
    """The settings out of range, one line each."""
    checks = [  # (field, whether its value is fine, what it should be)
        ("dataset", cfg.dataset in ("synthetic",), "synthetic"),
        ("out_dir", is_folder_path(cfg.out_dir), "a folder, or a path to make one at (no file there or on the way)"),
        ("batch_size", cfg.batch_size >= 1, "an integer >= 1"),
        ("lr", 0 < cfg.lr <= 10000, "a number > 0 and <= 10000"),
        ("max_epochs", cfg.max_epochs >= 1 or cfg.max_epochs == -1, "an integer >= 1, or -1 for no limit"),
        ("max_steps", cfg.max_steps >= 1 or cfg.max_steps == -1, "an integer >= 1, or -1 for no limit"),
        ("min_epochs", cfg.min_epochs >= 0, "an integer >= 0"),
        ("min_steps", cfg.min_steps >= 0, "an integer >= 0"),
        ("accumulate_grad_batches", cfg.accumulate_grad_batches >= 1, "an integer >= 1"),
        (
            "gradient_clip_val",
            0 < cfg.gradient_clip_val < math.inf,
            "a finite number > 0 (turn clipping off in ltgen.toml)",
        ),
        ("limit_train_batches", is_limit(cfg.limit_train_batches), "a fraction in (0, 1] or a count >= 1"),
        (
            "limit_val_batches",
            is_limit(cfg.limit_val_batches),
            "a fraction in (0, 1] or a count >= 1 (turn validation off in ltgen.toml)",
        ),
        (
            "limit_test_batches",
            is_limit(cfg.limit_test_batches),
            "a fraction in (0, 1] or a count >= 1 (turn the test off in ltgen.toml)",
        ),
        ("num_sanity_val_steps", cfg.num_sanity_val_steps >= -1, "an integer >= 0, or -1 for all"),
        ("seed", 0 <= cfg.seed < 2**32, "an integer from 0 to 2**32 - 1"),
        ("patience", cfg.patience >= 1, "an integer >= 1"),
        ("min_delta", 0 <= cfg.min_delta < math.inf, "a finite number >= 0"),
        ("save_top_k", cfg.save_top_k >= -1, "an integer >= 0, or -1 for all"),
        ("ckpt_every_n_steps", cfg.ckpt_every_n_steps >= 0, "an integer >= 0"),
        ("ckpt_every_n_minutes", 0 <= cfg.ckpt_every_n_minutes < math.inf, "a finite number >= 0"),
        ("log_every_n_steps", cfg.log_every_n_steps >= 1, "an integer >= 1"),
    ]
    bad = [(name, expected) for name, ok, expected in checks if not ok]
    # Past 64 bits, torch and numpy overflow where a field's own check sets no upper bound.
    bad += [
        (name, "a whole number of at most 2**63 - 1")
        for name, value in vars(cfg).items()
        if type(value) is int and abs(value) > INT_LIMIT and name not in dict(bad)
    ]
    order = list(vars(cfg))
    problems = [
        f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: expected {expected}"
        for name, expected in sorted(bad, key=lambda item: order.index(item[0]))
    ]
    if cfg.max_epochs == -1 and cfg.max_steps == -1:
        problems.append("--max-epochs -1 and --max-steps -1: training would never end; set one of them")
    return problems


def is_limit(value: float) -> bool:
    """Lightning's batch limits: a fraction in (0, 1] or a count >= 1."""
    return 0 < value <= 1 if isinstance(value, float) else value >= 1


def num_batches(limit: float, available: int, flag: str) -> int:
    """How many of `available` batches a limit allows (a float is a fraction, an int a count); none is an error."""
    if available == 0:  # the data's fault, not the flag's
        split = {"train": "training", "val": "validation", "test": "test"}[flag.split("-")[1]]
        fail(f"The {split} set holds no samples: check its files, or the share of the data it gets")
    count = min(limit, available) if isinstance(limit, int) else int(limit * available)
    if count == 0:
        fail(
            f"--{flag} {limit} selects none of the {available} batches: use at least {math.ceil(1e4 / available) / 1e4}"
        )
    return count


def metric(metrics: dict[str, float], name: str, setting: str) -> float:
    """metrics[name], where a setting names the metric; one that validation_step does not return is one line."""
    if name not in metrics:
        fail(
            f"{setting} {name!r} is not a metric validation_step returns ({', '.join(metrics)}): fix it in ltgen.toml (then ltgen regen), or return it"
        )
    return metrics[name]


def choose_device(choice: str) -> "torch.device":
    """--device as a torch.device: "auto" takes a CUDA GPU, else an Apple GPU (MPS), else the CPU.
    One line and exit 1 when the device asked for is not there."""
    import torch

    present = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if choice == "auto":
        choice = next(name for name, there in present.items() if there)
    if not present[choice]:
        raise SystemExit(
            f"--device {choice}, but no {'Apple GPU (MPS)' if choice == 'mps' else 'CUDA device'} is available"
        )
    return torch.device(choice)


def fail(message: str) -> NoReturn:
    """Exit with status 2, as argparse does for a bad flag: the message, no traceback."""
    print(message, file=sys.stderr)
    raise SystemExit(2)


def write_output(path: Path, write: Callable, flag: str = "--output", newline: str | None = "") -> None:
    """Write a user's output file whole or not at all: write(file) fills a temporary file in the same folder, which
    then replaces `path`; a missing folder, a full disk or a refused permission is one line and exit 2."""
    if path.is_symlink() and path.resolve().is_file():
        path = path.resolve()  # write the file the link points to, and keep the link
    folder = path.parent
    if os.path.lexists(path) and not path.is_file():  # a device (/dev/null), a named pipe, a folder: never replaced
        what = "a folder" if path.is_dir() else "not a regular file"
        fail(f"{flag} {path} is {what}; name a file")
    if not is_folder_path(folder):
        fail(f"{flag} {path}: {folder} cannot be a folder, a file is in the way; name a file in a folder")
    if not folder.is_dir():
        fail(f"{flag} {path}: the folder {folder} does not exist; create it first (mkdir -p {folder})")
    # The file's mode: the replaced file's, else what open() would give under the umask (a temporary file is 0600).
    umask = os.umask(0)
    os.umask(umask)
    mode = path.stat().st_mode & 0o7777 if path.exists() else 0o666 & ~umask
    temporary = None
    try:
        with tempfile.NamedTemporaryFile(
            "w", dir=folder, prefix=f".{path.name}.", suffix=".tmp", delete=False, encoding="utf-8", newline=newline
        ) as file:
            temporary = Path(file.name)
            write(file)
            file.flush()
            os.fchmod(file.fileno(), mode)
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except OSError as error:
        fail(f"{flag} {path}: cannot write it ({error.strerror or error}); {path} is unchanged")
    finally:  # a failure, or an exit or Ctrl-C inside write(), leaves no temporary file behind
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def run(main: Callable[[], None]) -> None:
    """Run a script's main(). A reader that stops early (python predict.py ... | head) ends it quietly, as it
    would end a Unix tool, not with a BrokenPipeError."""
    try:
        main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's exit flush does not fail
