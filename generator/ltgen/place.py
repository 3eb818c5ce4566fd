"""Put a rendered tree on disk, never leaving a half-written file or project behind.

Every project keeps `.ltgen/base.json`: the exact text ltgen wrote last time, the spec
that produced it and ltgen's version. `ltgen regen` merges against it three ways.

A regen changes several files, each atomically, in three steps: it first records every
write it is about to make in `.ltgen/pending.json`, then writes the files, then replaces
base.json and drops pending.json. If it is stopped on the way, the next regen finishes
those writes before anything else, so the base only ever advances with the files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ltgen import __version__, merge
from ltgen.spec import SPEC_FILE

LTGEN_DIR = ".ltgen"
BASE_FILE = f"{LTGEN_DIR}/base.json"
PENDING_FILE = f"{LTGEN_DIR}/pending.json"
TEMPORARY_SUFFIX = ".ltgen-tmp"
EXECUTABLE_SUFFIXES = (".sh", ".sbatch")


@dataclass(frozen=True)
class Base:
    """What ltgen wrote last time into a project."""

    ltgen_version: str
    spec: str
    files: dict[str, str]


def _mode(relative: str) -> int:
    return 0o755 if relative.endswith(EXECUTABLE_SUFFIXES) else 0o644


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
    return {"ltgen_version": base.ltgen_version, "spec": base.spec, "files": dict(sorted(base.files.items()))}


def base_text(spec_text: str, tree: dict[str, str], version: str = __version__) -> str:
    """The content of .ltgen/base.json for a tree rendered from spec_text (deterministic: no timestamps)."""
    return json.dumps(_base_record(Base(version, spec_text, tree)), indent=1, ensure_ascii=False) + "\n"


def _is_generated_path(relative: Any) -> bool:
    """A relative path inside the project that ltgen may write: not the spec, nothing of ltgen's own."""
    if not isinstance(relative, str) or not relative or "\\" in relative:
        return False
    parts = PurePosixPath(relative).parts
    return not PurePosixPath(relative).is_absolute() and ".." not in parts and parts[0] not in (SPEC_FILE, LTGEN_DIR)


def _base_from(record: Any) -> Base:
    """A Base from its JSON record; TypeError naming what is wrong with it."""
    if not isinstance(record, dict):
        raise TypeError("expected a JSON object")
    version, spec_text, files = record.get("ltgen_version"), record.get("spec"), record.get("files")
    if not isinstance(version, str) or not isinstance(spec_text, str) or not isinstance(files, dict):
        raise TypeError('expected "ltgen_version", "spec" and "files"')
    for relative, text in files.items():
        if not _is_generated_path(relative) or not isinstance(text, str):
            raise TypeError(f"bad entry in files: {relative!r}")
    return Base(version, spec_text, files)


def read_base(project: Path) -> Base | None:
    """The base recorded in a project, or None if it has none; ValueError if it is damaged."""
    path = project / BASE_FILE
    if not path.exists():
        return None
    try:
        return _base_from(json.loads(path.read_text(encoding="utf-8")))
    except (ValueError, TypeError) as error:  # ValueError: also bad JSON and bad UTF-8
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
    """The text on disk of each relative path (None where there is no file)."""
    return {relative: read_text(project / relative) for relative in paths}


def _digest(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def write_new(tree: dict[str, str], spec_text: str, target: Path, force: bool = False) -> list[str]:
    """Write a new project into target; return the paths written (relative to target).

    Without force, target must be absent or empty: the project is written into a temporary
    folder beside it and renamed into place, so it appears whole or not at all. With force,
    each generated file replaces its namesake atomically and every other file is left alone.
    """
    files = {**tree, SPEC_FILE: spec_text, BASE_FILE: base_text(spec_text, tree)}
    if target.exists() and not is_empty_dir(target):
        if not force:
            raise FileExistsError(f"{target} exists and is not empty")
        for relative, text in files.items():
            write_file(target / relative, text, _mode(relative))
        return sorted(files)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.ltgen-"))
    try:
        for relative, text in files.items():
            path = staging / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="")
            path.chmod(_mode(relative))
        staging.chmod(0o755)
        os.replace(staging, target)  # also replaces an empty target folder
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return sorted(files)


