"""Compiled templates kept between runs: copier builds its Jinja environment itself, and an extension named in
copier.yml is how a template configures it. Rendering compiles about 45 templates; loading them compiled
instead saves a third of the render's time.

Nothing about the cache is ever an error: a folder that cannot be read or written, a full disk, or a damaged
entry only means compiling again. Jinja keys each entry by the template's name and checks its source, so a
changed template is compiled afresh.
"""

from __future__ import annotations

import contextlib
import hashlib
from pathlib import Path

from jinja2 import Environment
from jinja2.bccache import Bucket, FileSystemBytecodeCache
from jinja2.ext import Extension

from ltgen import __version__, slots
from ltgen.render import cache_dir


class QuietBytecodeCache(FileSystemBytecodeCache):
    """Jinja's file cache, with every failure to load or save an entry ignored."""

    def load_bytecode(self, bucket: Bucket) -> None:
        try:
            super().load_bytecode(bucket)
        except Exception:  # noqa: BLE001 (a damaged entry can fail in marshal or pickle in many ways)
            bucket.reset()

    def dump_bytecode(self, bucket: Bucket) -> None:
        with contextlib.suppress(OSError):
            super().dump_bytecode(bucket)


# Jinja keys an entry by the template's source before the extensions' preprocess: a change to the slot syntax
# (ltgen.slots) must start a new folder, or templates compiled by the old one would still be served.
SLOTS_VERSION = hashlib.sha256(Path(slots.__file__).read_bytes()).hexdigest()[:12]


class CompiledTemplates(Extension):
    """Gives copier's Jinja environment a bytecode cache in ltgen's cache folder (by ltgen version and slot syntax:
    its Jinja settings may change; Jinja's entries also record the Python version, whose bytecode they hold)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        folder = cache_dir() / "jinja" / f"{__version__}-{SLOTS_VERSION}"
        with contextlib.suppress(OSError):
            folder.mkdir(parents=True, exist_ok=True)
            environment.bytecode_cache = QuietBytecodeCache(str(folder))
