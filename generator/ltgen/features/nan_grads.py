"""A report of the parameters whose gradients hold NaN or inf, on a non-finite loss or gradient norm."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Key, boolean, only_with

KEYS: dict[str, dict[str, Key]] = {
    "debug": {
        "nan_grad_report": Key(
            boolean,
            False,
            "name each parameter whose gradient holds NaN or inf when a step goes non-finite",
            (
                only_with("trainer.nonfinite_loss", "stop", "skip", where='with nonfinite_loss "stop" or "skip"'),
                # the report looks at the gradients before the loop's optimizer step, which training_step takes over
                only_with("trainer.manual_optimization", False, where="to automatic optimization"),
            ),
        )
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    trainer = values["trainer"]
    on = values["debug"]["nan_grad_report"] and trainer["nonfinite_loss"] != "off"
    return {"nan_grad_report": on and not trainer["manual_optimization"]}


def units(f: dict[str, Any]) -> dict[str, bool]:
    return {"nan_grads": f["nan_grad_report"]}


def imports(f: dict[str, Any]) -> list[str]:
    return ["from torch.distributed.tensor import DTensor"] if f["nan_grad_report"] and f["fsdp"] else []
