"""GPU memory (allocated and peak) logged at logging steps on CUDA."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean
from ltgen.features.grad_norm import LOGGED, any_logger

KEYS: dict[str, dict[str, Key]] = {
    "logging": {
        "log_gpu_memory": Key(
            boolean,
            True,
            "on CUDA, log gpu_mem_alloc_gib and gpu_mem_peak_gib at logging steps (no host sync)",
            (LOGGED,),
        )
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {"log_gpu_memory": values["logging"]["log_gpu_memory"] and any_logger(values)}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"gpu_memory": f["log_gpu_memory"]}
