"""Turn a validated spec into the template context: plain flags and ready-to-paste values.

Templates only test flags and paste values, so every decision lives here and in the features
(ltgen.features), which this module gathers: their flags, the code their fragments paste, the units they
turn on, train.py's imports, the Config fields and the checkpoint state. Values that reach Python code are
`repr` literals of validated numbers and strings: no spec value can change the code around it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ltgen.features import FEATURES, UNIT_ORDER
from ltgen.schema import LAYOUT, SCHEMA
from ltgen.spec import Spec
from ltgen.unit import Field

LINE_LENGTH = 120  # black's, in the generator and in the emitted project's pyproject.toml
LOCAL_MODULES = (
    "checkpoint",
    "data",
    "distributed",
    "flags",
    "loggers",
    "manual",
    "model",
    "runs",
    "steps",
    "tune",
)  # the project's own
THIRD_PARTY = ("torch", "tqdm")


def build(spec: Spec) -> dict[str, Any]:
    """The context for rendering `templates/` (its keys are the values listed in copier.yml)."""
    f = feature_flags(spec.values)
    fields = config_fields(spec, f)
    _add(f, {"config_fields": fields, "config_checks": config_checks(fields)}, __name__)
    overrides = ", ".join(f"{x['name']}={x['fast_dev_run']}" for x in fields if x["fast_dev_run"])
    _add(f, {"fast_dev_run": overrides}, __name__)
    for feature in FEATURES:
        _add(f, _call(feature, "paste", f, {}), feature.__name__)
    enabled = {unit for feature in FEATURES for unit, on in _call(feature, "units", f, {}).items() if on}
    if enabled - set(UNIT_ORDER):
        raise RuntimeError(f"units missing from features.UNIT_ORDER: {', '.join(sorted(enabled - set(UNIT_ORDER)))}")
    state = [dataclasses.asdict(entry) for feature in FEATURES for entry in _call(feature, "state", f, [])]
    lines = [line for feature in FEATURES for line in _call(feature, "imports", f, [])]
    _add(f, {"units": [u for u in UNIT_ORDER if u in enabled], "checkpoint_state": state}, __name__)
    _add(f, {"imports": import_block(lines)}, __name__)
    return f


def feature_flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every feature's flags for these spec values: what their fields, code and units are decided by."""
    f: dict[str, Any] = {"project_name": values["project"]["name"], "line_length": LINE_LENGTH}
    for feature in FEATURES:
        _add(f, _call(feature, "flags", values, {}), feature.__name__)
    return f


def _call(feature: Any, name: str, argument: Any, default: Any) -> Any:
    function = getattr(feature, name, None)
    return function(argument) if function else default


def _add(context: dict[str, Any], values: dict[str, Any], owner: str) -> None:
    """Add a feature's values; two features giving the same name is a generator bug."""
    clash = sorted(set(context) & set(values))
    if clash:
        raise RuntimeError(f"{owner} sets context values another feature set: {', '.join(clash)}")
    context.update(values)


def import_block(lines: list[str]) -> str:
    """Import lines merged and sorted as ruff's isort sorts them: the standard library, third parties, the
    project's own modules; in each, `import x` before `from x import y`, and imported names constants first,
    then classes, then functions."""
    names: dict[str, list[str]] = {}
    straight = set()
    for line in lines:
        if line.startswith("from "):
            module, _, imported = line.removeprefix("from ").partition(" import ")
            names.setdefault(module, []).extend(imported.split(", "))
        else:
            straight.add(line)
    groups: list[list[str]] = [[], [], []]
    for line in sorted(straight, key=lambda line: line.split()[1].lower()):
        groups[_group(line.split()[1])].append(line)
    for module in sorted(names, key=str.lower):
        imported = sorted(set(names[module]), key=lambda n: (not n.isupper(), not n[:1].isupper(), n.lower()))
        groups[_group(module)].append(f"from {module} import {', '.join(imported)}")
    return "\n\n".join("\n".join(group) for group in groups if group)


def _group(module: str) -> int:
    top = module.split(".")[0]
    return 2 if top in LOCAL_MODULES else 1 if top in THIRD_PARTY else 0


# Where each spec key stands in the spec: Config lists its fields in the same order.
POSITIONS = {f"{section}.{key}": i for i, (section, key) in enumerate((s, k) for s in LAYOUT for k in LAYOUT[s])}


def declared_fields(f: dict[str, Any]) -> list[Field]:
    """The Config fields the features declare for their flags `f`, in the spec's order (the sweep's space names
    them too)."""
    declared: list[Field] = [field for feature in FEATURES for field in _call(feature, "fields", f, [])]
    return sorted(declared, key=lambda field: POSITIONS[field.position or field.source])


def config_fields(spec: Spec, f: dict[str, Any]) -> list[dict[str, Any]]:
    """The emitted Config dataclass, field by field: only the settings of features that are on, in the spec's
    order. A field takes its value and comment from the spec key it names; a comment that would make the line
    too long goes on the line above it."""
    fields = []
    for field in declared_fields(f):
        if field.source.startswith('"'):
            value, comment = field.source, field.comment
        else:
            section, key = field.source.rsplit(".", 1)
            value, comment = repr(spec[section][key]), SCHEMA[section].keys[key].doc
        if field.type == "float" and not any(c in value for c in ".en"):
            value += ".0"  # an int in the spec (lr = 1) is still a float here
        line = f"    {field.name}: {field.type} = {value}  # {comment}"
        fields.append(
            {
                "name": field.name,
                "type": field.type,
                "value": value,
                "comment": comment,
                "comment_above": len(line) > LINE_LENGTH,
                "check": field.check,
                "expected": field.expected,
                "fast_dev_run": field.fast_dev_run,
            }
        )
    return fields


def config_checks(fields: list[dict[str, Any]]) -> list[dict[str, str]]:
    """For flags.py: the check of every Config field that has one, as code on `cfg`. train.py checks every
    field (flags included) before any work, so a typo fails in a second with one line, not after an epoch."""
    return [
        {"name": x["name"], "condition": x["check"].format(v=f"cfg.{x['name']}"), "expected": x["expected"]}
        for x in fields
        if x["check"]
    ]
