"""Run folders: each run writes only in --out-dir/RUN/ (its config.json, logs and checkpoints), so two
runs never touch each other's files, and --resume names the run it continues.

RUN is --run-name, or else version_N, the next free N (Lightning's convention).
"""

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import torch
import torch.distributed as dist

import flags

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.=+-]{0,127}")  # one folder name: no "/", no leading "." or "-"
checkpoint_path = flags.existing("folder")  # --resume PATH: FSDP's checkpoints are folders


def name_flag(text: str) -> str:
    """--run-name's type: a folder name, else argparse's one-line error (exit 2)."""
    if not NAME.fullmatch(text) or text == "last":
        raise argparse.ArgumentTypeError(f"{text!r}: a run name is letters, digits and _.=+- (no '/'), and not 'last'")
    return text


def resume_flag(text: str) -> str | Path:
    """--resume's type: "last", a run's name (a str), or the path of a checkpoint (a Path)."""
    if text == "last" or (NAME.fullmatch(text) and not text.endswith(".pt") and not os.path.lexists(text)):
        return text
    return checkpoint_path(text)


def choose(
    out_dir: Path, name: str | None, resume: str | Path | None, config: dict, write: bool
) -> tuple[Path, str | Path | None]:
    """This run's folder in out_dir, and what it resumes: "last" (its newest checkpoint), a checkpoint's path, or
    None for a fresh start. Where it writes, the folder is made and a fresh start records config.json.
    Rank 0 decides and tells the other ranks (every rank must call this)."""
    decided = [
        _choose(out_dir, name, resume, config, write) if not dist.is_initialized() or dist.get_rank() == 0 else None
    ]
    if dist.is_initialized():
        dist.broadcast_object_list(decided, src=0)
    return decided[0]


def _choose(
    out_dir: Path, name: str | None, resume: str | Path | None, config: dict, write: bool
) -> tuple[Path, str | Path | None]:
    if isinstance(resume, Path):  # a checkpoint: the run it belongs to goes on, unless --run-name names another
        in_run = resume.parent.name == "checkpoints" and resume.parent.parent.parent.resolve() == out_dir.resolve()
        name = name or (resume.parent.parent.name if in_run else None)
        run_dir = out_dir / name if name else _claim(out_dir, write)
        return _make(run_dir, config, write, fresh=not (run_dir / "config.json").exists()), resume
    if resume == "last" and name is None:
        newest_run = newest(out_dir)
        if newest_run is not None:
            print(f"--resume last: continuing {newest_run.name}, the newest run in {out_dir}", file=sys.stderr)
            return newest_run, "last"
        print(
            f"--resume last: no run in {out_dir} has a checkpoint yet; starting a fresh one{_old_layout(out_dir)}",
            file=sys.stderr,
        )
    elif resume is not None:  # a run by name (--resume NAME, or --run-name NAME --resume last)
        if resume != "last" and name not in (None, resume):
            flags.fail(f"--resume {resume} and --run-name {name} name two runs: drop --run-name")
        name = name or resume
        run_dir = out_dir / name
        if resume != "last" and not run_dir.is_dir():
            runs = ", ".join(sorted(p.name for p in _runs(out_dir))) or "none yet"
            flags.fail(f"--resume {resume}: no run of that name in {out_dir} (its runs: {runs})")
        if _checkpoints(run_dir):
            return run_dir, "last"
        if run_dir.is_dir():
            print(f"--resume {resume}: run {name} has no checkpoint yet; starting it afresh", file=sys.stderr)
        return _make(run_dir, config, write, fresh=True), None
    if name is not None and _started(out_dir / name):
        flags.fail(
            f"--run-name {name}: a run of that name has logs or checkpoints in {out_dir} already; "
            f"continue it with --resume {name}, or choose another name"
        )
    run_dir = out_dir / name if name else _claim(out_dir, write)
    return _make(run_dir, config, write, fresh=True), None


def _runs(out_dir: Path) -> list[Path]:
    """The run folders in out_dir."""
    try:
        return [path for path in out_dir.iterdir() if path.is_dir() and NAME.fullmatch(path.name)]
    except OSError:  # no such folder yet
        return []


def _checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints a run saved (none half-written)."""
    try:
        return [path for path in (run_dir / "checkpoints").iterdir() if not path.name.endswith(".tmp")]
    except OSError:
        return []


def _started(run_dir: Path) -> bool:
    """Whether a run in run_dir got as far as logging or saving: a folder with only config.json is one whose start
    failed (bad data, say), and a new run may take it."""
    try:
        logged = any(p.name == "metrics.csv" or p.name.startswith("events.out.tfevents") for p in run_dir.iterdir())
    except OSError:
        return False
    return logged or bool(_checkpoints(run_dir))


def newest(out_dir: Path) -> Path | None:
    """The run in out_dir that saved a checkpoint last; None when none has."""
    saved = [(path.stat().st_mtime_ns, run_dir) for run_dir in _runs(out_dir) for path in _checkpoints(run_dir)]
    return max(saved)[1] if saved else None


def _old_layout(out_dir: Path) -> str:
    """A hint where out_dir holds checkpoints of a project generated before run folders."""
    if (out_dir / "checkpoints").is_dir() and not (out_dir / "checkpoints" / "config.json").exists():
        return (
            f" (the checkpoints in {out_dir / 'checkpoints'} are from before run folders: --resume PATH continues one)"
        )
    return ""


def _claim(out_dir: Path, write: bool) -> Path:
    """version_N, the next free N. Where it writes it makes the folder at once, so two runs starting together in
    one out_dir never share one."""
    taken = [int(match[1]) for path in _runs(out_dir) if (match := re.fullmatch(r"version_(\d+)", path.name))]
    number = max(taken, default=-1) + 1
    while write:
        try:
            (out_dir / f"version_{number}").mkdir(parents=True)
            break
        except FileExistsError:
            number += 1
        except OSError as error:
            _cannot_create(out_dir, error)
    return out_dir / f"version_{number}"


def _make(run_dir: Path, config: dict, write: bool, fresh: bool) -> Path:
    """Make run_dir where this process writes; a fresh start records config.json in it."""
    if not write:
        return run_dir
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        _cannot_create(run_dir, error)
    if fresh:
        record = {
            "run": run_dir.name,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "config": config,
            "command": sys.argv,
            "spec": _read(Path(__file__).with_name("ltgen.toml")),
            "torch": torch.__version__,
            "git": git_state(Path(__file__).parent),
        }
        temporary = run_dir / "config.json.tmp"
        temporary.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, run_dir / "config.json")
    return run_dir


def _cannot_create(path: Path, error: OSError) -> None:
    flags.fail(f"--out-dir: cannot create {path} ({error.strerror or error}); choose a folder you can write to")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def git_state(folder: Path) -> dict | None:
    """The commit of the git repository the project is in, and whether its tracked files differ from it (the code
    this run ran); None outside a repository or without git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], check=False, cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        changes = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            check=False,
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return {"commit": commit.stdout.strip(), "dirty": bool(changes.stdout.strip())}
    except (OSError, subprocess.TimeoutExpired):
        return None
