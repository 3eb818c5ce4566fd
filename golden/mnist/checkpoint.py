"""Checkpoints: written atomically, loaded with weights_only=True, damaged ones detected.

last.pt is replaced atomically and the one before it stays as last.prev.pt, so a crash at
any moment, even in the middle of a write, leaves a checkpoint that loads.
"""

import math
import os
import random
import re
import sys
import warnings
from pathlib import Path

import torch
import torch.distributed as dist

import flags
import runs

KIND = "an image classifier"  # what this project's checkpoints hold: save() writes it into each one
# The data_info fields (and their types) that build_model, predict.py and sample.py read: check_kind refuses others.
DATA_INFO = {"input_shape": list, "num_outputs": int, "classes": list}
REQUIRED_KEYS = ("model", "optimizer", "epoch", "global_step", "batch_in_epoch", "rng")
# What torch.load raises on a damaged or foreign file: almost anything, as its unpickler parses the bytes
# (OSError, EOFError, RuntimeError, ValueError, IndexError, KeyError, struct.error, AssertionError, ...).
LOAD_ERRORS = (Exception,)
# torch warns about the pickle protocol of some files before refusing them; the refusal says enough.
warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)


def save(state: dict, path: Path) -> None:
    """Write state, and KIND, to path: a temporary file in the same folder, fsync, then os.replace."""
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "wb") as file:
        torch.save({**state, "kind": KIND}, file)
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


def make_folder(ckpt_dir: Path) -> None:
    """Create the checkpoint folder (one line and exit 2 where it cannot be), and delete the half-written
    files a run killed mid-save left in it."""
    try:
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        flags.fail(
            f"--out-dir {ckpt_dir.parent}: cannot create {ckpt_dir} ({error.strerror}); choose a folder you can write to"
        )
    for path in ckpt_dir.glob("*.tmp"):
        path.unlink(missing_ok=True)


def load(path: Path) -> dict:
    """Read a checkpoint: tensors, numbers, strings, lists and dicts only (weights_only=True runs no pickled code)."""
    if path.exists() and not path.is_file():  # a folder, or a named pipe that would block the read
        raise ValueError("it is a folder" if path.is_dir() else "not a regular file")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and state.get("kind", KIND) != KIND:
        check_kind(state, path)  # say what it is, rather than which of our keys it lacks
    missing = [key for key in REQUIRED_KEYS if key not in state] if isinstance(state, dict) else REQUIRED_KEYS
    if missing:
        raise ValueError(f"not a training checkpoint: no {', '.join(missing)}")
    return state


def rank(top_k: list[tuple[float, str]], score: float, name: str, k: int, mode: str) -> tuple[list, str | None] | None:
    """Lightning's top-k: (the new best-first list, the file it drops) if `name` enters the k best, else None.

    A NaN score ranks last. A score only equal to the k-th does not enter, and of equal worst scores the
    earliest is dropped, as Lightning's ModelCheckpoint does; file names play no part in the order.
    """
    sign = 1 if mode == "min" else -1
    score = sign * math.inf if math.isnan(score) else score
    if k == 0 or (0 < k <= len(top_k) and not sign * score < sign * top_k[-1][0]):  # k = 0 keeps none
        return None
    ranked = sorted([*top_k, (score, name)], key=lambda entry: sign * entry[0])  # stable: the earlier first
    if not 0 < k < len(ranked):
        return ranked, None
    earliest_worst = next(i for i, (other, _) in enumerate(ranked) if other == ranked[-1][0])
    return ranked, ranked.pop(earliest_worst)[1]


def kept(best: Path) -> bool:
    """Whether the best checkpoint is still there for the test; if not (a run resumed into another --out-dir, or
    its files removed), a warning, and the test runs on the weights training ended with."""
    if best.exists():
        return True
    print(f"warning: the best checkpoint {best} is not there: testing the weights training ended with", file=sys.stderr)
    return False


def why(error: Exception) -> str:
    """Why a file did not load, in one line. torch's messages run to paragraphs, and for a file that
    weights_only=True refuses they suggest weights_only=False, which would run any code the file holds."""
    if isinstance(error, EOFError):
        return "empty or cut short"
    if isinstance(error, OSError | RuntimeError) or type(error) is ValueError:  # no such file; a broken zip; not ours
        return str(error).split("\n")[0].split(". ")[0]
    return "not a checkpoint train.py wrote: damaged, or it pickles Python objects, which could run code"


def step_in_name(path: Path) -> int:
    """The optimizer step in a name like epoch=9-step=4690.pt, or -1. Names sort as text (step=10 < step=9)."""
    match = re.search(r"step=(\d+)", path.name)
    return int(match[1]) if match else -1


def for_inference(path: Path | None, out_dir: Path) -> tuple[dict, Path]:
    """The checkpoint predict.py and sample.py use, and its path: `path`, or else the best in the top-k list of the
    newest checkpoint of the newest run in out_dir that loads. One line and exit 1 when there is none, exit 2 when it
    is another kind's."""
    if path is None:
        newest_run = runs.newest(out_dir)
        if newest_run is None:
            raise SystemExit(f"No checkpoint in {out_dir}/: train first (python train.py), or pass --checkpoint FILE")
        ckpt_dir = newest_run / "checkpoints"
        found = find("last", ckpt_dir)  # last.pt, or else the newest checkpoint that loads
        if found is None:
            raise SystemExit(f"No checkpoint in {ckpt_dir}/: train first (python train.py), or pass --checkpoint FILE")
        newest, path = found
        if newest.get("top_k") and (ckpt_dir / newest["top_k"][0][1]).is_file():
            path = ckpt_dir / newest["top_k"][0][1]
    try:
        state = load(path)
    except LOAD_ERRORS as error:
        raise SystemExit(f"{path}: cannot load it ({why(error)}); pass a checkpoint train.py saved") from None
    check_kind(state, path)
    return state, path


