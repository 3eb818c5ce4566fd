"""Reading a spec: parse TOML text against the schema and the rules, and point each problem at its line."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltgen.checks import SHOWN_LENGTH, as_toml, did_you_mean
from ltgen.problems import NoEffect, Problem, SpecError
from ltgen.rules import cross_checks, no_effect
from ltgen.schema import SCHEMA

SPEC_FILE = "ltgen.toml"
HINTED_PROBLEMS = 100  # unknown names past this many problems get no did-you-mean (difflib is slow)
BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Spec:
    """A validated spec: `spec["trainer"]["max_epochs"]`, every key present; `warnings`: its keys set where they
    have no effect, by line."""

    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: tuple[NoEffect, ...] = field(default=(), compare=False)

    def __getitem__(self, section: str) -> dict[str, Any]:
        return self.values[section]


def _shown_key(key: str) -> str:
    """A key from the spec as TOML writes it: bare when it can be, else quoted (and cut short)."""
    return key if len(key) <= SHOWN_LENGTH and BARE_KEY.fullmatch(key) else as_toml(key)


def _dotted(key: str) -> str:
    """A TOML key or table name as written (`"cluster" . slurm`) -> its dotted path (`cluster.slurm`)."""
    return ".".join(part.strip().strip("\"'") for part in key.split("."))


def _line_index(text: str) -> dict[tuple[str, str], int]:
    """The first line of each (table, key) and, with key "", of each [table] header: best effort, in one pass."""
    index: dict[tuple[str, str], int] = {}
    table = ""
    for number, line in enumerate(text.split("\n"), start=1):
        stripped = line.strip()
        if stripped.startswith("[") and not stripped.startswith("[["):
            table = _dotted(stripped[1:].partition("]")[0])
            index.setdefault((table, ""), number)
            continue
        key, equals, _ = stripped.partition("=")
        if equals:
            index.setdefault((table, _dotted(key)), number)
    return index


def _line_of(index: dict[tuple[str, str], int], section: str, key: str) -> int | None:
    """The line of `key` in `[section]`, also when written as a dotted key in a table above it (None: unknown)."""
    parts = section.split(".")
    for split in range(len(parts), -1, -1):
        table, prefix = ".".join(parts[:split]), ".".join(parts[split:])
        dotted = ".".join(p for p in (prefix, key) if p)
        if (table, dotted) in index:
            return index[(table, dotted)]
    return index.get((".".join(p for p in (section, key) if p), ""))  # a key that is a [table] of its own


def parse(text: str, file: str = SPEC_FILE) -> Spec:
    """Parse and validate spec text; raise SpecError listing every problem."""
    if text.startswith("\ufeff"):
        raise SpecError([Problem(file, "", "starts with a byte order mark (BOM): save it as UTF-8 without one", 1)])
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        match = re.search(r"line (\d+)", str(error))
        raise SpecError(
            [Problem(file, "", f"not valid TOML: {error}", int(match.group(1)) if match else None)]
        ) from None
    except RecursionError:
        raise SpecError([Problem(file, "", "arrays or tables nested too deeply to be read")]) from None

    problems: list[Problem] = []
    lines = _line_index(text)

    def problem(section: str, key: str, message: str) -> None:
        path = ".".join(name if name in SCHEMA else _shown_key(name) for name in (section, key) if name)
        problems.append(Problem(file, path, message, _line_of(lines, section, key)))

    values: dict[str, dict[str, Any]] = {}
    for name, section in SCHEMA.items():
        table = _lookup(document, name)
        if table is not None and not isinstance(table, dict):
            problem(name, "", f"expected a table [{name}], got {as_toml(table)}")
            table = None
        table = table or {}
        values[name] = {}
        for key, spec_key in section.keys.items():
            value = table.get(key, spec_key.default)
            expected = spec_key.check(value)
            if expected is not None:
                expected, _, hint = expected.partition("|")
                problem(name, key, f"expected {expected}, got {as_toml(value)}" + (f" ({hint})" if hint else ""))
            values[name][key] = value
        subsections = [s.split(".", 1)[1] for s in SCHEMA if s.startswith(name + ".")]
        for key in table:
            if key not in section.keys and key not in subsections:
                hint = did_you_mean(key, [*section.keys, *subsections]) if len(problems) < HINTED_PROBLEMS else ""
                problem(name, key, f"unknown key ({hint})" if hint else "unknown key")
    top_level = [name for name in SCHEMA if "." not in name]
    for name in document:
        if name not in top_level:
            hint = did_you_mean(name, top_level) if len(problems) < HINTED_PROBLEMS else ""
            problem(name, "", f"unknown section{f' ({hint})' if hint else ''}; sections: " + ", ".join(top_level))

    if not problems:
        problems += [
            Problem(file, key, message, _line_of(lines, *key.rsplit(".", 1))) for key, message in cross_checks(values)
        ]
    if problems:
        raise SpecError(sorted(problems, key=_by_line))
    warnings = [
        NoEffect(file, key, message, _line_of(lines, *key.rsplit(".", 1))) for key, message in no_effect(values)
    ]
    return Spec(values, tuple(sorted(warnings, key=_by_line)))


def _by_line(found: Problem | NoEffect) -> tuple[bool, int]:
    """Sorts by line, those with none last (a stable sort keeps the order of those on one line)."""
    return found.line is None, found.line or 0


def _lookup(document: dict[str, Any], dotted: str) -> Any:
    node: Any = document
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def read(path: Path) -> str:
    """The text of a spec file: SpecError if it is not UTF-8, OSError if it cannot be read."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        message = f"not UTF-8 text (byte {data[error.start]:#04x}): save it as UTF-8"
        raise SpecError([Problem(str(path), "", message, line)]) from None


def load(path: Path) -> Spec:
    """Read and validate a spec file."""
    return parse(read(path), file=str(path))
