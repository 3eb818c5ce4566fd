"""Helpers for the regen tests: the CLI in-process with cached renders, tree snapshots, hand edits."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from click.testing import Result
from typer.testing import CliRunner

from ltgen import place, render
from ltgen.cli import app
from ltgen.spec import Spec, default_text, parse, with_values

RUNNER = CliRunner()
_render = render.render
Edit = Callable[[str], str]


@functools.cache
def _rendered(values: str) -> tuple[tuple[str, str], ...]:
    return tuple(_render(Spec(json.loads(values))).items())


def cached_render(spec: Spec) -> dict[str, str]:
    """render.render, remembered per spec: the same output, without the ~0.4 s a render takes."""
    return dict(_rendered(json.dumps(spec.values, sort_keys=True)))


def rendered(spec_text: str) -> dict[str, str]:
    """The tree rendered from spec text (cached)."""
    return cached_render(parse(spec_text))


def make_project(path: Path, updates: dict[str, Any] | None = None) -> Path:
    """A project as `ltgen new` writes it, named after its folder, from the default spec with updates."""
    text = with_values(default_text(path.name), updates or {})
    place.write_new(rendered(text), text, path)
    return path


def ltgen(*args: str | Path) -> Result:
    """Run `ltgen ARGS` in-process, as a user would, with cached renders."""
    with mock.patch.object(render, "render", cached_render):
        return RUNNER.invoke(app, [str(arg) for arg in args], catch_exceptions=False)


def tree(folder: Path) -> dict[str, bytes]:
    """Every file under folder, hidden ones included, by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def mtimes(folder: Path) -> dict[str, int]:
    return {p.relative_to(folder).as_posix(): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def texts(folder: Path) -> dict[str, str]:
    return {path: data.decode() for path, data in tree(folder).items()}


def edit_spec(project: Path, updates: dict[str, Any]) -> str:
    """Set dotted keys in the project's ltgen.toml, as a user would; return the new spec text."""
    path = project / "ltgen.toml"
    text = with_values(path.read_text(), updates)
    path.write_text(text)
    return text


def line_with(text: str, fragment: str) -> str:
    """The one line of text that contains fragment."""
    lines = [line for line in text.splitlines() if fragment in line]
    assert len(lines) == 1, f"{fragment!r} is on {len(lines)} lines"
    return lines[0]


def replacing(fragment: str, new_line: str) -> Edit:
    """An edit that replaces the line containing fragment by new_line."""
    return lambda text: text.replace(line_with(text, fragment) + "\n", new_line + "\n", 1)


def inserting_before(fragment: str, new_line: str) -> Edit:
    """An edit that inserts new_line above the line containing fragment."""
    return lambda text: text.replace(
        line_with(text, fragment) + "\n", new_line + "\n" + line_with(text, fragment) + "\n"
    )


def appending(block: str) -> Edit:
    return lambda text: text + block


def edit_file(project: Path, relative: str, *edits: Edit) -> str:
    """Apply edits to a file of the project, as a user would; return its new text."""
    path = project / relative
    text = path.read_text()
    for edit in edits:
        changed = edit(text)
        assert changed != text, f"edit did not apply to {relative}"
        text = changed
    path.write_text(text)
    return text
