"""What training computes: Lightning's training_step, validation_step, test_step and configure_optimizers,
as plain functions, and the hooks you asked for.

train.py calls them and does the rest (devices, mixed precision, accumulation, logging, checkpoints).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

Batch = list[torch.Tensor]  # [images, labels], on the device, normalized


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

    def lr_factor(step: int) -> float:
        """Learning-rate factor: linear warm-up over 50 steps, then a cosine decay to 0 at total_steps."""
        if step < 50:
            return (step + 1) / 50
        progress = (step - 50) / max(1, total_steps - 50)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)


def on_train_epoch_end(model: nn.Module, epoch: int) -> None:
    """Called after the last batch of every training epoch (and its validation)."""


def on_validation_epoch_end(model: nn.Module, metrics: dict[str, float]) -> None:
    """Called after every validation with its averaged metrics (val_loss, val_acc, ...)."""
