"""The model: an MLP with hidden layers of 128 units, ReLU."""

import math

import torch
from torch import nn

HIDDEN_SIZES = [128]  # [model] hidden_sizes


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized MLP for data_info's input shape and number of outputs, on `device`."""
    width = math.prod(data_info["input_shape"])
    layers: list[nn.Module] = [nn.Flatten()]
    for hidden in HIDDEN_SIZES:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, data_info["num_outputs"]))
    return nn.Sequential(*layers).to(device)
