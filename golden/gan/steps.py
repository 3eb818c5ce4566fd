"""What training computes, for the GAN: Lightning's training_step (in manual-optimization form: two optimizers,
stepped by hand), validation_step, test_step and configure_optimizers, as plain functions; and the sample grids.

train.py calls them and does the rest (devices, mixed precision, logging, checkpoints).
"""

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from manual import ManualStep
from model import LATENT_DIM

Batch = list[torch.Tensor]  # [images, labels], on the device, scaled to [-1, 1]; the labels go unused
Models = dict[str, nn.Module]  # "generator" and "discriminator"


def training_step(
    models: Models, optimizers: dict[str, torch.optim.Optimizer], batch: Batch, step: ManualStep
) -> dict[str, torch.Tensor]:
    """One discriminator update, then one generator update, on a batch of real images. Returns the losses to log."""
    generator, discriminator = models["generator"], models["discriminator"]
    real = batch[0]
    fake = generator(torch.randn(len(real), LATENT_DIM, device=real.device))
    real_label, fake_label = torch.ones(len(real), device=real.device), torch.zeros(len(real), device=real.device)

    # The discriminator learns to say 1 to real images and 0 to generated ones (detached: the generator's weights
    # get nothing from this loss).
    with step.toggle(optimizers["discriminator"]):
        loss_real = F.binary_cross_entropy_with_logits(discriminator(real), real_label)
        loss_fake = F.binary_cross_entropy_with_logits(discriminator(fake.detach()), fake_label)
        loss_d = loss_real + loss_fake
        step.backward(loss_d, optimizers["discriminator"])
        step.step(optimizers["discriminator"])

    # The generator learns to make the (just updated) discriminator say 1: the non-saturating loss of Goodfellow et
    # al. (2014), whose gradients stay strong while the discriminator wins. Only the generator's weights change.
    with step.toggle(optimizers["generator"]):
        loss_g = F.binary_cross_entropy_with_logits(discriminator(fake), real_label)
        step.backward(loss_g, optimizers["generator"])
        step.step(optimizers["generator"])
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach()}


def validation_step(models: nn.ModuleDict, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one batch of held-out real images and as many generated ones; train.py averages them as val_<name>.
    d_real and d_fake are the discriminator's mean probability of "real" for each: both near 0.5 when it cannot tell."""
    generator, discriminator = models["generator"], models["discriminator"]
    real = batch[0]
    real_logits = discriminator(real)
    fake_logits = discriminator(generator(torch.randn(len(real), LATENT_DIM, device=real.device)))
    ones, zeros = torch.ones_like(real_logits), torch.zeros_like(fake_logits)
    loss_real = F.binary_cross_entropy_with_logits(real_logits, ones)
    loss_fake = F.binary_cross_entropy_with_logits(fake_logits, zeros)
    return {
        "loss_d": loss_real + loss_fake,
        "loss_g": F.binary_cross_entropy_with_logits(fake_logits, ones),
        "d_real": torch.sigmoid(real_logits).mean(),
        "d_fake": torch.sigmoid(fake_logits).mean(),
    }


def test_step(models: nn.ModuleDict, batch: Batch) -> dict[str, torch.Tensor]:
    """Metrics of one test batch (logged as test_<name>); the same as validation unless you change it."""
    return validation_step(models, batch)


def configure_optimizers(models: nn.ModuleDict, lr_g: float, lr_d: float) -> dict[str, torch.optim.Optimizer]:
    """An Adam for each model, by name, at a constant learning rate. beta1 = 0.5 as in DCGAN: with the usual 0.9
    the momentum of the two players' updates makes training oscillate."""
    fused = next(models.parameters()).is_cuda  # one kernel for all parameters on the GPU
    return {
        "generator": torch.optim.Adam(models["generator"].parameters(), lr=lr_g, betas=(0.5, 0.999), fused=fused),
        "discriminator": torch.optim.Adam(
            models["discriminator"].parameters(), lr=lr_d, betas=(0.5, 0.999), fused=fused
        ),
    }


def sample_latent(count: int, generator: torch.Generator) -> torch.Tensor:
    """`count` noise vectors for the generator, drawn from `generator` (a seeded torch.Generator)."""
    return torch.randn(count, LATENT_DIM, generator=generator)


@torch.no_grad()
def sample_images(models: nn.ModuleDict, latent: torch.Tensor) -> torch.Tensor:
    """The generator's images for `latent`, in eval mode (batch norm's running statistics), in [0, 1]."""
    generator = models["generator"]
    generator.eval()
    images = generator(latent).float()
    generator.train()
    return (images + 1) / 2


def save_grid(images: torch.Tensor, path: Path, gap: int = 2) -> None:
    """Save images (N x C x H x W in [0, 1]) as one PNG: a square-ish grid, `gap` pixels between them. The file is
    written under a temporary name, then renamed: a failed write (a full disk) leaves no half-written PNG."""
    count, channels, height, width = images.shape
    columns = max(1, round(count**0.5))
    rows = -(-count // columns)
    grid = torch.zeros(channels, rows * (height + gap) + gap, columns * (width + gap) + gap)
    for i, image in enumerate(images.cpu()):
        top, left = gap + (i // columns) * (height + gap), gap + (i % columns) * (width + gap)
        grid[:, top : top + height, left : left + width] = image
    pixels = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous()  # H x W x C
    image = Image.frombytes(
        "L" if channels == 1 else "RGB", (pixels.shape[1], pixels.shape[0]), bytes(pixels.view(-1).tolist())
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        image.save(temporary, format="PNG")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
