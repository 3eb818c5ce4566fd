"""Manual optimization: training_step runs backward and steps the optimizers itself (as a GAN must)."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean
from ltgen.features.task import GAN_METRICS, VALID_ARCHS

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "manual_optimization": Key(
            boolean, False, "training_step runs backward and the optimizer steps itself (a GAN needs it)"
        )
    }
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """What the loop does for an automatic step, and so cannot do when training_step steps."""
    trainer, optim = values["trainer"], values["optim"]
    if not trainer["manual_optimization"]:
        return []
    out = []
    if optim["scheduler"] == "plateau" or (optim["scheduler_interval"] == "epoch" and optim["scheduler"] != "none"):
        out.append(
            (
                "optim.scheduler",
                'steps with its optimizer under manual_optimization: use scheduler_interval = "step", not "plateau"',
            )
        )
    if trainer["nonfinite_loss"] == "skip":
        out.append(
            ("trainer.nonfinite_loss", 'expected "stop" or "off" with manual_optimization (training_step steps)')
        )
    if values["debug"]["log_grad_norm"]:
        out.append(("debug.log_grad_norm", "expected false with manual_optimization: training_step sees the gradients"))
    for hook in ("on_before_optimizer_step", "on_train_batch_end"):
        if hook in values["hooks"]["emit"]:
            out.append(("hooks.emit", f"{hook} is not called with manual_optimization: do it in training_step"))
    return out


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    # training_step(models, optimizers, batch, step) runs backward and the steps through manual.py's helpers.
    return {"manual": values["trainer"]["manual_optimization"]}


def paste(f: dict[str, Any]) -> dict[str, Any]:
    applied = [
        name
        for name, on in (
            ("the loss scale", f["grad_scaler"]),
            ("accumulation", f["accumulate"]),
            ("clipping", f["clip"]),
            ("the schedule", f["has_scheduler"]),
        )
        if on
    ]
    options = (
        ("schedulers=schedulers", f["has_scheduler"]),
        ("scalers=scalers", f["grad_scaler"]),
        ("accumulate_grad_batches=cfg.accumulate_grad_batches", f["accumulate"]),
        ("gradient_clip_val=cfg.gradient_clip_val", f["clip"]),
    )
    return {
        # ", which applies A, B and C as the automatic loop would", on a comment line of its own
        "manual_applies": f",\n# which applies {_listed(applied)} as the automatic loop would" if applied else "",
        "manual_step_options": "".join(f", {option}" for option, on in options if on),
        "loss_readings": "torch.stack([value.detach().float() for value in losses.values()])",
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"automatic": not f["manual"], "manual": f["manual"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from manual import ManualStep"] if f["manual"] else []


def _listed(names: list[str]) -> str:
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def gan_rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """A GAN steps two optimizers by hand at constant learning rates, and reports its own validation metrics."""
    optim = values["optim"]
    if values["model"]["arch"] != "gan" or "gan" not in VALID_ARCHS[values["data"]["dataset"]]:
        return []  # not a GAN, or one on data it does not fit: then the arch is the problem
    out = []
    if not values["trainer"]["manual_optimization"]:
        out.append(("trainer.manual_optimization", 'expected true with arch = "gan": it steps two optimizers by hand'))
    if optim["scheduler"] != "none" or optim["warmup_steps"]:
        out.append(
            ("optim.scheduler", 'expected "none" (and no warm-up) with arch = "gan": lr_g and lr_d stay constant')
        )
    monitors = {
        "checkpoint.monitor": values["checkpoint"]["save_top_k"] != 0,
        "early_stopping.monitor": values["early_stopping"]["enabled"],
    }
    for key, used in monitors.items():
        section, name = key.split(".")
        if used and values[section][name] not in GAN_METRICS:
            expected = ", ".join(f'"{metric}"' for metric in GAN_METRICS)
            out.append((key, f"expected one of the GAN's validation metrics, {expected}"))
    return out
