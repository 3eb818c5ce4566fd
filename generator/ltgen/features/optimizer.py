"""The optimizer: Adam, AdamW or SGD, and the GAN's two Adams."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, betas, choice, number, only_with
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
        "betas": Key(betas, [0.5, 0.999], "gan: Adam's betas, for both optimizers", (GAN,)),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    optim = values["optim"]
    return {
        "optimizer": optim["optimizer"],
        "weight_decay": repr(optim["weight_decay"]),
        "momentum": repr(optim["momentum"]),
        "betas": repr(tuple(optim["betas"])),
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
