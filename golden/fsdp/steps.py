"""What training computes: Lightning's training_step, validation_step, test_step and configure_optimizers,
as plain functions, plus the metrics that are not averages (perplexity) and the throughput.

train.py calls them and does the rest (devices, DDP, logging, checkpoints).
"""

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from model import flops_per_token

Batch = list[torch.Tensor]  # [inputs, targets]: B x BLOCK_SIZE token ids, the targets shifted by one, on the device
BLOCK_SIZE = 256  # [data] block_size: tokens in each sample
# Peak dense bf16 tensor-core FLOP/s by GPU name (the first match wins, so specific names come first). MFU is
# measured against it whatever the precision, as nanoGPT does; add your GPU if it is missing.
PEAK_FLOPS = {
    "H100 PCIe": 756e12,
    "H100": 989e12,
    "H200": 989e12,
    "GH200": 989e12,
    "B200": 2250e12,
    "A100": 312e12,
    "L40S": 362e12,
    "L4": 121e12,
    "RTX 4090": 165e12,
    "RTX 3090": 71e12,
}


def lm_loss(model: nn.Module, batch: Batch) -> torch.Tensor:
    """Mean cross-entropy of every next-token prediction in the batch."""
    inputs, targets = batch
    return F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())


def training_step(model: nn.Module, batch: Batch) -> torch.Tensor:
    """The loss to minimize on one batch; train.py runs the backward pass."""
    return lm_loss(model, batch)


def validation_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one batch; train.py averages them over the validation set as val_<name>."""
    return {"loss": lm_loss(model, batch)}


def test_step(model: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one test batch; train.py averages them over the test set as test_<name>."""
    return {"loss": lm_loss(model, batch)}


def summarize(metrics: dict[str, float]) -> dict[str, float]:
    """The averaged metrics, plus perplexity: exp of the mean loss per token (not a mean of exps)."""
    # min(): math.exp overflows past e^709, and a loss of 700 has long diverged anyway.
    return {**metrics, "ppl": math.exp(min(metrics["loss"], 700.0))}


def throughput(model: nn.Module, samples_per_s: float, device: torch.device) -> dict[str, float]:
    """Tokens per second over all processes and, on a GPU listed in PEAK_FLOPS, the model FLOPs utilization: the share
    of the GPU's peak that the model's arithmetic (flops_per_token in model.py) uses."""
    tokens_per_s = samples_per_s * BLOCK_SIZE
    speed = {"tokens_per_s": tokens_per_s}
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        peak = next((flops for gpu, flops in PEAK_FLOPS.items() if gpu in name), None)
        if peak:
            gpus = dist.get_world_size() if dist.is_initialized() else 1
            speed["mfu"] = flops_per_token(model) * tokens_per_s / (peak * gpus)
    return speed


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
    optimizer = torch.optim.AdamW(params, lr=lr, betas=(0.5, 0.999), fused=fused)
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
