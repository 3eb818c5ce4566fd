"""The command line: a flag for every field of train.py's Config, each value checked before any work starts."""

import argparse
import dataclasses
import math
import sys
from typing import NoReturn


def parse(config_class: type, parser: argparse.ArgumentParser) -> tuple:
    """Add a flag per Config field to parser (--max-epochs 3, --no-progress-bar), parse the command line and
    return (config, the other options); exit with status 2 and one line per bad value."""
    for field in dataclasses.fields(config_class):
        flag = "--" + field.name.replace("_", "-")
        if field.type is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default)
        else:
            kind = parse_number if field.type == int | float else field.type
            parser.add_argument(flag, type=kind, default=field.default, help=f"default: {field.default}")
    args = parser.parse_args()
    cfg = config_class(**{field.name: getattr(args, field.name) for field in dataclasses.fields(config_class)})
    if problems := config_problems(cfg):
        fail("\n".join(problems))
    return cfg, args


def parse_number(text: str) -> int | float:
    """'20' is a count of batches, '0.5' a fraction (Lightning's convention)."""
    return float(text) if any(c in text for c in ".eE") else int(text)


def config_problems(cfg) -> list[str]:
    """The settings out of range, one line each."""
    checks = [  # (field, whether its value is fine, what it should be)
        ("dataset", cfg.dataset in ("mnist", "synthetic"), "mnist or synthetic"),
        ("batch_size", cfg.batch_size >= 1, "an integer >= 1"),
        ("lr_g", 0 < cfg.lr_g < math.inf, "a finite number > 0"),
        ("lr_d", 0 < cfg.lr_d < math.inf, "a finite number > 0"),
        ("max_epochs", cfg.max_epochs >= 1 or cfg.max_epochs == -1, "an integer >= 1, or -1 for no limit"),
        ("max_steps", cfg.max_steps >= 1 or cfg.max_steps == -1, "an integer >= 1, or -1 for no limit"),
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
        ("ckpt_every_n_steps", cfg.ckpt_every_n_steps >= 0, "an integer >= 0"),
        ("ckpt_every_n_minutes", 0 <= cfg.ckpt_every_n_minutes < math.inf, "a finite number >= 0"),
        ("log_every_n_steps", cfg.log_every_n_steps >= 1, "an integer >= 1"),
    ]
    problems = [
        f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: expected {expected}"
        for name, ok, expected in checks
        if not ok
    ]
    if cfg.max_epochs == -1 and cfg.max_steps == -1:
        problems.append("--max-epochs -1 and --max-steps -1: training would never end; set one of them")
    return problems


def is_limit(value: float) -> bool:
    """Lightning's batch limits: a fraction in (0, 1] or a count >= 1."""
    return 0 < value <= 1 if isinstance(value, float) else value >= 1


def num_batches(limit: float, available: int, flag: str) -> int:
    """How many of `available` batches a limit allows (a float is a fraction, an int a count); none is an error."""
    count = min(limit, available) if isinstance(limit, int) else int(limit * available)
    if count == 0:
        fewest = f": use at least {math.ceil(1e4 / available) / 1e4}" if available else ""
        fail(f"--{flag} {limit} selects none of the {available} batches{fewest}")
    return count


def fail(message: str) -> NoReturn:
    """Exit with status 2, as argparse does for a bad flag: the message, no traceback."""
    print(message, file=sys.stderr)
    raise SystemExit(2)
