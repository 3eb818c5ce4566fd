"""The optimizer: Adam, AdamW or SGD, and the GAN's two Adams."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Applies, Key, betas, choice, number, only_with
from ltgen.features.task import NOT_GAN
from ltgen.unit import Entry, Field, by_name, whole

# A GAN has two Adams of its own (lr_g, lr_d, betas); every other model one optimizer (optimizer, lr, ...).
GAN = only_with("model.arch", "gan", where='to arch "gan"')

# No learning rate trains above this; far above it, the optimizer's float32 update overflows (a RuntimeError).
MAX_LR = 1e4
KEYS: dict[str, dict[str, Key]] = {
    "optim": {
        "optimizer": Key(choice("adam", "adamw", "sgd"), "adamw", '"adam" | "adamw" | "sgd"', (NOT_GAN,)),
        "lr": Key(number(0.0, MAX_LR, lo_open=True), 1e-3, "the learning rate (the peak, with a schedule)", (NOT_GAN,)),
        "weight_decay": Key(number(0.0), 0.01, "decoupled for adamw; an L2 penalty for adam and sgd", (NOT_GAN,)),
        "momentum": Key(
            number(0.0, 1.0, hi_open=True),
            0.9,
            "sgd only",
            (NOT_GAN, only_with("optim.optimizer", "sgd", where='to optimizer "sgd"')),
        ),
        "lr_g": Key(number(0.0, MAX_LR, lo_open=True), 2e-4, "gan: the generator's Adam learning rate", (GAN,)),
        "lr_d": Key(number(0.0, MAX_LR, lo_open=True), 2e-4, "gan: the discriminator's Adam learning rate", (GAN,)),
        "betas": Key(
            betas,
            [0.9, 0.999],
            "Adam's and AdamW's betas (a GAN's: both optimizers'); nanoGPT: [0.9, 0.99] small, [0.9, 0.95] GPT-2",
            (
                Applies(
                    ("model.arch", "optim.optimizer"),
                    lambda arch, optimizer: arch == "gan" or optimizer in ("adam", "adamw"),
                    'to optimizers "adam" and "adamw", and a GAN\'s two Adams',
                ),
            ),
        ),
        "backbone_lr_scale": Key(
            number(0.0, 1e3),
            1.0,
            "timm: the backbone's learning rate relative to the classifier head's",
            (only_with("model.arch", "timm", where='to arch "timm"'),),
        ),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    optim = values["optim"]
    return {
        "optimizer": optim["optimizer"],
        "weight_decay": repr(optim["weight_decay"]),
        "momentum": repr(optim["momentum"]),
        "betas": repr(tuple(optim["betas"])),
        # nanoGPT's rule: weight decay on matrices and embeddings (>= 2-D) only, not on biases and norm scales
        "decay_groups": optim["optimizer"] == "adamw" and optim["weight_decay"] > 0,
        "backbone_lr_scale": repr(optim["backbone_lr_scale"]),
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"optimizer": not f["several_models"]}  # one model and its optimizer; a GAN's are in "gan"


def fields(f: dict[str, Any]) -> list[Field]:
    names = ["lr_g", "lr_d"] if f["several_models"] else ["lr"]
    return [
        Field(name, f"optim.{name}", "float", f"0 < {{v}} <= {MAX_LR:g}", f"a number > 0 and <= {MAX_LR:g}")
        for name in names
    ]


def state(f: dict[str, Any]) -> list[Entry]:
    if f["fsdp"]:  # in its sharded checkpoint folder, with the model
        return []
    return [by_name("optimizers", "optimizers", "opt") if f["manual"] else whole("optimizer", "optimizer")]
