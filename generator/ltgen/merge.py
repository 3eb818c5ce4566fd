"""Decide, file by file, what `ltgen regen` does: a three-way merge of the text on disk (yours)
and the new render (regenerated) against what ltgen generated last time (the base).

Everything here is pure: texts in, texts out. The merging itself is `git merge-file`, so a
conflict carries the standard diff3 markers that editors and `git mergetool` understand.
"""

from __future__ import annotations

import enum
import subprocess
import tempfile
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from ltgen.spec import SPEC_FILE

YOURS_LABEL = "yours (on disk)"
BASE_LABEL = "last generated (base)"
NO_BASE_LABEL = "not generated before (empty base)"
THEIRS_LABEL = f"regenerated from {SPEC_FILE}"
MARKER_SIZE = 7
CONFLICT_START = "<" * MARKER_SIZE + " " + YOURS_LABEL
CONFLICT_BASE = "|" * MARKER_SIZE + " " + BASE_LABEL
CONFLICT_NO_BASE = "|" * MARKER_SIZE + " " + NO_BASE_LABEL
CONFLICT_SEPARATOR = "=" * MARKER_SIZE
CONFLICT_END = ">" * MARKER_SIZE + " " + THEIRS_LABEL
LABELLED_MARKERS = frozenset({CONFLICT_START, CONFLICT_BASE, CONFLICT_NO_BASE, CONFLICT_END})


class Outcome(str, enum.Enum):
    """What regen does to one file."""

    UNCHANGED = "unchanged"  # left as it is (it may hold your edits)
    UPDATED = "updated"  # only the template side changed: replaced by the new render
    MERGED = "merged"  # both sides changed, merged cleanly
    CONFLICT = "conflict"  # both sides changed the same lines: written with conflict markers
    ADDED = "added"  # new in the render
    RESTORED = "restored"  # a generated file you deleted, brought back by --restore
    REMOVED = "removed"  # no longer rendered and untouched by you: deleted
    KEPT = "kept"  # no longer rendered but edited by you: kept, no longer tracked
    UNTRACKED = "untracked"  # in the base but not a file ltgen generates (a damaged or crafted base): left alone
    SKIPPED = "skipped"  # a generated file you deleted: stays deleted


@dataclass(frozen=True)
class FilePlan:
    """One file's outcome: its text on disk now and after regen (None: no file)."""

    path: str
    outcome: Outcome
    disk: str | None
    result: str | None
    conflicts: int = 0

    @property
    def changes(self) -> bool:
        return self.disk != self.result


class MergeError(RuntimeError):
    """git merge-file is missing or failed."""


def merge_texts(yours: str, base: str | None, theirs: str) -> tuple[str, int]:
    """Merge with `git merge-file --diff3`; return the result and its number of conflicts.

    A base of None means the file was not generated before: both sides are merged against
    an empty file, so any difference between them is a conflict.
    """
    with tempfile.TemporaryDirectory(prefix="ltgen-merge-") as scratch:
        files = []
        for name, text in (("yours", yours), ("base", base or ""), ("theirs", theirs)):
            path = Path(scratch) / name
            path.write_bytes(text.encode("utf-8"))
            files.append(str(path))
        labels = [YOURS_LABEL, BASE_LABEL if base is not None else NO_BASE_LABEL, THEIRS_LABEL]
        command = ["git", "merge-file", "-p", "--diff3", f"--marker-size={MARKER_SIZE}"]
        command += [arg for label in labels for arg in ("-L", label)] + files
        try:
            done = subprocess.run(command, capture_output=True, check=False)
        except FileNotFoundError:
            raise MergeError("ltgen regen merges with `git merge-file`, but git is missing: install git") from None
    if not 0 <= done.returncode < 128:
        raise MergeError(f"git merge-file failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
    return done.stdout.decode("utf-8"), done.returncode


def separators(text: str) -> int:
    """How many bare '=======' lines text holds (a conflict block has one; code may have its own)."""
    return sum(line == CONFLICT_SEPARATOR for line in _lines(text))


def conflict_lines(text: str, own_separators: int | None = None) -> list[int]:
    """Line numbers (from 1) of the conflict markers ltgen wrote that are still in text.

    The labelled markers always count. In a file ltgen left with conflicts, whose own code held
    own_separators bare '=======' lines, the bare ones count too once there are more of them.
    """
    lines = _lines(text)
    found = [n for n, line in enumerate(lines, start=1) if line in LABELLED_MARKERS]
    if own_separators is not None and separators(text) > own_separators:
        found += [n for n, line in enumerate(lines, start=1) if line == CONFLICT_SEPARATOR]
    return sorted(found)


def _lines(text: str) -> list[str]:
    """text's lines as git and editors count them: split at '\\n' (a '\\r' before it dropped)."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def _uses_crlf(text: str) -> bool:
    return "\r\n" in text and text.count("\r\n") == text.count("\n")


def plan_file(
    path: str,
    base: str | None,
    disk: str | None,
    theirs: str | None,
    restore: bool = False,
    *,
    removable: bool,
) -> FilePlan:
    """The outcome for one file from its base, its text on disk and its new render (None: absent).

    A file on disk with Windows line endings (CRLF) is merged as if it had '\\n' ones, and keeps its own.
    Only a removable file (one ltgen generates) is ever deleted.
    """
    if disk is None or not _uses_crlf(disk):
        return _plan_lf(path, base, disk, theirs, restore, removable)
    plan = _plan_lf(path, base, disk.replace("\r\n", "\n"), theirs, restore, removable)
    if plan.result == plan.disk:
        return FilePlan(path, plan.outcome, disk, disk, plan.conflicts)
    result = None if plan.result is None else plan.result.replace("\n", "\r\n")
    return FilePlan(path, plan.outcome, disk, result, plan.conflicts)


def _plan_lf(
    path: str, base: str | None, disk: str | None, theirs: str | None, restore: bool, removable: bool
) -> FilePlan:
    if theirs is None:  # no longer rendered
        if disk is None or base is None:
            return FilePlan(path, Outcome.UNCHANGED, disk, disk)
        if disk != base:
            return FilePlan(path, Outcome.KEPT, disk, disk)
        if not removable:
            return FilePlan(path, Outcome.UNTRACKED, disk, disk)
        return FilePlan(path, Outcome.REMOVED, disk, None)
    if disk is None:
        if base is None:
            return FilePlan(path, Outcome.ADDED, None, theirs)
        if restore:
            return FilePlan(path, Outcome.RESTORED, None, theirs)
        return FilePlan(path, Outcome.SKIPPED, None, None)
    if disk == theirs or base == theirs:
        return FilePlan(path, Outcome.UNCHANGED, disk, disk)
    if disk == base:
        return FilePlan(path, Outcome.UPDATED, disk, theirs)
    merged, conflicts = merge_texts(disk, base, theirs)
    if conflicts:
        return FilePlan(path, Outcome.CONFLICT, disk, merged, conflicts)
    return FilePlan(path, Outcome.MERGED if merged != disk else Outcome.UNCHANGED, disk, merged)


def plan(
    base: dict[str, str],
    disk: dict[str, str | None],
    tree: dict[str, str],
    restore: bool = False,
    *,
    removable: Collection[str],
) -> list[FilePlan]:
    """Every file's outcome, by path; tree is the new render, disk the text of each path in base or tree.

    A file no longer rendered is deleted only when its path is in removable (the paths ltgen generates).
    """
    paths = sorted(base.keys() | tree.keys())
    return [
        plan_file(path, base.get(path), disk.get(path), tree.get(path), restore, removable=path in removable)
        for path in paths
    ]
