"""Named slots: the places in a skeleton template where the enabled features put their code.

A skeleton writes a slot as a line of its own, `{{ slot("after_step") }}`, indented where the code belongs.
Each feature's fragments live in `templates/features/UNIT.py.jinja` as macros named after the slots they fill,
written at column 0. The slot renders, in the order of the context's `units`, the macro of every unit that has
one, indented to the slot's column; a slot no unit fills leaves no line behind. A slot with a single owner
(`SINGLE_OWNER`) must be filled by exactly one unit: two strategies both writing the forward pass, or none,
is a generator bug reported at render time rather than code that silently does both or neither.

This module is a Jinja extension (copier.yml lists it), so copier's own environment renders the slots.
"""

from __future__ import annotations

import re
import textwrap
from typing import Any

from jinja2 import Environment, TemplateRuntimeError, pass_context
from jinja2.ext import Extension
from jinja2.runtime import Context

FRAGMENTS = "features/{unit}.py.jinja"
SLOT_LINE = re.compile(r'^( *)\{\{ slot\("(\w+)"\) \}\}\n', re.MULTILINE)

# Slots whose code one unit owns: the ways to do one thing, of which a project has exactly one.
SINGLE_OWNER = frozenset(
    {
        "device",
        "optimizers",
        "forward",
        "optimizer_step",
        "read_loss",
        "checkpoint_write",
        "load_best",
        "remove_checkpoint",
        "entry",
    }
)


class Slots(Extension):
    """Adds `slot(name)` to the environment, and gives each slot line its column."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        environment.globals["slot"] = fill_slot

    def preprocess(self, source: str, name: str | None, filename: str | None = None) -> str:
        """`    {{ slot("x") }}` on a line of its own -> `{{ slot("x", 4) }}` in place of the whole line."""
        return SLOT_LINE.sub(lambda match: f'{{{{ slot("{match[2]}", {len(match[1])}) }}}}', source)


@pass_context
def fill_slot(context: Context, name: str, indent: int | None = None) -> str:
    """The code of every enabled unit for slot `name`, in unit order, indented by `indent` spaces (which the slot
    line's own indentation gives: a slot written any other way is an error, not code at the wrong depth)."""
    if indent is None:
        raise TemplateRuntimeError(f'slot {name!r} must stand on a line of its own, written {{{{ slot("{name}") }}}}')
    pieces = [str(macro()) for macro in _macros(context, name)]
    if name in SINGLE_OWNER and len(pieces) != 1:
        owners = [unit for unit in context["units"] if hasattr(_module(context, unit), name)]
        raise TemplateRuntimeError(f"slot {name!r} needs exactly one owner among the enabled units, got {owners}")
    return textwrap.indent("".join(pieces), " " * indent)


def _macros(context: Context, name: str) -> list[Any]:
    """The units' macros for slot `name`, by the position a unit gives them (0 unless its `order` says), then unit."""
    found = []
    for unit in context["units"]:
        module = _module(context, unit)
        if hasattr(module, name):
            found.append((getattr(module, "order", {}).get(name, 0), getattr(module, name)))
    return [macro for _, macro in sorted(found, key=lambda pair: pair[0])]


def _module(context: Context, unit: str) -> Any:
    """The unit's fragment file as a module of macros, made once per rendered file (they see its context)."""
    modules = context.vars.setdefault("_slot_modules", {})
    if unit not in modules:
        template = context.environment.get_template(FRAGMENTS.format(unit=unit))
        modules[unit] = template.make_module(context.get_all())
    return modules[unit]
