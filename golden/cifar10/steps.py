"""What training computes: Lightning's training_step, validation_step, test_step and configure_optimizers,
as plain functions.

train.py calls them and does the rest (devices, mixed precision, DDP, logging, checkpoints).
"""

import torch
import torch.nn.functional as F
from torch import nn

Batch = list[torch.Tensor]  # [images, labels], on the device, normalized (and augmented, in training)


def training_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The loss to minimize on one batch; train.py runs the backward pass."""
    images, labels = batch
    return F.cross_entropy(model(images), labels)


def validation_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one batch; train.py averages them over the validation set as val_<name>."""
    images, labels = batch
    logits = model(images)
    return {"loss": F.cross_entropy(logits, labels), "acc": (logits.argmax(1) == labels).float().mean()}


def test_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one test batch (logged as test_<name>); the same as validation unless you change it."""
    return validation_step(model, batch)


def configure_optimizers(
    model: nn.Module, lr: float, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer, and the learning-rate schedule (stepped after each optimizer step)."""
    fused = next(model.parameters()).is_cuda  # one kernel for all parameters on the GPU
    # Weight decay on matrices and embeddings only (nanoGPT's rule): decaying biases and norm scales only hurts.
    params = [
        {"params": [p for p in model.parameters() if p.dim() >= 2], "weight_decay": 0.01},
        {"params": [p for p in model.parameters() if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.999), fused=fused)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
