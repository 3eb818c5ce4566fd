"""The rules that involve more than one key, gathered from the features in one fixed order, and the pass that
finds keys set where they have no effect.

parse() runs them once every key is valid on its own, and sorts their problems by line: problems on the same
line (or on none) keep this order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ltgen.checks import as_toml
from ltgen.features import (
    FEATURES,
    core,
    early_stopping,
    hooks,
    last_checkpoint,
    manual,
    overfit,
    pretrained,
    scheduler,
    slurm,
    strategy,
    sweep,
    task,
    top_k,
    tuning,
)
from ltgen.schema import SCHEMA

Rule = Callable[[dict[str, dict[str, Any]]], list[tuple[str, str]]]

RULES: tuple[Rule, ...] = (
    task.fit_rules,
    pretrained.rules,
    core.rules,
    early_stopping.epoch_rules,
    scheduler.warmup_rules,
    scheduler.min_lr_rules,
    early_stopping.validation_rules,
    top_k.rules,
    scheduler.validation_rules,
    last_checkpoint.rules,
    hooks.rules,
    task.batch_rules,
    manual.gan_rules,
    manual.rules,
    strategy.rules,
    slurm.rules,
    sweep.rules,
    overfit.rules,
    tuning.rules,
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


def no_effect(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Keys set away from their default where they do nothing (another dataset's, model's or setting's keys, as
    their `Key.applies` says), in schema order: (dotted key, message) pairs. The default spec lists every key at
    its default, so only a changed value is one the user meant something by."""
    out = []
    for section_name, section in SCHEMA.items():
        for name, key in section.keys.items():
            value = values[section_name][name]
            if _same(value, key.default):
                continue
            for condition in key.applies:
                settings = [dotted.rsplit(".", 1) for dotted in condition.on]  # [section, key] each
                if condition.when(*(values[on_section][on_key] for on_section, on_key in settings)):
                    continue
                # the settings that make it inert, named as in its own [section], or with theirs
                setting = " and ".join(
                    (on_key if on_section == section_name else f"[{on_section}] {on_key}")
                    + f" {as_toml(values[on_section][on_key])}"
                    for on_section, on_key in settings
                )
                message = (
                    f"[{section_name}] {name} = {as_toml(value)} has no effect with {setting} "
                    f"(it applies {condition.where}); remove it or set it back to {as_toml(key.default)}"
                )
                out.append((f"{section_name}.{name}", message))
                break
    return out


def _same(value: Any, default: Any) -> bool:
    """Equal, and not merely as a number equals a bool (0 == False)."""
    return value == default and isinstance(value, bool) == isinstance(default, bool)
