"""The bookkeeping a project keeps in .ltgen/: its base, the journal of an unfinished regen, the regen lock.

`.ltgen/base.json` holds the exact text ltgen wrote last time, the spec that produced it and
ltgen's version; `ltgen regen` merges against it three ways. `.ltgen/pending.json` lists the
writes a regen is about to make, so that the next regen can finish them if it is stopped.
ltgen trusts .ltgen/ no further than the rest of the project: it deletes only files its template
generates, so a record that names any other path is damaged. One regen at a time holds the
project: an flock on .ltgen/.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltgen import __version__
from ltgen.files import Refused, read_texts, safe_path
from ltgen.spec import SPEC_FILE

LTGEN_DIR = ".ltgen"
BASE_FILE = f"{LTGEN_DIR}/base.json"
PENDING_FILE = f"{LTGEN_DIR}/pending.json"

Changes = dict[str, tuple[str | None, str | None]]  # path -> (text now, text after); None: no file


@dataclass(frozen=True)
class Base:
    """What ltgen wrote last time into a project.

    conflicts: the files it wrote with conflict markers, each with the number of bare '======='
    lines that are its own code (not markers): see merge.conflict_lines.
    """

    ltgen_version: str
    spec: str
    files: dict[str, str]
    conflicts: dict[str, int] = field(default_factory=dict)


def _record(base: Base) -> dict[str, Any]:
    record = {"ltgen_version": base.ltgen_version, "spec": base.spec, "files": dict(sorted(base.files.items()))}
    return record | ({"conflicts": dict(sorted(base.conflicts.items()))} if base.conflicts else {})


def base_json(base: Base) -> str:
    """The content of .ltgen/base.json recording base."""
    return json.dumps(_record(base), indent=1, ensure_ascii=False) + "\n"


def base_text(spec_text: str, tree: dict[str, str], version: str = __version__) -> str:
    """The content of .ltgen/base.json for a tree rendered from spec_text (deterministic: no timestamps)."""
    return base_json(Base(version, spec_text, tree))


def _is_generated_path(relative: Any) -> bool:
    """A relative path inside the project, in its plain form, that ltgen may write: not the spec, nothing of ltgen's."""
    if not isinstance(relative, str) or "\\" in relative or "\0" in relative:
        return False
    parts = relative.split("/")
    return all(part not in ("", ".", "..") for part in parts) and parts[0] not in (SPEC_FILE, LTGEN_DIR)


def _base_from(record: Any) -> Base:
    """A Base from its JSON record; TypeError naming what is wrong with it."""
    if not isinstance(record, dict):
        raise TypeError("expected a JSON object")
    version, spec_text, files = record.get("ltgen_version"), record.get("spec"), record.get("files")
    conflicts = record.get("conflicts", {})
    if not isinstance(version, str) or not isinstance(spec_text, str) or not isinstance(files, dict):
        raise TypeError('expected "ltgen_version", "spec" and "files"')
    for relative, text in files.items():
        if not _is_generated_path(relative) or not isinstance(text, str):
            raise TypeError(f"bad entry in files: {relative!r}")
    if not isinstance(conflicts, dict):
        raise TypeError('expected "conflicts" to be an object')
    for relative, count in conflicts.items():
        if relative not in files or not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise TypeError(f"bad entry in conflicts: {relative!r}")
    return Base(version, spec_text, files, conflicts)


def read_base(project: Path) -> Base | None:
    """The base recorded in a project, or None if it has none; ValueError if it is damaged."""
    path = safe_path(project, BASE_FILE)
    if not path.exists():
        return None
    try:
        return _base_from(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError, RecursionError) as error:  # ValueError: also bad JSON and bad UTF-8
        raise ValueError(f"{path} is damaged ({error}); restore it from version control or a backup") from None


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def pending_text(changes: Changes, base: Base) -> str:
    """The content of .ltgen/pending.json for a regen about to make changes, then record base."""
    writes = {relative: {"before": _digest(now), "after": after} for relative, (now, after) in sorted(changes.items())}
    return json.dumps({"base": _record(base), "writes": writes}, indent=1, ensure_ascii=False) + "\n"


def unfinished(project: Path, base: Base, writable: Iterable[str]) -> tuple[Base, Changes] | None:
    """What an interrupted regen still owes: the base it records and its writes not yet made.

    A file edited by hand since the interruption is left as it is, and keeps its old base
    (`base`, the one still in base.json) so the next merge treats the edit as yours. Each write
    must be to one of the writable paths (those ltgen generates), with text or None (a deletion).
    """
    path = safe_path(project, PENDING_FILE)
    if not path.exists():
        return None
    allowed = set(writable)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pending = _base_from(record["base"])
        writes = {relative: (entry["before"], entry["after"]) for relative, entry in record["writes"].items()}
        for relative, texts in writes.items():
            if relative not in allowed or not _is_generated_path(relative):
                raise TypeError(f"a write to {relative!r}, which is not a file ltgen generates")
            if not all(text is None or isinstance(text, str) for text in texts):
                raise TypeError(f"a write to {relative!r} without text")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as error:
        raise ValueError(f"{path} is damaged ({error}); delete it, then check the project with ltgen diff") from None
    files, conflicts, changes = dict(pending.files), dict(pending.conflicts), {}
    now = read_texts(project, writes)
    for relative, (before, after) in writes.items():
        if now[relative] == after:
            continue
        if _digest(now[relative]) == before:
            changes[relative] = (now[relative], after)
            continue
        conflicts.pop(relative, None)
        if relative in base.files:
            files[relative] = base.files[relative]
        else:
            files.pop(relative, None)
    return Base(pending.ltgen_version, pending.spec, files, conflicts), changes


def missing_base(project: Path) -> Refused:
    """The refusal for a project without base.json, saying what to do."""
    return Refused(
        f"{project / BASE_FILE} is missing, so ltgen cannot tell your edits from what it generated. "
        "If this project came from ltgen, restore that file from version control; otherwise generate "
        "a new project (ltgen new NAME --spec ltgen.toml) and move your code into it"
    )


@contextlib.contextmanager
def regen_lock(project: Path, shared: bool) -> Iterator[None]:
    """Hold the project for a regen: an flock on its .ltgen folder, shared for a dry run; Refused while taken."""
    folder = safe_path(project, LTGEN_DIR, folder=True)
    try:
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise missing_base(project) from None
    try:
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Refused(
                f"another ltgen regen is running in {project}; wait for it to finish, then run this again"
            ) from None
        yield
    finally:
        os.close(handle)
