"""Checkpoints: written atomically, loaded with weights_only=True, damaged ones detected.

last.pt is replaced atomically and the one before it stays as last.prev.pt, so a crash at
any moment, even in the middle of a write, leaves a checkpoint that loads.
"""

import os
import pickle
import random
import sys
from pathlib import Path

import torch
import torch.distributed as dist

REQUIRED_KEYS = ("model", "optimizer", "epoch", "global_step", "batch_in_epoch", "rng")
# What loading a missing, truncated, corrupt or foreign file raises.
LOAD_ERRORS = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError)


def save(state: dict, path: Path) -> None:
    """Write state to path: a temporary file in the same folder, fsync, then os.replace."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save(state, file)
        file.flush()
        os.fsync(file.fileno())
    if path.name == "last.pt" and path.exists():
        os.replace(path, path.with_name("last.prev.pt"))
    os.replace(temporary, path)
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)  # make the renames durable too
    finally:
        os.close(folder)


def remove_temporaries(ckpt_dir: Path) -> None:
    """Delete half-written files left by a run killed mid-save."""
    for path in ckpt_dir.glob("*.tmp"):
        path.unlink(missing_ok=True)


def load(path: Path) -> dict:
    """Read a checkpoint: tensors, numbers, strings, lists and dicts only (weights_only=True runs no pickled code)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    missing = [key for key in REQUIRED_KEYS if key not in state] if isinstance(state, dict) else REQUIRED_KEYS
    if missing:
        raise ValueError(f"not a training checkpoint: no {', '.join(missing)}")
    return state


def find(resume: str, ckpt_dir: Path) -> tuple[dict, Path] | None:
    """The checkpoint to resume from: the file `resume`, or for "last" the newest one in ckpt_dir that loads."""
    if resume != "last":
        try:
            return load(Path(resume)), Path(resume)
        except LOAD_ERRORS as error:
            raise SystemExit(f"--resume {resume}: cannot load it ({error})") from None
    for path in (ckpt_dir / "last.pt", ckpt_dir / "last.prev.pt"):
        if path.exists():
            try:
                return load(path), path
            except LOAD_ERRORS as error:
                print(f"warning: {path} is damaged ({error}); trying the one before it", file=sys.stderr)
    return None


def check_compatible(state: dict, model: torch.nn.Module, config: dict, path: Path) -> None:
    """Refuse a checkpoint of a differently shaped model; warn about settings that changed since."""
    current = model.state_dict()
    saved = state["model"]
    problems = [
        f"{name}: {tuple(saved[name].shape)} in the checkpoint, {tuple(t.shape)} now"
        for name, t in current.items()
        if name in saved and saved[name].shape != t.shape
    ]
    problems += [f"{name}: only in the checkpoint" for name in saved if name not in current]
    problems += [f"{name}: not in the checkpoint" for name in current if name not in saved]
    if problems:
        raise SystemExit(
            f"{path} holds a different model, so training cannot resume from it:\n  "
            + "\n  ".join(problems[:10])
            + "\nResume with the model it was trained with, or start a new run in another --out-dir."
        )
    changed = [
        f"{key} {old!r} -> {config[key]!r}"
        for key, old in state.get("config", {}).items()
        if key in config and config[key] != old
    ]
    if changed:
        print("warning: resuming with changed settings: " + ", ".join(changed), file=sys.stderr)


def rng_state(device: torch.device) -> dict:
    """This process's random state: Python's, torch's on the CPU and, on a GPU, that device's."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def gather_rng_states(device: torch.device) -> list[dict]:
    """The random state of every process, by rank (a collective: every rank must call it)."""
    if not dist.is_initialized():
        return [rng_state(device)]
    states: list = [None] * dist.get_world_size()
    dist.all_gather_object(states, rng_state(device))
    return states


def restore_rng_state(states: list[dict], device: torch.device) -> None:
    """Put this process's random state back as it was when the checkpoint was saved."""
    rank, world_size = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    if len(states) != world_size:
        print(
            f"warning: the checkpoint was saved by {len(states)} processes, not {world_size}: random streams start afresh",
            file=sys.stderr,
        )
        return
    random.setstate(states[rank]["python"])
    torch.set_rng_state(states[rank]["torch"])
    if device.type == "cuda" and "cuda" in states[rank]:
        torch.cuda.set_rng_state(states[rank]["cuda"], device)
