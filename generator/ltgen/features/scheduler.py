"""The learning-rate schedule: cosine, step or plateau, with an optional linear warm-up."""

from __future__ import annotations

from typing import Any

from ltgen.checks import METRIC, MODE, Applies, Key, choice, integer, number, only_with
from ltgen.features.validation import needs_validation
from ltgen.unit import Entry, by_name, plain, whole

# Where a schedule's keys have an effect: the scheduler that reads them, and a schedule at all.
STEP = only_with("optim.scheduler", "step", where='to scheduler "step"')
PLATEAU = only_with("optim.scheduler", "plateau", where='to scheduler "plateau"')
SCHEDULED = Applies(
    ("optim.scheduler", "optim.warmup_steps"),
    lambda scheduler, warmup: scheduler != "none" or warmup > 0,
    "to a schedule: a scheduler, or a warm-up",
)

KEYS: dict[str, dict[str, Key]] = {
    "optim": {
        "scheduler": Key(
            choice("none", "cosine", "step", "plateau"), "cosine", '"none" | "cosine" | "step" | "plateau"'
        ),
        "scheduler_interval": Key(
            choice("step", "epoch"),
            "step",
            '"step": the schedule counts optimizer steps; "epoch": epochs, as Lightning does by default',
            # plateau steps after each validation, whatever the interval
            (
                only_with("optim.scheduler", "none", "cosine", "step", where='to every scheduler but "plateau"'),
                SCHEDULED,
            ),
        ),
        "warmup_steps": Key(
            integer(0), 0, "linear warm-up, in schedule steps (see scheduler_interval; not with plateau)"
        ),
        "min_lr": Key(
            number(0.0),
            0.0,
            "cosine: the learning rate it ends at (nanoGPT: lr / 10)",
            (only_with("optim.scheduler", "cosine", where='to scheduler "cosine"'),),
        ),
        "step_size": Key(integer(1), 1000, "step: multiply the lr by gamma every step_size schedule steps", (STEP,)),
        "gamma": Key(
            number(0.0, 1.0),
            0.1,
            "step and plateau: the factor",
            (only_with("optim.scheduler", "step", "plateau", where='to schedulers "step" and "plateau"'),),
        ),
        "plateau_patience": Key(
            integer(0), 2, "plateau: validations without improvement before the lr drops", (PLATEAU,)
        ),
        "monitor": Key(METRIC, "val_loss", "plateau: the metric watched", (PLATEAU,)),
        "mode": Key(MODE, "min", "plateau: whether the metric should go down (min) or up (max)", (PLATEAU,)),
    }
}


def warmup_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Plateau has no warm-up."""
    optim = values["optim"]
    if optim["scheduler"] == "plateau" and optim["warmup_steps"] > 0:
        return [
            ("optim.warmup_steps", 'expected 0 with scheduler = "plateau" (warm-up works with none, cosine and step)')
        ]
    return []


def min_lr_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The cosine ends below where it starts."""
    optim = values["optim"]
    if optim["scheduler"] == "cosine" and values["model"]["arch"] != "gan" and optim["min_lr"] >= optim["lr"]:
        return [("optim.min_lr", f"expected less than lr ({optim['lr']}): the cosine decays from lr to min_lr")]
    return []


def validation_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """Plateau watches a validation metric."""
    return needs_validation(values, "optim.scheduler", values["optim"]["scheduler"] == "plateau")


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    optim = values["optim"]
    scheduler, warmup = optim["scheduler"], optim["warmup_steps"]
    # What the schedule counts: epochs or optimizer steps (plateau is stepped after each validation).
    unit = "epoch" if optim["scheduler_interval"] == "epoch" and scheduler != "plateau" else "step"
    after = {
        "cosine": f"then a cosine decay to {optim['min_lr'] or 0} at total_{unit}s",
        "step": f"then x{optim['gamma']} every {optim['step_size']} {unit}s",
        "none": "then constant",
    }
    return {
        "scheduler": scheduler,
        "has_scheduler": scheduler != "none" or warmup > 0,
        "total_steps": scheduler == "cosine",
        "epoch_schedule": unit == "epoch" and (scheduler != "none" or warmup > 0),
        "schedule_unit": unit,
        "plateau": scheduler == "plateau",
        "warmup_lambda": warmup > 0,
        "min_lr": repr(optim["min_lr"]) if scheduler == "cosine" and optim["min_lr"] > 0 else "",
        "warmup_steps": repr(warmup),
        "warmup_doc": f"Learning-rate factor: linear warm-up over {warmup} {unit}s, {after.get(scheduler, '')}.",
        "step_size": repr(optim["step_size"]),
        "gamma": repr(optim["gamma"]),
        "plateau_patience": repr(optim["plateau_patience"]),
        "plateau_monitor": repr(optim["monitor"]),
        "plateau_mode": repr(optim["mode"]),
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    total = "total_epochs" if f["epoch_schedule"] else "total_steps"
    per_epoch = "math.ceil(n_train / cfg.accumulate_grad_batches)" if f["accumulate"] else "n_train"
    # The schedule's length, as Lightning's estimated_stepping_batches: whichever limit ends training first.
    length = f"min(n for n in (cfg.max_epochs * {per_epoch}, cfg.max_steps) if n > 0)"
    if f["epoch_schedule"]:
        length = f"min(n for n in (cfg.max_epochs, math.ceil(cfg.max_steps / {per_epoch})) if n > 0)"
    return {
        "optimizer_targets": "optimizer, scheduler" if f["has_scheduler"] else "optimizer",
        "schedule_total": total,
        "schedule_length_arg": f", {total}" if f["total_steps"] else "",
        "schedule_total_value": length,
        "step_schedule": f["has_scheduler"] and not f["plateau"] and not f["epoch_schedule"],
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"scheduler": f["has_scheduler"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["import math"] if f["total_steps"] and (f["accumulate"] or f["epoch_schedule"]) else []


def state(f: dict[str, Any]) -> list[Entry]:
    if not f["has_scheduler"]:
        return []
    entries = [by_name("schedulers", "schedulers", "sched") if f["manual"] else whole("scheduler", "scheduler")]
    if f["total_steps"]:  # read before the model is built: a resumed schedule keeps its length
        entries.append(plain(None, f["schedule_total"]))
    return entries
