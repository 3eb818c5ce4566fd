"""last.pt: the checkpoint to resume from, written at each epoch's end and, optionally, every N steps or minutes."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean, integer, number
from ltgen.features.early_stopping import EARLY_STOP_DUE
from ltgen.unit import Entry, Field

KEYS: dict[str, dict[str, Key]] = {
    "checkpoint": {
        "save_last": Key(boolean, True, "last.pt, for --resume last"),
        "every_n_steps": Key(integer(0), 0, "also write last.pt every N optimizer steps; 0: off"),
        "every_n_minutes": Key(number(0.0), 0.0, "also write last.pt every M minutes; 0: off"),
    }
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The extra writes are of last.pt."""
    checkpoint = values["checkpoint"]
    return [
        (f"checkpoint.{key}", "writes last.pt, so it needs save_last = true")
        for key in ("every_n_steps", "every_n_minutes")
        if checkpoint[key] and not checkpoint["save_last"]
    ]


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"save_last": values["checkpoint"]["save_last"]}  # last.pt, resume, signals


def paste(f: dict[str, Any]) -> dict[str, Any]:
    resumes = f["save_last"]
    ended = "0 < cfg.max_steps <= global_step or 0 < cfg.max_epochs <= epoch"
    requeue = f", signal.SIG{f['requeue_signal']}" if f["slurm"] else ""
    return {
        "data_note": (
            " The batch order depends only on (seed, epoch), so a run can resume mid-epoch." if resumes else ""
        ),
        "counters": "epoch, global_step, batch_in_epoch = 0, 0, 0" if resumes else "epoch, global_step = 0, 0",
        "resume_start": ", start=batch_in_epoch" if resumes else "",
        "next_epoch": "epoch, batch_in_epoch = epoch + 1, 0" if resumes else "epoch += 1",
        "stop_signals": "signal.SIGINT, signal.SIGTERM" + requeue,
        "run_ended": ended + (f" or ({EARLY_STOP_DUE})" if f["early_stopping"] else ""),
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"last_checkpoint": f["save_last"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import signal", "import time"] if f["save_last"] else []


def fields(f: dict[str, Any]) -> list[Field]:
    if not f["save_last"]:
        return []
    minutes = "checkpoint.every_n_minutes"
    return [
        Field("ckpt_every_n_steps", "checkpoint.every_n_steps", "int", "{v} >= 0", "an integer >= 0"),
        Field("ckpt_every_n_minutes", minutes, "float", "0 <= {v} < math.inf", "a finite number >= 0"),
    ]


def state(f: dict[str, Any]) -> list[Entry]:
    if not f["save_last"]:
        return []
    rng = (("rng", "checkpoint.gather_rng_states(device)"),)  # every rank's random state
    return [Entry(rng, 'checkpoint.restore_rng_state(state["rng"], device)')]
