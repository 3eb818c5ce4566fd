"""The model: an MLP, 784 -> 128 -> 10, ReLU."""

from torch import nn


def build_model() -> nn.Module:
    """A fresh, randomly initialized model for 1 x 28 x 28 images and 10 classes."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(784, 128),
        nn.ReLU(),
        nn.Linear(128, 10),
    )
