"""The rules that involve more than one key, gathered from the features in one fixed order.

parse() runs them once every key is valid on its own, and sorts their problems by line: problems on the same
line (or on none) keep this order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ltgen.features import (
    FEATURES,
    core,
    early_stopping,
    hooks,
    last_checkpoint,
    manual,
    overfit,
    scheduler,
    slurm,
    strategy,
    task,
    top_k,
)

Rule = Callable[[dict[str, dict[str, Any]]], list[tuple[str, str]]]

RULES: tuple[Rule, ...] = (
    task.fit_rules,
    core.rules,
    early_stopping.epoch_rules,
    scheduler.warmup_rules,
    early_stopping.validation_rules,
    top_k.rules,
    scheduler.validation_rules,
    last_checkpoint.rules,
    hooks.rules,
    task.batch_rules,
    task.gan_rules,
    manual.rules,
    strategy.rules,
    slurm.rules,
    overfit.rules,
)
# A feature's rules are its functions named `rules` or `..._rules`: each must have its place above.
_UNPLACED = [
    f"{feature.__name__}.{name}"
    for feature in FEATURES
    for name, function in vars(feature).items()
    if (name == "rules" or name.endswith("_rules")) and callable(function) and function not in RULES
]
if _UNPLACED:
    raise RuntimeError(f"rules without a place in ltgen.rules.RULES: {', '.join(_UNPLACED)}")


def cross_checks(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Every rule's problems with these (individually valid) values: (dotted key, message) pairs."""
    return [problem for rule in RULES for problem in rule(values)]
