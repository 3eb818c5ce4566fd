"""Sweeps ([sweep]): sweep.py runs train.py once per trial, over a search space of Config fields ([sweep.space]),
by grid, random or Optuna search, and ranks the trials by a validation metric."""

from __future__ import annotations

import math
import re
from typing import Any

from ltgen.checks import METRIC_PATTERN, Applies, Key, as_toml, boolean, choice, did_you_mean, integer, only_with, text
from ltgen.features.task import GAN_METRICS
from ltgen.features.validation import needs_validation
from ltgen.unit import Field

SWEEP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
MAX_TRIALS = 10_000  # a grid's combinations, or random and Optuna trials: more is a typo, not a sweep
ENABLED = only_with("sweep.enabled", True, where="when a sweep is enabled")
SEARCHED = Applies(
    ("sweep.method",),
    lambda method: method != "grid",
    'to methods "random" and "optuna" (a grid runs every combination)',
)
RANGE_KEYS = ("low", "high", "log", "int")
# Fields a trial cannot take from the space, and why.
RESERVED = {"out_dir": "sweep.py sets --out-dir for every trial (its folder in the sweep's)"}
# The example `ltgen new` writes, commented out, under [sweep.space].
SPACE_EXAMPLE = (
    "lr = [0.001, 0.0003, 0.0001]  # random and optuna also take a range: { low = 0.0001, high = 0.1, log = true }",
    "batch_size = [32, 64]",
)


def _space(value: Any) -> str | None:
    """The space's shape only: its entries need the project's Config fields, which `rules` checks them against."""
    return None if isinstance(value, dict) else "a table [sweep.space] of Config fields, each a list or a range"


KEYS: dict[str, dict[str, Key]] = {
    "sweep": {
        "enabled": Key(boolean, False, "emit sweep.py: grid, random or Optuna search over Config fields"),
        "name": Key(
            text(SWEEP_NAME, "a name of letters, digits, '_' and '-' (at most 64)"),
            "1",
            "the sweep's folder is --out-dir/sweep-NAME; a new name for a new search space",
            (ENABLED,),
        ),
        "method": Key(choice("grid", "random", "optuna"), "grid", '"grid" | "random" | "optuna"', (ENABLED,)),
        "trials": Key(integer(1, MAX_TRIALS), 8, "random and optuna: how many trials", (ENABLED, SEARCHED)),
        "parallel": Key(
            integer(1, 1000), 1, "trials at once: the SLURM array's %K, and sweep.py run's default", (ENABLED,)
        ),
        "monitor": Key(
            text(METRIC_PATTERN, 'a validation metric name such as "val_loss" or "val_acc", or ""', empty_ok=True),
            "",
            "the metric trials are ranked by; empty: [checkpoint] monitor",
            (ENABLED,),
        ),
        "mode": Key(choice("min", "max", ""), "", '"min" | "max"; empty: [checkpoint] mode', (ENABLED,)),
        "seed": Key(integer(0, 2**32 - 1), 0, "the random draws and Optuna's sampler", (ENABLED,)),
        "prune": Key(
            boolean,
            False,
            "optuna: stop trials whose validation metric falls behind (Optuna's median pruner)",
            (ENABLED,),
        ),
        "space": Key(
            _space,
            {},
            "one entry per Config field of train.py: a list of values, or { low, high, log = false, int = false }",
            (ENABLED,),
        ),
    }
}


