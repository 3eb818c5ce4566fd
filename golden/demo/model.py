"""The model: a CNN of 2 conv blocks (16, 32 channels), dropout 0.1."""

import torch
from torch import nn

CHANNELS = [16, 32]  # [model] channels: each block halves the image
DROPOUT = 0.1  # [model] dropout, before the classifier


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized CNN for data_info's image shape and number of classes, on `device`."""
    channels, height, width = data_info["input_shape"]
    layers: list[nn.Module] = []
    for channels_out in CHANNELS:
        layers += [nn.Conv2d(channels, channels_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, height, width = channels_out, height // 2, width // 2
    layers += [nn.Flatten(), nn.Dropout(DROPOUT), nn.Linear(channels * height * width, data_info["num_outputs"])]
    # On a GPU, convolutions run fastest with channels-last (NHWC) weights and inputs.
    return nn.Sequential(*layers).to(
        device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format
    )


def summary(model: nn.Module) -> str:
    """Parameter counts per top-level layer, and in all."""
    lines = [f"{'layer':<8} {'type':<18} {'params':>10}"]
    for name, child in model.named_children():
        lines.append(f"{name:<8} {type(child).__name__:<18} {sum(p.numel() for p in child.parameters()):>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)
