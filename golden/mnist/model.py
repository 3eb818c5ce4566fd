"""The model: an MLP with hidden layers of 128 units, ReLU, dropout 0.1."""

import math

import torch
from torch import nn

HIDDEN_SIZES = [128]  # [model] hidden_sizes
DROPOUT = 0.1  # [model] dropout


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized MLP for data_info's input shape and number of outputs, on `device`."""
    width = math.prod(data_info["input_shape"])
    layers: list[nn.Module] = [nn.Flatten()]
    for hidden in HIDDEN_SIZES:
        layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(DROPOUT)]
        width = hidden
    layers.append(nn.Linear(width, data_info["num_outputs"]))
    return nn.Sequential(*layers).to(device)


def summary(model: nn.Module) -> str:
    """Parameter counts per top-level layer, and in all."""
    lines = [f"{'layer':<8} {'type':<18} {'params':>10}"]
    for name, child in model.named_children():
        lines.append(f"{name:<8} {type(child).__name__:<18} {sum(p.numel() for p in child.parameters()):>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)
