"""Put a rendered tree on disk, never leaving a half-written file or project behind.

Every project keeps `.ltgen/base.json`: the exact text ltgen wrote last time, the spec
that produced it and ltgen's version. `ltgen regen` merges against it three ways.

A regen changes several files, each atomically, in three steps: it first records every
write it is about to make in `.ltgen/pending.json`, then writes the files, then replaces
base.json and drops pending.json. If it is stopped on the way, the next regen finishes
those writes before anything else, so the base only ever advances with the files.

ltgen reads, writes and deletes only regular files inside the project, reached through real
folders: a symbolic link on the way makes it refuse, naming the path, so that nothing it does
can reach outside the project. It trusts .ltgen/ no further than that: it deletes only files
its template generates, and one regen at a time holds the project (an flock on .ltgen/).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import signal
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ltgen import __version__, merge, render
from ltgen.spec import SPEC_FILE

LTGEN_DIR = ".ltgen"
BASE_FILE = f"{LTGEN_DIR}/base.json"
PENDING_FILE = f"{LTGEN_DIR}/pending.json"
REPLACED_DIR = f"{LTGEN_DIR}/replaced"  # where `ltgen new --force` moves the files it replaces
TEMPORARY_SUFFIX = ".ltgen-tmp"
STAGING_MARK = ".ltgen-"  # `ltgen new` stages NAME in PARENT/.NAME.ltgen-XXXXXXXX/
EXECUTABLE_SUFFIXES = (".sh", ".sbatch")
TERMINATION_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Refused(Exception):
    """A command that must not start; the message says why and what to do."""


class Unfinished(Exception):
    """A regen that failed half-way: the project is partly updated, and the next regen finishes it."""


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


def _mode(relative: str) -> int:
    return 0o755 if relative.endswith(EXECUTABLE_SUFFIXES) else 0o644


def safe_path(project: Path, relative: str, folder: bool = False) -> Path:
    """project/relative, once sure it is a regular file (a folder, with folder) or nothing yet, under real folders.

    Refused, naming the path, where a part of it is a symbolic link or not what it must be.
    """
    path, parts = project, relative.split("/")
    for depth, part in enumerate(parts, start=1):
        path = path / part
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            break
        last = depth == len(parts)
        kind = "file" if last and not folder else "folder"
        if stat.S_ISLNK(mode):
            raise Refused(
                f"{path} is a symbolic link; ltgen never reads or writes through one (it could reach outside the "
                f"project). Replace it with a real {kind}, or move it away, then run ltgen again"
            )
        if not (stat.S_ISREG(mode) if kind == "file" else stat.S_ISDIR(mode)):
            raise Refused(f"{path} is not a {kind}, where ltgen keeps {relative}: move it away, then run ltgen again")
    return project / relative


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """Replace path's content atomically: a temporary file beside it, fsync, os.replace."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMPORARY_SUFFIX)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _base_record(base: Base) -> dict[str, Any]:
    record = {"ltgen_version": base.ltgen_version, "spec": base.spec, "files": dict(sorted(base.files.items()))}
    return record | ({"conflicts": dict(sorted(base.conflicts.items()))} if base.conflicts else {})


def base_text(spec_text: str, tree: dict[str, str], version: str = __version__) -> str:
    """The content of .ltgen/base.json for a tree rendered from spec_text (deterministic: no timestamps)."""
    return _base_json(Base(version, spec_text, tree))


def _base_json(base: Base) -> str:
    return json.dumps(_base_record(base), indent=1, ensure_ascii=False) + "\n"


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


def read_text(path: Path) -> str | None:
    """A file's exact text, line endings included, or None if there is no file."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{path} is not UTF-8 text; ltgen can only merge text files") from None


def read_texts(project: Path, paths: Iterable[str]) -> dict[str, str | None]:
    """The text on disk of each relative path (None where there is no file); Refused where one is unsafe."""
    checked = {relative: safe_path(project, relative) for relative in sorted(paths)}
    return {relative: read_text(path) for relative, path in checked.items()}


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


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
        write_file(target / relative, text, _mode(relative))
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
                path.chmod(_mode(relative))
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


Changes = dict[str, tuple[str | None, str | None]]  # path -> (text now, text after); None: no file


def _mode_for(path: Path, relative: str) -> int:
    """Keep an existing file's permissions; a new one gets the generated default."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return _mode(relative)


def _remove(path: Path, project: Path) -> None:
    """Delete a file, then the folders it leaves empty (never the project itself)."""
    path.unlink(missing_ok=True)
    for folder in path.parents:
        if folder == project or not folder.is_relative_to(project) or any(folder.iterdir()):
            break
        folder.rmdir()


def apply(project: Path, changes: Changes, base: Base) -> None:
    """Make changes (write or delete) in the project, then record base: interruptible at any moment.

    pending.json lists every change first; the next regen finishes them (see `unfinished`).
    Unfinished if a change fails once the first is recorded.
    """
    record = _base_json(base)
    if changes:
        writes = {
            relative: {"before": _digest(now), "after": after} for relative, (now, after) in sorted(changes.items())
        }
        pending = {"base": _base_record(base), "writes": writes}
        write_file(project / PENDING_FILE, json.dumps(pending, indent=1, ensure_ascii=False) + "\n")
    relative = BASE_FILE
    try:
        for relative, (_, after) in sorted(changes.items()):
            path = project / relative
            if after is None:
                _remove(path, project)
            else:
                write_file(path, after, _mode_for(path, relative))
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


def remove_temporaries(project: Path, paths: Iterable[str]) -> None:
    """Delete the temporary files a killed ltgen left beside the given files and in .ltgen/."""
    for folder in {(project / relative).parent for relative in paths} | {project / LTGEN_DIR}:
        for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)


def _no_base(project: Path) -> Refused:
    return Refused(
        f"{project / BASE_FILE} is missing, so ltgen cannot tell your edits from what it generated. "
        "If this project came from ltgen, restore that file from version control; otherwise generate "
        "a new project (ltgen new NAME --spec ltgen.toml) and move your code into it"
    )


@contextlib.contextmanager
def _locked(project: Path, shared: bool) -> Iterator[None]:
    """Hold the project for a regen: an flock on its .ltgen folder, shared for a dry run; Refused while taken."""
    folder = safe_path(project, LTGEN_DIR, folder=True)
    try:
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise _no_base(project) from None
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
    read_only = [
        project / relative
        for relative, (now, _) in sorted(changes.items())
        if now is not None and not (project / relative).stat().st_mode & stat.S_IWUSR
    ]
    if read_only:
        paths = " ".join(shlex.quote(str(path)) for path in read_only)
        raise Refused(
            f"regen would change {', '.join(map(str, read_only))}, but you made it read-only: make it writable "
            f"(chmod u+w {paths}), or resolve it by hand, then run ltgen regen again"
        )


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
    with _locked(project, shared=dry_run):
        base = read_base(project)
        if base is None:
            raise _no_base(project)
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
