"""The optimizer: Adam, AdamW or SGD, and the GAN's two Adams."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, betas, choice, number
from ltgen.unit import Entry, Field, by_name, whole

KEYS: dict[str, dict[str, Key]] = {
    "optim": {
        "optimizer": Key(choice("adam", "adamw", "sgd"), "adamw", '"adam" | "adamw" | "sgd"'),
        "lr": Key(number(0.0, lo_open=True), 1e-3, "the learning rate (the peak, with a schedule)"),
        "weight_decay": Key(number(0.0), 0.01, "decoupled for adamw; an L2 penalty for adam and sgd"),
        "momentum": Key(number(0.0, 1.0, hi_open=True), 0.9, "sgd only"),
        "lr_g": Key(number(0.0, lo_open=True), 2e-4, "gan: the generator's Adam learning rate"),
        "lr_d": Key(number(0.0, lo_open=True), 2e-4, "gan: the discriminator's Adam learning rate"),
        "betas": Key(betas, [0.5, 0.999], "gan: Adam's betas, for both optimizers"),
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
    return [Field(name, f"optim.{name}", "float", "0 < {v} < math.inf", "a finite number > 0") for name in names]


def state(f: dict[str, Any]) -> list[Entry]:
    if f["fsdp"]:  # in its sharded checkpoint folder, with the model
        return []
    return [by_name("optimizers", "optimizers", "opt") if f["manual"] else whole("optimizer", "optimizer")]
