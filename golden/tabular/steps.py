"""What training computes: Lightning's training_step, validation_step, test_step and configure_optimizers,
as plain functions, and summarize (R^2 from the averaged metrics).

Regression with the mean squared error. Targets are standardized (data.py), so the loss and MAE are in units
of the target's training standard deviation; R^2 has no units. train.py calls these functions and does the
rest (devices, logging, checkpoints).
"""

import torch
import torch.nn.functional as F
from torch import nn

Batch = list[torch.Tensor]  # [features (batch x features), targets (batch)], on the device, standardized


def training_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The loss to minimize on one batch; train.py runs the backward pass."""
    features, targets = batch
    return F.mse_loss(model(features).squeeze(1).float(), targets)


def validation_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one batch; train.py averages them over the set, then summarize() turns the averages into R^2."""
    features, targets = batch
    errors = model(features).squeeze(1).float() - targets
    return {
        "loss": errors.square().mean(),  # mean squared error
        "mae": errors.abs().mean(),
        # Helpers for R^2 = 1 - MSE / Var(targets), the variance over the whole set: summarize() drops them.
        "target_mean": targets.mean(),
        "target_sq_mean": targets.square().mean(),
    }


def test_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one test batch (logged as test_<name>); the same as validation unless you change it."""
    return validation_step(model, batch)


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    """From the set's averaged metrics: loss, mae and r2 (1 is perfect, 0 is no better than predicting the mean)."""
    mean, square_mean = metrics.pop("target_mean"), metrics.pop("target_sq_mean")
    variance = square_mean - mean**2  # in units of the training set's variance (the targets are standardized)
    # A set whose targets (nearly) all agree has no variance to explain: R^2 is undefined there.
    metrics["r2"] = 1 - metrics["loss"] / variance if variance > 1e-6 else float("nan")
    return metrics


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
