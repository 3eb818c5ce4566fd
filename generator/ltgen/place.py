"""Put a rendered tree on disk, never leaving a half-written file or project behind.

Every project keeps `.ltgen/base.json`: the exact text ltgen wrote last time, the spec
that produced it and ltgen's version. `ltgen regen` merges against it three ways.

A regen changes several files, each atomically, in three steps: it first records every
write it is about to make in `.ltgen/pending.json`, then writes the files, then replaces
base.json and drops pending.json. If it is stopped on the way, the next regen finishes
those writes before anything else, so the base only ever advances with the files.

The files themselves are read and written through ltgen.files (regular files inside the project,
never through a symbolic link, each write atomic); .ltgen/ is kept by ltgen.journal.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ltgen import __version__, merge, render
from ltgen.files import (
    TEMPORARY_SUFFIX,
    Refused,
    default_mode,
    is_empty_dir,
    kept_mode,
    read_text,
    read_texts,
    refuse_read_only,
    remove_file,
    safe_path,
    write_file,
)
from ltgen.journal import (
    BASE_FILE,
    LTGEN_DIR,
    PENDING_FILE,
    Base,
    Changes,
    base_json,
    base_text,
    missing_base,
    pending_text,
    read_base,
    regen_lock,
    unfinished,
)
from ltgen.spec import SPEC_FILE

REPLACED_DIR = f"{LTGEN_DIR}/replaced"  # where `ltgen new --force` moves the files it replaces
STAGING_MARK = ".ltgen-"  # `ltgen new` stages NAME in PARENT/.NAME.ltgen-XXXXXXXX/
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Unfinished(Exception):
    """A regen that failed half-way: the project is partly updated, and the next regen finishes it."""


# --- new: write a whole project -----------------------------------------------------------------


@dataclass(frozen=True)
class NewProject:
    """What `write_new` did: the files it wrote, and where it moved each file of yours that one replaced."""

    files: list[str]
    moved_aside: dict[str, Path]


def check_target(target: Path, force: bool = False) -> None:
    """Refuse a target that `ltgen new` must not write into, saying why and what to do instead."""
    if target.is_symlink():
        raise Refused(f"{target} is a symbolic link; ltgen new writes only into a real folder: choose another name")
    if target.parent.exists() and not target.parent.is_dir():
        raise Refused(f"{target.parent} is a file, not a folder: give --dir a folder (it is created when missing)")
    if not target.exists() or is_empty_dir(target):
        return
    if not target.is_dir():
        raise Refused(f"{target} is a file, not a folder; choose another name or --dir")
    if not force:
        raise Refused(
            f"{target} exists and is not empty; choose another name or --dir, or --force to write into it "
            "(the files of yours it replaces are moved aside first)"
        )
    if os.path.lexists(target / BASE_FILE):
        raise Refused(
            f"{target} is an ltgen project already, and --force never writes over one: edit its {SPEC_FILE}, "
            f"then run `ltgen regen {shlex.quote(str(target))}` to bring the change in and keep your edits"
        )


def write_new(tree: dict[str, str], spec_text: str, target: Path, force: bool = False) -> NewProject:
    """Write a new project into target (see check_target for the targets refused).

    Into an absent or empty target, the project is written into a temporary folder beside it and
    renamed into place, so it appears whole or not at all. With force, into a folder that is not
    an ltgen project: each file of yours that a generated one replaces is first moved into
    REPLACED_DIR, then each generated file is written atomically; every other file is left alone.
    """
    files = {**tree, SPEC_FILE: spec_text, BASE_FILE: base_text(spec_text, tree)}  # base.json last
    check_target(target, force)
    if not target.exists() or is_empty_dir(target):
        _write_staged(files, target)
        return NewProject(sorted(files), {})
    moved = _move_aside(target, files)
    for relative, text in files.items():
        write_file(target / relative, text, default_mode(relative))
    return NewProject(sorted(files), moved)


def _move_aside(target: Path, files: Iterable[str]) -> dict[str, Path]:
    """Move each existing file among files into REPLACED_DIR (never over another); return where each went."""
    present = [relative for relative in sorted(files) if safe_path(target, relative).exists()]
    moved = {}
    for relative in present:
        destination, copy = safe_path(target, f"{REPLACED_DIR}/{relative}"), 0
        while os.path.lexists(destination):
            copy += 1
            destination = safe_path(target, f"{REPLACED_DIR}/{relative}.{copy}")
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target / relative, destination)
        moved[relative] = destination
    return moved


def _write_staged(files: dict[str, str], target: Path) -> None:
    """Write files into a staging folder beside target, then rename it into place (an empty target included)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with _terminations_interrupt():
        staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}{STAGING_MARK}"))
        try:
            _remove_stale_staging(target, staging)
            for relative, text in files.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text, encoding="utf-8", newline="")
                path.chmod(default_mode(relative))
            staging.chmod(0o755)
            os.replace(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


@contextlib.contextmanager
def _terminations_interrupt() -> Iterator[None]:
    """Within, SIGTERM and SIGHUP interrupt as Ctrl-C does (KeyboardInterrupt), so that cleanup code runs.

    A signal that is ignored (nohup) stays ignored; outside the main thread, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(number: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(number).name)

    previous = {number: signal.getsignal(number) for number in TERMINATION_SIGNALS}
    for number, handler in previous.items():
        if handler == signal.SIG_DFL:
            signal.signal(number, interrupt)
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def _remove_stale_staging(target: Path, current: Path) -> None:
    """Delete the staging folders of target that `ltgen new` runs killed earlier left (those older than current)."""
    started = current.stat().st_mtime_ns
    prefix = f".{target.name}{STAGING_MARK}"
    with contextlib.suppress(OSError):  # a cleanup: it never stops `new`
        for folder in target.parent.iterdir():
            stale = folder.name.startswith(prefix) and folder != current and not folder.is_symlink()
            if stale and folder.is_dir() and folder.stat().st_mtime_ns < started:
                shutil.rmtree(folder, ignore_errors=True)


# --- regen: merge the new render into an existing project -------------------------------------


@dataclass(frozen=True)
class Report:
    """What a regen did (or, dry, would do), each file from its text on disk before the regen."""

    plans: list[merge.FilePlan]
    base_version: str  # the ltgen that generated the base
    finished: int = 0  # files an interrupted regen still owed, written first


def apply(project: Path, changes: Changes, base: Base) -> None:
    """Make changes (write or delete) in the project, then record base: interruptible at any moment.

    pending.json lists every change first; the next regen finishes them (see `unfinished`).
    Unfinished if a change fails once the first is recorded.
    """
    record = base_json(base)
    if changes:
        write_file(project / PENDING_FILE, pending_text(changes, base))
    relative = BASE_FILE
    try:
        for relative, (_, after) in sorted(changes.items()):
            path = project / relative
            if after is None:
                remove_file(path, project)
            else:
                write_file(path, after, kept_mode(path, relative))
        relative = BASE_FILE
        if read_text(project / BASE_FILE) != record:
            write_file(project / BASE_FILE, record)
    except OSError as error:
        if not changes:
            raise
        raise Unfinished(
            f"cannot write {project / relative} ({error.strerror or error}), so the project is only partly "
            f"updated: fix that, then run ltgen regen again to finish the job ({PENDING_FILE} lists what is left)"
        ) from None
    (project / PENDING_FILE).unlink(missing_ok=True)


def remove_temporaries(project: Path, paths: Iterable[str]) -> None:
    """Delete the temporary files a killed ltgen left beside the given files and in .ltgen/."""
    for folder in {(project / relative).parent for relative in paths} | {project / LTGEN_DIR}:
        for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)


def _refuse_on_markers(disk: dict[str, str | None], base: Base) -> None:
    where = [
        f"{relative}:{line}"
        for relative in sorted(base.files)
        for line in merge.conflict_lines(disk[relative] or "", base.conflicts.get(relative))
    ]
    if where:
        raise Refused(
            f"conflict markers from the last regen remain in {', '.join(where)}. Resolve each block from "
            f"'{merge.CONFLICT_START}' to '{merge.CONFLICT_END}' (keep the lines you want, delete the marker "
            "lines), then run ltgen regen again"
        )


def _refuse_read_only(project: Path, changes: Changes) -> None:
    """Refused if a file to change or delete is read-only: regen would replace it (and with it, its mode)."""
    refuse_read_only(project / relative for relative, (now, _) in sorted(changes.items()) if now is not None)


def _as_seen_before(plans: list[merge.FilePlan], before: dict[str, str | None], owed: Changes) -> list[merge.FilePlan]:
    """The plans as changes from the disk before the writes an interrupted regen owed, which show too."""
    shown = {plan.path: plan for plan in plans}
    for relative, (_, after) in owed.items():
        plan = shown.get(relative)
        result = plan.result if plan else after
        if before[relative] == result:
            outcome = merge.Outcome.UNCHANGED
        elif plan is not None and plan.outcome is not merge.Outcome.UNCHANGED:
            outcome = plan.outcome
        elif before[relative] is None:
            outcome = merge.Outcome.ADDED
        else:
            outcome = merge.Outcome.REMOVED if result is None else merge.Outcome.UPDATED
        shown[relative] = merge.FilePlan(relative, outcome, before[relative], result, plan.conflicts if plan else 0)
    return [shown[path] for path in sorted(shown)]


def _conflicts(plans: list[merge.FilePlan]) -> dict[str, int]:
    """The files written with conflict markers, each with its own bare '=======' lines (see Base)."""
    return {plan.path: merge.separators(plan.result or "") - plan.conflicts for plan in plans if plan.conflicts}


def regen(project: Path, spec_text: str, tree: dict[str, str], restore: bool = False, dry_run: bool = False) -> Report:
    """Merge the render of spec_text (tree) into the project, file by file; dry_run writes nothing.

    Refused when the project has no base, still holds conflict markers from the last regen, has a
    symbolic link or a read-only file where regen would read or write, or another regen is running.
    """
    with regen_lock(project, shared=dry_run):
        base = read_base(project)
        if base is None:
            raise missing_base(project)
        version = base.ltgen_version
        generated = render.emittable_paths()
        owed = unfinished(project, base, generated)
        owed_changes = owed[1] if owed is not None else {}
        if owed is not None:
            base = owed[0]
        paths = base.files.keys() | tree.keys() | owed_changes.keys()
        before = read_texts(project, paths)
        if not dry_run:
            remove_temporaries(project, paths)
            if owed is not None:
                _refuse_read_only(project, owed_changes)
                apply(project, owed_changes, base)
        disk = before | {relative: after for relative, (_, after) in owed_changes.items()}
        _refuse_on_markers(disk, base)
        plans = merge.plan(base.files, disk, tree, restore, removable=generated)
        if not dry_run:
            changes = {plan.path: (plan.disk, plan.result) for plan in plans if plan.changes}
            _refuse_read_only(project, changes)
            apply(project, changes, Base(__version__, spec_text, tree, _conflicts(plans)))
    return Report(_as_seen_before(plans, before, owed_changes), version, len(owed_changes))