# --- regen: merge the new render into an existing project -------------------------------------


class Refused(Exception):
    """A regen that must not start; the message says why and what to do."""


@dataclass(frozen=True)
class Report:
    """What a regen did (or, dry, would do)."""

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
    """
    record = base_text(base.spec, base.files, base.ltgen_version)
    if changes:
        writes = {
            relative: {"before": _digest(now), "after": after} for relative, (now, after) in sorted(changes.items())
        }
        pending = {"base": _base_record(base), "writes": writes}
        write_file(project / PENDING_FILE, json.dumps(pending, indent=1, ensure_ascii=False) + "\n")
        for relative, (_, after) in sorted(changes.items()):
            path = project / relative
            if after is None:
                _remove(path, project)
            else:
                write_file(path, after, _mode_for(path, relative))
    if read_text(project / BASE_FILE) != record:
        write_file(project / BASE_FILE, record)
    (project / PENDING_FILE).unlink(missing_ok=True)


def unfinished(project: Path, base: Base) -> tuple[Base, Changes] | None:
    """What an interrupted regen still owes: the base it records and its writes not yet made.

    A file edited by hand since the interruption is left as it is, and keeps its old base
    (`base`, the one still in base.json) so the next merge treats the edit as yours.
    """
    path = project / PENDING_FILE
    if not path.exists():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        pending = _base_from(record["base"])
        writes = {relative: (entry["before"], entry["after"]) for relative, entry in record["writes"].items()}
        if not all(map(_is_generated_path, writes)):
            raise TypeError("bad path in writes")
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{path} is damaged ({error!r}); delete it, then check the project with ltgen diff") from None
    files, changes = dict(pending.files), {}
    for relative, (before, after) in writes.items():
        now = read_text(project / relative)
        if now == after:
            continue
        if _digest(now) == before:
            changes[relative] = (now, after)
        elif relative in base.files:
            files[relative] = base.files[relative]
        else:
            files.pop(relative, None)
    return Base(pending.ltgen_version, pending.spec, files), changes


def remove_temporaries(project: Path, paths: Iterable[str]) -> None:
    """Delete the temporary files a killed ltgen left beside the given files and in .ltgen/."""
    for folder in {(project / relative).parent for relative in paths} | {project / LTGEN_DIR}:
        for stale in folder.glob(f".*{TEMPORARY_SUFFIX}"):
            stale.unlink(missing_ok=True)


def _refuse_on_markers(disk: dict[str, str | None], paths: Iterable[str]) -> None:
    where = [f"{relative}:{line}" for relative in sorted(paths) for line in merge.conflict_lines(disk[relative] or "")]
    if where:
        raise Refused(
            f"conflict markers from the last regen remain in {', '.join(where)}. Resolve each block from "
            f"'{merge.CONFLICT_START}' to '{merge.CONFLICT_END}' (keep the lines you want, delete the marker "
            "lines), then run ltgen regen again"
        )


def regen(project: Path, spec_text: str, tree: dict[str, str], restore: bool = False, dry_run: bool = False) -> Report:
    """Merge the render of spec_text (tree) into the project, file by file; dry_run writes nothing.

    Refused when the project has no base or still holds conflict markers from the last regen.
    """
    base = read_base(project)
    if base is None:
        raise Refused(
            f"{project / BASE_FILE} is missing, so ltgen cannot tell your edits from what it generated. "
            "If this project came from ltgen, restore that file from version control; otherwise generate "
            "a new project (ltgen new NAME --spec ltgen.toml) and move your code into it"
        )
    version = base.ltgen_version
    owed = unfinished(project, base)
    if owed is not None:
        base = owed[0]
    paths = base.files.keys() | tree.keys()
    if not dry_run:
        remove_temporaries(project, paths)
        if owed is not None:
            apply(project, owed[1], base)
    disk = read_texts(project, paths)
    if owed is not None and dry_run:
        disk |= {relative: after for relative, (_, after) in owed[1].items()}
    _refuse_on_markers(disk, base.files)
    plans = merge.plan(base.files, disk, tree, restore)
    if not dry_run:
        apply(project, {p.path: (p.disk, p.result) for p in plans if p.changes}, Base(__version__, spec_text, tree))
    return Report(plans, version, len(owed[1]) if owed else 0)
