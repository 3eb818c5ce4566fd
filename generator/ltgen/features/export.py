"""export.py: the trained model to a torch.export program (.pt2) and to ONNX, checked against the model."""

from __future__ import annotations

from typing import Any

from ltgen.checks import Applies, Key, boolean

# export.py exports a checkpoint: without checkpoints there is nothing to export.
CHECKPOINTED = Applies(
    ("checkpoint.save_last", "checkpoint.save_top_k"),
    lambda save_last, save_top_k: save_last or save_top_k != 0,
    "when train.py saves checkpoints (save_last = true or save_top_k != 0), one of which export.py exports",
)

KEYS: dict[str, dict[str, Key]] = {
    "export": {
        "enabled": Key(
            boolean, False, "emit export.py: the best checkpoint to torch.export (.pt2) and ONNX", (CHECKPOINTED,)
        ),
    }
}


def flags(values: dict[str, dict[str, Any]]) -> dict[str, Any]:
    checkpoint = values["checkpoint"]
    return {
        "export": values["export"]["enabled"] and CHECKPOINTED.when(checkpoint["save_last"], checkpoint["save_top_k"])
    }


def dependencies(values: dict[str, dict[str, Any]]) -> list[str]:
    """What export.py imports: the ONNX exporter's packages and ONNX Runtime, which checks the file it writes."""
    return ["onnx>=1.17", "onnxscript>=0.2", "onnxruntime>=1.20"] if flags(values)["export"] else []
