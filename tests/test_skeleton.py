"""The loop template is a short skeleton of slots, and each feature's code lives in its own fragment file.

train.py.jinja holds the code every project has and `{{ slot("name") }}` lines; templates/features/UNIT.py.jinja
holds each unit's code, as macros named after the slots they fill (generator/ltgen/slots.py). These tests keep it
that way: the skeleton stays short and tests no feature flag, every fragment fills a slot that exists, every
enabled unit has a fragment file, and a slot with a single owner refuses two owners or none."""

from __future__ import annotations

import re
from pathlib import Path

import jinja2
import pytest

from conftest import ROOT, spec_text
from ltgen import context, slots, spec
from ltgen.features import UNIT_ORDER

TEMPLATES = ROOT / "templates"
SKELETON = TEMPLATES / "project" / "train.py.jinja"
FRAGMENTS = TEMPLATES / "features"
LEXER = jinja2.Environment(trim_blocks=True, lstrip_blocks=True)


def statement_tags(path: Path) -> list[str]:
    """The text of every {% ... %} tag in a template, as Jinja's own lexer finds them."""
    tags, current = [], None
    for _, kind, value in LEXER.lex(path.read_text()):
        if kind == "block_begin":
            current = []
        elif kind == "block_end" and current is not None:
            tags.append(" ".join(current))
            current = None
        elif current is not None and value.strip():
            current.append(value)
    return tags


def slots_used(text: str) -> set[str]:
    return set(re.findall(r'\{\{ slot\("(\w+)"\) \}\}', text))


def test_the_skeleton_is_short_with_few_statement_tags() -> None:
    assert len(SKELETON.read_text().splitlines()) <= 250
    assert len(statement_tags(SKELETON)) <= 100


def test_the_skeleton_tests_no_feature_flag() -> None:
    """Its only statements are the Config loop and the layout of a field's comment: features decide in their units."""
    conditions = [tag for tag in statement_tags(SKELETON) if tag.startswith(("if", "elif"))]
    assert conditions and all(re.fullmatch(r"(el)?if field \. comment(_above)?", tag) for tag in conditions), conditions
    expressions = re.findall(r"\{\{(.*?)\}\}", SKELETON.read_text())
    assert not [e for e in expressions if re.search(r"\bif\b", e)], "a conditional expression tests a flag"


def test_no_template_file_is_over_300_lines() -> None:
    long = {
        str(p.relative_to(TEMPLATES)): n
        for p in TEMPLATES.rglob("*.jinja")
        if (n := len(p.read_text().splitlines())) > 300
    }
    assert not long


def test_no_generator_module_is_over_400_lines() -> None:
    modules = (ROOT / "generator" / "ltgen").rglob("*.py")
    long = {p.name: n for p in modules if (n := len(p.read_text().splitlines())) > 400}
    assert not long


def test_every_fragment_fills_a_slot_some_template_has() -> None:
    """A macro named after a slot no template has would never render: a typo, caught here."""
    templates = [p for p in TEMPLATES.rglob("*.jinja")]
    available = set().union(*(slots_used(p.read_text()) for p in templates))
    for fragment in FRAGMENTS.glob("*.py.jinja"):
        macros = set(re.findall(r"\{% macro (\w+)\(\) %\}", fragment.read_text()))
        assert macros, f"{fragment.name} fills no slot"
        assert macros <= available, f"{fragment.name}: {sorted(macros - available)} are no slot's names"


def test_every_unit_has_a_fragment_file_and_every_fragment_file_is_a_unit() -> None:
    files = {p.name.removesuffix(".py.jinja") for p in FRAGMENTS.glob("*.py.jinja")}
    assert set(UNIT_ORDER) == files


def test_the_slots_with_a_single_owner_are_slots() -> None:
    used = set().union(*(slots_used(p.read_text()) for p in TEMPLATES.rglob("*.jinja")))
    assert slots.SINGLE_OWNER <= used


def fragment_environment(fragments: dict[str, str]) -> jinja2.Environment:
    loader = jinja2.DictLoader({f"features/{unit}.py.jinja": text for unit, text in fragments.items()})
    return jinja2.Environment(
        loader=loader, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, extensions=[slots.Slots]
    )


def test_a_slot_indents_each_unit_code_to_its_column_in_unit_order_and_leaves_no_line_when_empty() -> None:
    env = fragment_environment(
        {
            "first": "{% macro body() %}\nif x:\n    y()\n{% endmacro %}",
            "second": "{% macro body() %}\nz()\n{% endmacro %}",
            "early": '{% set order = {"body": -1} %}\n{% macro body() %}\nw()\n{% endmacro %}',
        }
    )
    skeleton = 'def f():\n    {{ slot("body") }}\n    {{ slot("nothing") }}\n    return\n'
    text = env.from_string(skeleton).render(units=["first", "second", "early"])
    assert text == "def f():\n    w()\n    if x:\n        y()\n    z()\n    return\n"


def test_a_single_owner_slot_with_two_owners_or_none_is_a_render_error() -> None:
    env = fragment_environment(
        {"a": "{% macro forward() %}\na()\n{% endmacro %}", "b": "{% macro forward() %}\nb()\n{% endmacro %}"}
    )
    template = env.from_string('{{ slot("forward") }}\n')
    assert template.render(units=["a"]) == "a()\n"
    with pytest.raises(jinja2.TemplateRuntimeError, match="exactly one owner.*'a', 'b'"):
        template.render(units=["a", "b"])
    with pytest.raises(jinja2.TemplateRuntimeError, match="exactly one owner"):
        env.from_string('{{ slot("forward") }}\n').render(units=[])


def test_no_slot_is_named_like_a_context_value() -> None:
    """Inside a fragment file its macros shadow the context: a slot named `test` would turn the `test` flag of
    that file's other fragments into a macro, always true."""
    values = set(context.build(spec.parse(spec_text("x", {"cluster.gpus": 2, "trainer.manual_optimization": True}))))
    slot_names = set().union(*(slots_used(p.read_text()) for p in TEMPLATES.rglob("*.jinja")))
    assert not slot_names & values


def test_every_order_a_fragment_gives_names_a_slot_it_fills() -> None:
    for fragment in FRAGMENTS.glob("*.py.jinja"):
        text = fragment.read_text()
        order = re.search(r"\{% set order = (\{.*?\}) %\}", text)
        if order:
            macros = set(re.findall(r"\{% macro (\w+)\(\) %\}", text))
            assert set(re.findall(r'"(\w+)"', order[1])) <= macros, fragment.name


def test_a_slot_written_inside_other_text_is_a_render_error_not_misplaced_code() -> None:
    env = fragment_environment({"a": "{% macro body() %}\nx()\n{% endmacro %}"})
    with pytest.raises(jinja2.TemplateRuntimeError, match="on a line of its own"):
        env.from_string('    y = 1; {{ slot("body") }}\n').render(units=["a"])