def check_kind(state: dict, path: Path) -> None:
    """Refuse, in one line (exit 2), a checkpoint of another kind of project: one that says it holds another kind of
    model, or whose data_info lacks a field this project reads, or holds it as another type."""
    info = state["data_info"] if isinstance(state.get("data_info"), dict) else {}
    if state.get("kind", KIND) == KIND and all(isinstance(info.get(name), kind) for name, kind in DATA_INFO.items()):
        return
    fields = (
        name if isinstance(value, DATA_INFO.get(name, object)) else f"{name} as a {type(value).__name__}"
        for name, value in info.items()
    )
    has = f"its data_info has {', '.join(fields)}" if info else "it has no data_info"
    flags.fail(
        f"{path} is a checkpoint of {state.get('kind', 'another project, or of an older train.py')} ({has}), not of {KIND} "
        f"like this project's (data_info with {', '.join(DATA_INFO)}): pass a checkpoint this project's train.py saved"
    )


def weight_problems(saved: object, model: torch.nn.Module) -> str:
    """How the weights `saved` differ from `model`'s, by name and shape, in one line; "" when they fit it."""
    current = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    saved = (
        {name: tuple(getattr(value, "shape", ())) for name, value in saved.items()} if isinstance(saved, dict) else {}
    )
    problems = [
        f"{name}: {saved[name]} in the checkpoint, {shape} now"
        for name, shape in current.items()
        if saved.get(name, shape) != shape
    ]
    problems += [f"{name}: only in the checkpoint" for name in saved if name not in current]
    problems += [f"{name}: not in the checkpoint" for name in current if name not in saved]
    return "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")


def load_weights(model: torch.nn.Module, state: dict, path: Path) -> torch.nn.Module:
    """`model`, as model.py builds it, with the weights of the checkpoint `state` (read from `path`), in eval mode.
    One line and exit 2 when they do not fit it (model.py changed since)."""
    if problems := weight_problems(state["model"], model):
        flags.fail(f"{path} holds another model than model.py builds: {problems}; pass a checkpoint of this model")
    model.load_state_dict(state["model"])
    return model.eval()


def find(resume: str, ckpt_dir: Path) -> tuple[dict, Path] | None:
    """The checkpoint to resume from: the file `resume`, or for "last" the newest one in ckpt_dir that loads:
    last.pt, else the last.pt before it, else the other checkpoints (top-k), highest step first."""
    if resume != "last":
        try:
            return load(Path(resume)), Path(resume)
        except LOAD_ERRORS as error:
            raise SystemExit(
                f"--resume {resume}: cannot load it ({why(error)}); pass a checkpoint train.py saved, or --resume last"
            ) from None
    last, previous = ckpt_dir / "last.pt", ckpt_dir / "last.prev.pt"
    others = sorted((p for p in ckpt_dir.glob("*.pt") if p not in (last, previous)), key=step_in_name, reverse=True)
    damaged = 0
    for path in (p for p in (last, previous, *others) if p.exists()):
        try:
            return load(path), path
        except LOAD_ERRORS as error:
            print(f"warning: {path} is damaged ({why(error)}); trying the one before it", file=sys.stderr)
            damaged += 1
    if damaged:  # starting afresh would train over them: let a person decide
        raise SystemExit(
            f"--resume last: none of the {damaged} checkpoints in {ckpt_dir} loads; move them away to start afresh"
        )
    return None


def check_compatible(state: dict, model: torch.nn.Module, config: dict, data_info: dict, path: Path) -> None:
    """Refuse (one line, exit 2) a checkpoint of another kind of project, other data or a differently shaped model;
    warn about settings that changed since."""
    check_kind(state, path)
    saved_info = state["data_info"]
    if saved_info != data_info:
        differ = [key for key in {**data_info, **saved_info} if data_info.get(key) != saved_info.get(key)]
        flags.fail(
            f"{path} was trained on other data (its {', '.join(differ)} differ), so training cannot resume from it"
        )
    if problems := weight_problems(state["model"], model):
        flags.fail(
            f"{path} holds a different model, so training cannot resume from it: {problems}. "
            "Resume with the model it was trained with, or start a new run in another --out-dir."
        )
    changed = [
        f"{key} {old!r} -> {config[key]!r}"
        for key, old in state.get("config", {}).items()
        if key in config and config[key] != old
    ]
    if changed:
        print("warning: resuming with changed settings: " + ", ".join(changed), file=sys.stderr)


def rng_state(device: torch.device) -> dict:
    """This process's random state: Python's, torch's on the CPU and, on a GPU (CUDA or Apple's MPS), that device's."""
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
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
    elif device.type == "mps" and "mps" in states[rank]:
        torch.mps.set_rng_state(states[rank]["mps"])