def monitor_and_mode(values: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """The metric the trials are ranked by and its direction: the sweep's, or else the checkpoint's."""
    sweep, checkpoint = values["sweep"], values["checkpoint"]
    return sweep["monitor"] or checkpoint["monitor"], sweep["mode"] or checkpoint["mode"]


def combinations(space: dict[str, Any]) -> int:
    """The trials of a grid over `space`: the product of its lists' lengths (a range counts as one value)."""
    return math.prod(len(entry) if isinstance(entry, list) else 1 for entry in space.values())


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The sweep's settings; when it is off, the defaults (so keys that do nothing cannot change a byte)."""
    sweep = values["sweep"] if values["sweep"]["enabled"] else {k: key.default for k, key in KEYS["sweep"].items()}
    monitor, mode = monitor_and_mode({**values, "sweep": sweep})
    grid = sweep["method"] == "grid"
    return {
        "sweep": sweep["enabled"],
        "sweep_name": sweep["name"],
        "sweep_method": sweep["method"],
        "sweep_trials": (combinations(sweep["space"]) if grid else sweep["trials"]) if sweep["enabled"] else 0,
        "sweep_parallel": sweep["parallel"],
        "sweep_monitor": monitor,
        "sweep_mode": mode,
        "sweep_seed": sweep["seed"],
        "sweep_prune": sweep["prune"],
        "sweep_space": [_space_entry(name, entry) for name, entry in sweep["space"].items()],
    }


def _space_entry(name: str, entry: list[Any] | dict[str, Any]) -> dict[str, str]:
    """One entry of sweep.py's SPACE: the field, the entry as a Python literal, and what it draws."""
    if isinstance(entry, list):
        value = "[" + ", ".join(map(repr, entry)) + "]"
        return {
            "name": name,
            "value": value,
            "comment": f"one of {len(entry)} values" if len(entry) > 1 else "one value",
        }
    low, high, log, integral = entry["low"], entry["high"], entry.get("log", False), entry.get("int", False)
    value = f'{{"low": {low!r}, "high": {high!r}, "log": {log!r}, "int": {integral!r}}}'
    drawn = ("log-uniform" if log else "uniform") + (" integers" if integral else "")
    return {"name": name, "value": value, "comment": f"{drawn} from {low!r} to {high!r}"}


def _config_fields(values: dict[str, dict[str, Any]]) -> list[Field]:
    """train.py's Config fields for this spec, as ltgen.context declares them (imported here: it gathers the
    features, this one among them)."""
    from ltgen import context

    # Config's fields do not depend on the sweep; the space, not checked yet, is left out of the sweep's flags.
    unswept = {**values, "sweep": {**values["sweep"], "space": {}}}
    return context.declared_fields(context.feature_flags(unswept))


def _value_check(field: Field) -> tuple[Any, str]:
    """The check of one value of `field` (None or what was expected), and what it is named in messages."""
    if not field.source.startswith('"'):
        from ltgen.schema import SCHEMA  # imported here: the schema gathers the features, this one among them

        section, key = field.source.rsplit(".", 1)
        check = SCHEMA[section].keys[key].check

        def spec_check(value: Any) -> str | None:
            expected = check(value)
            return None if expected is None else expected.partition("|")[0]

        return spec_check, f"as [{section}] {key}"
    what = {"str": "a string", "int": "an integer", "float": "a number", "bool": "true or false"}
    expected = what.get(field.type, "a number")  # "int | float": a count or a fraction

    def type_check(value: Any) -> str | None:
        number = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        fits = {
            "str": isinstance(value, str),
            "int": isinstance(value, int) and not isinstance(value, bool),
            "float": number,
            "bool": isinstance(value, bool),
        }.get(field.type, number)
        return None if fits else expected

    return type_check, f"the type of Config's {field.name}"


def _shown(name: str) -> str:
    """A space entry's dotted key, as the spec's problems name keys."""
    return f"sweep.space.{name}" if re.fullmatch(r"[A-Za-z0-9_-]{1,60}", name) else f"sweep.space.{as_toml(name)}"


def _list_problems(field: Field, entry: list[Any]) -> list[str]:
    if not entry:
        return ["expected at least one value, got an empty list"]
    check, source = _value_check(field)
    for value in entry:
        expected = check(value)
        if expected is not None:
            return [f"expected each value to be {expected} ({source}), got {as_toml(value)}"]
    return []


def _range_problems(field: Field, entry: dict[str, Any]) -> list[str]:
    unknown = [key for key in entry if key not in RANGE_KEYS]
    if unknown:
        hint = did_you_mean(unknown[0], RANGE_KEYS)
        shown = f"unknown key {as_toml(unknown[0])} in the range" + (f" ({hint})" if hint else "")
        return [shown + ": a range is { low, high, log = false, int = false }"]
    if field.type in ("bool", "str"):
        example = "[true, false]" if field.type == "bool" else '["a", "b"]'
        return [f"{field.name} is a {field.type} field: give a list of values, such as {example}, not a range"]
    if "low" not in entry or "high" not in entry:
        return ["a range needs low and high: { low = 0.0001, high = 0.1 }"]
    low, high = entry["low"], entry["high"]
    if not all(isinstance(b, int | float) and not isinstance(b, bool) and math.isfinite(b) for b in (low, high)):
        return [f"expected low and high to be finite numbers, got {as_toml(low)} and {as_toml(high)}"]
    for flag in ("log", "int"):
        if not isinstance(entry.get(flag, False), bool):
            return [f"expected {flag} to be true or false, got {as_toml(entry[flag])}"]
    if entry.get("int", False) and field.type == "float":
        return [f"int = true draws integers, but {field.name} is a float field: remove it"]
    integral = entry.get("int", False)
    if field.type == "int" and not integral:
        return [f"{field.name} is an integer field: add int = true to draw integers"]
    if integral and not all(isinstance(b, int) for b in (low, high)):
        return [f"expected integer bounds (an integer range), got {as_toml(low)} and {as_toml(high)}"]
    if low >= high:
        return [f"expected low < high, got low = {as_toml(low)} and high = {as_toml(high)}"]
    if entry.get("log", False) and low <= 0:
        return [f"log = true draws on a log scale: expected low > 0, got {as_toml(low)}"]
    check, source = _value_check(field)
    cast = int if integral else float
    for bound, value in (("low", low), ("high", high)):
        expected = check(cast(value))
        if expected is not None:
            return [f"expected {bound} to be {expected} ({source}), got {as_toml(value)}"]
    # A key's values need not be an interval ("-1: no limit", a lowest count of 1): try the values where ranges
    # have holes, and the middle.
    for probe in sorted({cast(-1), cast(0), cast(1), cast(low + (high - low) / 2)}):
        expected = check(probe) if low < probe < high else None
        if expected is not None:
            between = f"the range from {as_toml(low)} to {as_toml(high)} takes {as_toml(probe)}"
            return [f"{between}, which is not {expected} ({source}): list the values instead"]
    return []


def space_problems(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Each [sweep.space] entry against the Config field it names (checked also with the sweep off: a mistake is
    one whether or not it has an effect yet)."""
    space = values["sweep"]["space"]
    if not space:
        return []
    fields = {field.name: field for field in _config_fields(values)}
    out = []
    for name, entry in space.items():
        key = _shown(name)
        if name in RESERVED:
            out.append((key, f"cannot be swept: {RESERVED[name]}"))
        elif name not in fields:
            hint = did_you_mean(name, fields)
            shown = ", ".join(field for field in fields if field not in RESERVED)
            out.append((key, f"not a Config field of train.py{f' ({hint})' if hint else ''}; its fields: {shown}"))
        elif isinstance(entry, list):
            out += [(key, message) for message in _list_problems(fields[name], entry)]
        elif isinstance(entry, dict):
            out += [(key, message) for message in _range_problems(fields[name], entry)]
        else:
            listed = f"[{as_toml(entry)}]"
            out.append(
                (key, f"expected a list of values such as {listed} or a range {{ low, high }}, got {listed[1:-1]}")
            )
    return out


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The search space, and what an enabled sweep needs: a space its method can search, metrics.csv to rank
    trials by, last.pt to resume them from, and one node per trial."""
    out = space_problems(values)
    wrong = {key for key, _ in out}  # entries with a problem of their own: nothing more to say about them
    sweep = values["sweep"]
    if not sweep["enabled"]:
        return out
    space, method = sweep["space"], sweep["method"]
    if not space:
        out.append(
            ("sweep.enabled", "the search space is empty: add [sweep.space] entries, such as lr = [0.001, 0.0001]")
        )
    if method == "grid":
        out += [
            (_shown(name), 'a grid takes lists of values: list them, or set method = "random" or "optuna" for a range')
            for name, entry in space.items()
            if isinstance(entry, dict) and _shown(name) not in wrong
        ]
        if combinations(space) > MAX_TRIALS:
            fix = 'use fewer values, or method = "random" or "optuna" with trials'
            out.append(
                ("sweep.method", f"a grid of {combinations(space)} combinations is more than {MAX_TRIALS}: {fix}")
            )
    if sweep["prune"] and method != "optuna":
        out.append(("sweep.prune", 'prunes through Optuna: needs method = "optuna"'))
    if not values["logging"]["csv"]:
        out.append(("sweep.enabled", "the report ranks trials by their metrics.csv: needs [logging] csv = true"))
    if not values["checkpoint"]["save_last"]:
        out.append(("sweep.enabled", "interrupted trials resume from last.pt: needs [checkpoint] save_last = true"))
    if values["cluster"]["nodes"] > 1:
        out.append(("sweep.enabled", "a trial runs on one node: needs [cluster] nodes = 1"))
    out += _monitor_problems(values)
    return out


def _monitor_problems(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Trials are ranked by a validation metric the project reports, in a direction meant for it."""
    sweep = values["sweep"]
    monitor, _ = monitor_and_mode(values)
    taken = "" if sweep["monitor"] else f' (empty takes [checkpoint] monitor "{monitor}")'
    out = needs_validation(values, "sweep.enabled", True)
    if values["model"]["arch"] == "gan" and monitor not in GAN_METRICS:
        expected = ", ".join(f'"{metric}"' for metric in GAN_METRICS)
        out.append(("sweep.monitor", f"expected one of the GAN's validation metrics, {expected}{taken}"))
    checkpoint = values["checkpoint"]
    if sweep["monitor"] and sweep["monitor"] != checkpoint["monitor"] and not sweep["mode"]:
        theirs = f'the checkpoint\'s mode "{checkpoint["mode"]}" is for its monitor "{checkpoint["monitor"]}"'
        out.append(("sweep.mode", f'expected "min" or "max" for monitor "{sweep["monitor"]}": {theirs}'))
    return out
