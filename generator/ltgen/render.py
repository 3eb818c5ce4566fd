"""Render the project template (copier) and format the Python it emits (black).

`render` returns the whole tree in memory, as {relative posix path: text}: nothing is
written to the project here, and the same spec always gives the same bytes.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import black
import copier

from ltgen import context
from ltgen.spec import Spec

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATE_SUBDIRECTORY, TEMPLATE_SUFFIX = "project", ".jinja"  # copier.yml's _subdirectory and _templates_suffix
JINJA_TAG = re.compile(r"{%.*?%}")


def templates_dir() -> Path:
    """The copier template: shipped inside the wheel, or templates/ in a source checkout."""
    for candidate in (PACKAGE_DIR / "templates", PACKAGE_DIR.parents[1] / "templates"):
        if (candidate / "copier.yml").is_file():
            return candidate
    raise FileNotFoundError(f"ltgen's templates are missing (looked in {PACKAGE_DIR / 'templates'})")


def emittable_paths() -> frozenset[str]:
    """Every path the template can emit for some spec: its file names, each `{% if %}` in them taken as true.

    regen deletes only these: a path in .ltgen/base.json that ltgen never generates is not its file to delete.
    """
    root = templates_dir() / TEMPLATE_SUBDIRECTORY
    names = (JINJA_TAG.sub("", path.relative_to(root).as_posix()) for path in root.rglob("*") if path.is_file())
    return frozenset(name.removesuffix(TEMPLATE_SUFFIX) for name in names if "{" not in name)


def format_python(source: str, path: str) -> str:
    """black, with the emitted project's settings; a syntax error names the template's output file."""
    try:
        return black.format_str(source, mode=black.Mode(line_length=context.LINE_LENGTH))
    except black.InvalidInput as error:
        raise RuntimeError(f"template bug: {path} is not valid Python: {error}") from None


def render(spec: Spec) -> dict[str, str]:
    """The emitted project for `spec` (without ltgen.toml itself)."""
    data = context.build(spec)
    with tempfile.TemporaryDirectory(prefix="ltgen-render-") as scratch:
        copier.run_copy(
            str(templates_dir()),
            scratch,
            data=data,
            defaults=True,
            overwrite=True,
            quiet=True,
            settings=copier.Settings(),
        )
        tree = {}
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                relative = path.relative_to(scratch).as_posix()
                text = path.read_text(encoding="utf-8")
                tree[relative] = format_python(text, relative) if relative.endswith(".py") else text
    return tree
