"""Safe reads and writes of a project's files: regular files only, inside the project, each write atomic.

ltgen reads, writes and deletes only regular files inside the project, reached through real
folders: a symbolic link on the way makes it refuse, naming the path, so that nothing it does
can reach outside the project.
"""

from __future__ import annotations

import os
import shlex
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path

TEMPORARY_SUFFIX = ".ltgen-tmp"
EXECUTABLE_SUFFIXES = (".sh", ".sbatch")


class Refused(Exception):
    """A command that must not start; the message says why and what to do."""


def default_mode(relative: str) -> int:
    """The permissions of a generated file: executable for scripts, read-write otherwise."""
    return 0o755 if relative.endswith(EXECUTABLE_SUFFIXES) else 0o644


def kept_mode(path: Path, relative: str) -> int:
    """Keep an existing file's permissions; a new one gets the generated default."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        return default_mode(relative)


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


def is_empty_dir(path: Path) -> bool:
    """True for a folder with nothing in it."""
    return path.is_dir() and not any(path.iterdir())


def remove_file(path: Path, project: Path) -> None:
    """Delete a file, then the folders it leaves empty (never the project itself)."""
    path.unlink(missing_ok=True)
    for folder in path.parents:
        if folder == project or not folder.is_relative_to(project) or any(folder.iterdir()):
            break
        folder.rmdir()


def refuse_read_only(paths: Iterable[Path]) -> None:
    """Refused if one of these existing files, which regen would replace (and with it, its mode), is read-only."""
    read_only = [path for path in paths if not path.stat().st_mode & stat.S_IWUSR]
    if read_only:
        quoted = " ".join(shlex.quote(str(path)) for path in read_only)
        raise Refused(
            f"regen would change {', '.join(map(str, read_only))}, but you made it read-only: make it writable "
            f"(chmod u+w {quoted}), or resolve it by hand, then run ltgen regen again"
        )
