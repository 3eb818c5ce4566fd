"""Mixed precision (float16 or bfloat16 autocast) and TF32 matmuls."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean, choice
from ltgen.unit import Entry, by_name, whole

KEYS: dict[str, dict[str, Key]] = {
    "trainer": {
        "precision": Key(
            choice("32", "16-mixed", "bf16-mixed"),
            "32",
            '"32" | "16-mixed" | "bf16-mixed" (16-mixed needs a GPU: on the CPU it runs as bf16-mixed)',
        ),
        "tf32": Key(boolean, True, "TF32 matmuls on Ampere+ GPUs: faster, slightly less precise float32"),
    }
}

AMP_DTYPES = {"32": "", "16-mixed": "torch.float16", "bf16-mixed": "torch.bfloat16"}
# torch.autocast's arguments: with no dtype it takes float16 on a GPU and bfloat16 on the CPU, which is what
# 16-mixed means (float16 autocast on the CPU is slow and unscaled: Lightning switches to bf16 too).
AUTOCAST_ARGS = {"32": "", "16-mixed": "device.type", "bf16-mixed": "device.type, dtype=torch.bfloat16"}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trainer = values["trainer"]
    return {
        "amp_dtype": AMP_DTYPES[trainer["precision"]],
        "autocast_args": AUTOCAST_ARGS[trainer["precision"]],
        "tf32": trainer["tf32"],
        "grad_scaler": trainer["precision"] == "16-mixed",
    }


def paste(f: dict[str, Any]) -> dict[str, Any]:
    inspected = f["clip"] or f["grad_norm"] or "on_before_optimizer_step" in f["hooks"]
    return {
        "step_call": "scaler.step(optimizer)" if f["grad_scaler"] else "optimizer.step()",
        "unscale": f["grad_scaler"] and inspected,  # clipping, the norm and the hook see true gradients
    }


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"precision": True}


def state(f: dict[str, Any]) -> list[Entry]:
    if not f["grad_scaler"]:
        return []
    return [by_name("scalers", "scalers", "scaler") if f["manual"] else whole("scaler", "scaler")]
