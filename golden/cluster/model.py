"""The model: an MLP, 784 -> 128 -> 10, ReLU, dropout 0.1."""

from torch import nn


def build_model() -> nn.Module:
    """A fresh, randomly initialized model for 1 x 28 x 28 images and 10 classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Dropout(0.1),
        nn.Linear(128, 10),
    )


def summary(model: nn.Module) -> str:
    """Parameter counts per top-level layer, and in all."""
    lines = [f"{'layer':<8} {'type':<12} {'params':>10}"]
    for name, child in model.named_children():
        lines.append(f"{name:<8} {type(child).__name__:<12} {sum(p.numel() for p in child.parameters()):>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)
