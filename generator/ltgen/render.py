"""Render the project template (copier) and format the Python it emits (black).

`render` returns the whole tree in memory, as {relative posix path: text}: nothing is
written to the project here, and the same spec always gives the same bytes.

copier and black are imported only when something is rendered (`ltgen --help` and `ltgen check`
never pay for them), and black's output is cached on disk, keyed by its input, its version and
its settings: a file black formatted once is not formatted again.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import os
import re
import tempfile
from pathlib import Path

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


def cache_dir() -> Path:
    """ltgen's cache folder: $LTGEN_CACHE_DIR, else ltgen's in the user's cache folder."""
    if "LTGEN_CACHE_DIR" in os.environ:
        return Path(os.environ["LTGEN_CACHE_DIR"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ltgen"


@functools.cache
def black_version() -> str:
    """black's version, from its metadata: importing black to ask takes longer than formatting from the cache."""
    return importlib.metadata.version("black")


def format_python(source: str, path: str) -> str:
    """black, with the emitted project's settings; a syntax error names the template's output file."""
    key = hashlib.sha256(f"{black_version()}\0{context.LINE_LENGTH}\0{source}".encode()).hexdigest()
    cached = _read_cached(key)
    if cached is not None:
        return cached
    import black

    try:
        formatted = black.format_str(source, mode=black.Mode(line_length=context.LINE_LENGTH))
    except black.InvalidInput as error:
        raise RuntimeError(f"template bug: {path} is not valid Python: {error}") from None
    _write_cached(key, formatted)
    return formatted


# A cache entry is "<sha256 of the text>\n<text>": an entry that was cut short or changed does not match, and
# is ignored. Nothing about the cache is ever an error: a folder that cannot be read or written, a full disk,
# or another ltgen writing the same entry at the same moment only means formatting again.


def _read_cached(key: str) -> str | None:
    try:
        digest, _, text = (cache_dir() / "black" / key).read_bytes().partition(b"\n")
        if hashlib.sha256(text).hexdigest().encode() == digest:
            return text.decode()
    except (OSError, UnicodeDecodeError, ValueError):
        pass
    return None


def _write_cached(key: str, text: str) -> None:
    data = text.encode()
    folder = cache_dir() / "black"
    temporary = folder / f".{key}.{os.getpid()}"  # this process's own: os.replace publishes it whole
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temporary.write_bytes(hashlib.sha256(data).hexdigest().encode() + b"\n" + data)
        os.replace(temporary, folder / key)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)


def render(spec: Spec) -> dict[str, str]:
    """The emitted project for `spec` (without ltgen.toml itself)."""
    import copier

    data = context.build(spec)
    with tempfile.TemporaryDirectory(prefix="ltgen-render-") as scratch:
        copier.run_copy(
            str(templates_dir()),
            scratch,
            data=data,
            defaults=True,
            overwrite=True,
            quiet=True,
            unsafe=True,  # copier.yml names a Jinja extension of ltgen's own: ltgen.jinja_cache.CompiledTemplates
            settings=copier.Settings(),
        )
        tree = {}
        for path in sorted(Path(scratch).rglob("*")):
            if path.is_file():
                relative = path.relative_to(scratch).as_posix()
                text = path.read_text(encoding="utf-8")
                tree[relative] = format_python(text, relative) if relative.endswith(".py") else text
    return tree
