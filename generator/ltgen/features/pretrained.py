"""Pretrained weights and the text's tokens: GPT-2's weights for the GPT ([model] init_from), timm backbones for
images ([model] arch = "timm"), the tokenizer of the text task, and activation checkpointing of the big models."""

from __future__ import annotations

import re
from typing import Any

from ltgen.checks import Applies, Key, boolean, choice, did_you_mean, integer, only_with, text

# GPT-2's checkpoints on the Hugging Face hub: (n_layer, n_head, n_embd); all have biases, 1024 positions, 50257 tokens.
GPT2_CONFIGS = {
    "gpt2": (12, 12, 768),
    "gpt2-medium": (24, 16, 1024),
    "gpt2-large": (36, 20, 1280),
    "gpt2-xl": (48, 25, 1600),
}
GPT2_POSITIONS = 1024
HUB_OWNER = "openai-community"  # the hub's owner of the GPT-2 repositories (openai-community/gpt2, ...)
# A timm model name: lowercase letters, digits, "_", "-" and ".", e.g. "resnet50" or "vit_base_patch16_224.augreg_in21k"
TIMM_NAME = re.compile(r"[a-z0-9][a-z0-9_.\-]{0,127}")


def init_from(value: Any) -> str | None:
    """[model] init_from: "scratch", a GPT-2 on the hub, or a local path (checked when train.py runs)."""
    if isinstance(value, str) and 0 < len(value) <= 4096 and value.isprintable() and value == value.strip():
        return None
    hubs = " | ".join(f'"{name}"' for name in GPT2_CONFIGS)
    return f'"scratch" | {hubs} | a path to a folder or .safetensors file in Hugging Face\'s GPT-2 layout'


def _arch(arch: str) -> tuple[Applies, ...]:
    return (only_with("model.arch", arch, where=f'to arch "{arch}"'),)


TEXT = only_with("data.dataset", "text", where='to dataset "text"')

KEYS: dict[str, dict[str, Key]] = {
    "model": {
        "init_from": Key(
            init_from,
            "scratch",
            'gpt: "scratch" | "gpt2" | "gpt2-medium" | "gpt2-large" | "gpt2-xl" (from the hub) | a PATH to a folder '
            "or .safetensors file in Hugging Face's GPT-2 layout (then the tokenizer is GPT-2's)",
            _arch("gpt"),
        ),
        "timm_model": Key(
            text(TIMM_NAME, 'a timm model name such as "resnet50" or "convnext_tiny.fb_in22k"'),
            "resnet50",
            "timm: the backbone, any name of timm.list_models()",
            _arch("timm"),
        ),
        "pretrained": Key(boolean, True, "timm: start from the backbone's pretrained weights", _arch("timm")),
        "pretrained_file": Key(
            text(re.compile(r"[^\x00-\x1f]{1,4096}"), "a path to a weights file", empty_ok=True),
            "",
            'timm: a local weights file (.safetensors, .pth) instead of the hub; "": download',
            (*_arch("timm"), only_with("model.pretrained", True, where="with pretrained = true")),
        ),
        "freeze_backbone": Key(
            boolean, False, "timm: train only the classifier head (the backbone's weights stay)", _arch("timm")
        ),
        "activation_checkpointing": Key(
            boolean,
            False,
            "gpt, resnet, timm: recompute each block's activations in the backward pass (less memory, ~30% slower)",
            (only_with("model.arch", "gpt", "resnet", "timm", where='to arch "gpt", "resnet" and "timm"'),),
        ),
    },
    "data": {
        "tokenizer": Key(
            choice("char", "bpe", "gpt2"),
            "char",
            'text: "char" (characters) | "bpe" (byte-level BPE trained on the training split) | "gpt2" (GPT-2\'s)',
            (TEXT, only_with("model.init_from", "scratch", where='to init_from = "scratch"')),
        ),
        "vocab_size": Key(
            integer(257, 2**20),
            8192,
            "bpe: the vocabulary's size (256 bytes + merges)",
            (TEXT, only_with("data.tokenizer", "bpe", where='to tokenizer "bpe"')),
        ),
    },
}


def rules(values: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """GPT-2's weights fix the GPT's shape."""
    model = values["model"]
    if model["arch"] != "gpt" or model["init_from"] == "scratch" or values["data"]["dataset"] != "text":
        return []
    return _gpt2_problems(model, values["data"])


def _gpt2_problems(model: dict[str, Any], data: dict[str, Any]) -> list[tuple[str, str]]:
    """GPT-2's weights fix the architecture: a hub model's is known here; a PATH's is checked when train.py runs."""
    out = []
    source = model["init_from"]
    if source in GPT2_CONFIGS:
        for key, wanted in zip(("n_layer", "n_head", "n_embd"), GPT2_CONFIGS[source], strict=True):
            if model[key] != wanted:
                out.append((f"model.{key}", f'expected {wanted}, the value of init_from = "{source}"\'s weights'))
        if not model["bias"]:
            out.append(("model.bias", f'expected true: init_from = "{source}"\'s weights have biases'))
    else:
        hint = did_you_mean(source, GPT2_CONFIGS) if "/" not in source and "." not in source else ""
        if hint:
            out.append(("model.init_from", f'"{source}" is no GPT-2 on the hub and no path: {hint}'))
    if data["block_size"] > GPT2_POSITIONS:
        out.append(
            ("data.block_size", f"expected at most {GPT2_POSITIONS}: GPT-2's weights have {GPT2_POSITIONS} positions")
        )
    return out


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    data, model = values["data"], values["model"]
    arch = model["arch"]
    return {
        "tokenizer": tokenizer(values),
        "vocab_size": repr(data["vocab_size"]),
        "init_from": model["init_from"],
        "gpt2_weights": arch == "gpt" and model["init_from"] != "scratch",
        "gpt2_hub": arch == "gpt" and model["init_from"] in GPT2_CONFIGS,
        "hub_repo": f"{HUB_OWNER}/{model['init_from']}" if model["init_from"] in GPT2_CONFIGS else "",
        "timm": arch == "timm",
        "activation_checkpointing": arch in ("gpt", "resnet", "timm") and model["activation_checkpointing"],
    }


def tokenizer(values: dict[str, dict[str, Any]]) -> str:
    """The text's tokenizer in effect: GPT-2's with GPT-2's weights, else [data] tokenizer."""
    return "gpt2" if values["model"]["init_from"] != "scratch" else values["data"]["tokenizer"]


def dependencies(values: dict[str, dict[str, Any]]) -> list[str]:
    """What the emitted code imports for these features (only when the spec uses them)."""
    data, model = values["data"], values["model"]
    if model["arch"] == "timm":  # and a weights file, when pretrained
        return ["timm>=1.0", *(["safetensors>=0.4"] if model["pretrained"] else [])]
    if data["dataset"] != "text":
        return []
    gpt2_weights, kind = model["init_from"] != "scratch", tokenizer(values)
    extra = ["numpy>=1.24"]  # the token files are read through numpy's memory maps
    # bpe trains with Hugging Face's tokenizers, which also reads a GPT-2 folder's vocab.json and merges.txt
    extra += ["tokenizers>=0.20"] if kind == "bpe" or gpt2_weights else []
    extra += ["tiktoken>=0.8"] if kind == "gpt2" else []  # GPT-2's encoding
    extra += ["huggingface_hub>=0.25", "safetensors>=0.4"] if gpt2_weights else []  # the weights: hub, file format
    return extra
