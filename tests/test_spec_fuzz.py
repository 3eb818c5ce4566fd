"""Property: whatever TOML a user writes (keys of the schema and others, values of any type: non-finite, huge,
unicode, control characters, nested tables and arrays, broken text), `ltgen check` answers within a second with
exit 0 or 2, never a traceback; every spec it accepts renders to Python that parses, and a few of them train.

In CI the runs are derandomized and sized to take about a minute. For a deeper search, with a fresh random seed:

    LTGEN_FUZZ_EXAMPLES=50000 python -m pytest tests/test_spec_fuzz.py
"""

from __future__ import annotations

import ast
import itertools
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import tomlkit
import typer
from click.testing import CliRunner
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from conftest import run_python
from ltgen import place, render
from ltgen.cli import app
from ltgen.spec import HOOKS, SCHEMA, Spec, SpecError, parse

settings.register_profile(
    "ltgen-spec-fuzz",
    max_examples=2000,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
DEEP_EXAMPLES = int(os.environ.get("LTGEN_FUZZ_EXAMPLES", "0"))
if DEEP_EXAMPLES:
    settings.register_profile(
        "ltgen-spec-fuzz-deep", settings.get_profile("ltgen-spec-fuzz"), max_examples=DEEP_EXAMPLES, derandomize=False
    )
FUZZ = settings.get_profile("ltgen-spec-fuzz-deep" if DEEP_EXAMPLES else "ltgen-spec-fuzz")
RENDERED_EXAMPLES = max(50, DEEP_EXAMPLES // 40)
TRAINED_EVERY = 10  # of the rendered specs, train every 10th (about 5 in CI)
RUNNER, LTGEN = CliRunner(), typer.main.get_command(app)  # the click command, built once (typer rebuilds it per call)

# Words the schema's keys may take: every "quoted" word of its docs, and a few more.
WORDS = sorted(
    {word for section in SCHEMA.values() for key in section.keys.values() for word in re.findall(r'"([^"]*)"', key.doc)}
    | {"val_loss", "val_acc", "val_f1", "USR1", "USR2", "04:00:00", "2-00:00:00", "30", "1:00", "", "--mem=64G"}
    | {"demo", "x" * 65, "val_", "1st", "my project", "१२:००:००", "NaN", "inf"}
)
EDGE_INTEGERS = [-(2**63), -2, -1, 0, 1, 2, 3, 7, 64, 3600, 2**31, 2**32 - 1, 2**32, 2**63, 10**9, 10**9 + 1, 10**23]
EDGE_FLOATS = [0.0, -0.0, 1e-9, 0.1, 0.5, 0.999, 1.0, 1.5, 1e308, float("inf"), float("-inf"), float("nan")]
WILD_TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.text(
    st.characters(max_codepoint=0x7F), min_size=1, max_size=6
)

SCALARS = st.one_of(
    st.booleans(),
    st.integers(-3, 100),
    st.integers(),
    st.sampled_from(EDGE_INTEGERS),
    st.floats(),
    st.sampled_from(EDGE_FLOATS),
    st.sampled_from(WORDS),
    WILD_TEXT,
    st.dates(),
    st.times(),
)
KEYS = st.sampled_from(sorted({key for section in SCHEMA.values() for key in section.keys} | set(SCHEMA))) | WILD_TEXT
ANY_VALUE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=8,
)


def plausible(default: Any) -> st.SearchStrategy[Any]:
    """Values near what a key takes: of its default's type, in and just out of its range."""
    if isinstance(default, bool):
        return st.booleans()
    if isinstance(default, int):
        return st.integers(0, 4) | st.integers(1, max(2 * default, 16)) | st.sampled_from(EDGE_INTEGERS)
    if isinstance(default, float):
        return st.floats(0, 1) | st.sampled_from(EDGE_FLOATS) | st.integers(0, 3)
    if isinstance(default, str):
        return st.sampled_from(WORDS)
    if isinstance(default, list):
        return st.lists(st.integers(1, 256), max_size=5) | st.lists(st.sampled_from(sorted(HOOKS)), max_size=3)
    return st.nothing()


PLAUSIBLE = {name: {key: plausible(k.default) for key, k in section.keys.items()} for name, section in SCHEMA.items()}
WILD = {name: {key: values | ANY_VALUE for key, values in keys.items()} for name, keys in PLAUSIBLE.items()}
SECTION_NAMES = st.lists(st.sampled_from(list(SCHEMA)), unique=True)
KEY_NAMES = {
    name: st.lists(st.sampled_from(list(section.keys)), unique=True, max_size=4) for name, section in SCHEMA.items()
}
MORE = st.dictionaries(KEYS, ANY_VALUE, max_size=1)  # keys and sections outside the schema


@st.composite
def sections(draw: st.DrawFn, values: str) -> dict[str, Any]:
    """A spec as a dict: some sections of the schema with a few of their keys; values 'plausible' or 'any'.

    With 'any', also values of any type or nesting, and keys and sections outside the schema.
    """
    document: dict[str, Any] = {}
    for name in draw(SECTION_NAMES):
        strategies = (WILD if values == "any" else PLAUSIBLE)[name]
        table = {key: draw(strategies[key]) for key in draw(KEY_NAMES[name])}
        if values == "any":
            table |= draw(MORE)
        parent, _, sub = name.rpartition(".")
        holder = document.setdefault(parent, {}) if parent else document
        if isinstance(holder, dict):
            holder[sub] = table
    if values == "any":
        document |= draw(MORE)
    return document


def toml_text(document: dict[str, Any]) -> str | None:
    """The document as TOML, or None where tomlkit cannot write it (a limit of the test's writer, not of ltgen)."""
    try:
        return tomlkit.dumps(document)
    except (ValueError, TypeError, KeyError):
        return None


@st.composite
def spec_files(draw: st.DrawFn) -> bytes:
    """The bytes of a spec file: a TOML document, sometimes broken by an edit a user or a disk could make."""
    text = toml_text(draw(sections("any")))
    assume(text is not None)
    edit = draw(st.sampled_from(["none", "none", "insert", "cut", "bytes"]))
    at = draw(st.integers(0, len(text)))
    if edit == "insert":
        text = (
            text[:at]
            + draw(st.sampled_from(["\n[", "[[x]]\n", "\n[trainer]\n", '"""', "\r", "=", "\0"]) | WILD_TEXT)
            + text[at:]
        )
    elif edit == "cut":
        text = text[:at]
    data = text.encode("utf-8")
    if edit == "bytes":
        data = draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\x00"])) + data[at:]
    return data


def timed_check(path: Path) -> tuple[int, float]:
    """`ltgen check path` in-process: its exit status and how long it took; an exception fails the test."""
    start = time.perf_counter()
    result = RUNNER.invoke(LTGEN, ["check", str(path)], catch_exceptions=False)
    return result.exit_code, time.perf_counter() - start


@FUZZ
@given(data=spec_files())
def test_the_check_of_any_spec_exits_0_or_2_within_a_second(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "ltgen.toml"
        path.write_bytes(data)
        status, seconds = timed_check(path)
    event(f"exit {status}")
    assert status in (0, 2)
    assert seconds < 1.0, f"ltgen check took {seconds:.2f} s"


def quick_to_train(spec: Spec) -> bool:
    """Whether one batch trains in seconds: no torch.compile (a minute), few workers, a small synthetic set."""
    return (
        not spec["trainer"]["compile"]
        and spec["data"]["num_workers"] <= 2
        and spec["data"]["synthetic_samples"] <= 60000
    )


accepted = itertools.count(1)  # specs accepted so far: every TRAINED_EVERY-th of them trains


@settings(FUZZ, max_examples=RENDERED_EXAMPLES)
@given(document=sections("plausible"))
def test_every_accepted_spec_renders_python_that_parses_and_some_train(document: dict[str, Any]) -> None:
    text = toml_text(document)
    assume(text is not None)
    try:
        spec = parse(text)
    except SpecError:
        spec = None
    assume(spec is not None)
    tree = render.render(spec)
    assert set(tree) <= render.emittable_paths(), "regen may delete every file ltgen writes"
    for relative, source in tree.items():
        if relative.endswith(".py"):
            ast.parse(source, filename=relative)
    if next(accepted) % TRAINED_EVERY or not quick_to_train(spec):
        return
    with tempfile.TemporaryDirectory() as scratch:
        project = Path(scratch) / "fuzzed"
        place.write_new(tree, text, project)
        done = run_python(project, "train.py", "--fast-dev-run", "--dataset", "synthetic", "--device", "cpu")
    assert done.returncode == 0, f"{text}\n{done.stdout}\n{done.stderr}"
