"""The model: a DCGAN (Radford et al., 2016) for 28x28 images. The generator turns noise into an image
with transposed convolutions, batch norm and ReLU, ending in tanh ([-1, 1], as data.py scales real images); the
discriminator reads an image with strided convolutions and LeakyReLU and says how real it looks (one logit)."""

import torch
from torch import nn

LATENT_DIM = 100  # [model] latent_dim: the generator's noise input
GENERATOR_WIDTH = 64  # [model] generator_width: channels of its last hidden layer (twice that before it)
DISCRIMINATOR_WIDTH = 64  # [model] discriminator_width: channels of its first layer (twice that after it)


class Generator(nn.Module):
    """Noise (batch x LATENT_DIM) to images (batch x channels x side x side) in [-1, 1]: a linear layer makes
    a side/4 x side/4 map, and two transposed convolutions each double its size."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.start = (2 * GENERATOR_WIDTH, side // 4, side // 4)
        self.project = nn.Sequential(
            nn.Linear(LATENT_DIM, 2 * GENERATOR_WIDTH * (side // 4) ** 2, bias=False),
            nn.BatchNorm1d(2 * GENERATOR_WIDTH * (side // 4) ** 2),
            nn.ReLU(),
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * GENERATOR_WIDTH, GENERATOR_WIDTH, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(GENERATOR_WIDTH),
            nn.ReLU(),
            nn.ConvTranspose2d(GENERATOR_WIDTH, channels, kernel_size=4, stride=2, padding=1),
            nn.Tanh(),
        )

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        return self.upsample(self.project(noise).view(-1, *self.start))


class Discriminator(nn.Module):
    """Images to one logit each (> 0: "real"): two strided convolutions each halve the image, then a linear layer.
    No batch norm on the input layer, as in DCGAN."""

    def __init__(self, channels: int, side: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, DISCRIMINATOR_WIDTH, kernel_size=4, stride=2, padding=1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(DISCRIMINATOR_WIDTH, 2 * DISCRIMINATOR_WIDTH, kernel_size=4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(2 * DISCRIMINATOR_WIDTH),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.classify = nn.Linear(2 * DISCRIMINATOR_WIDTH * (side // 4) ** 2, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(images)).squeeze(1)


def init_weights(module: nn.Module) -> None:
    """DCGAN's initialization: weights from N(0, 0.02), batch-norm scales from N(1, 0.02)."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def build_model(data_info: dict, device: torch.device) -> nn.ModuleDict:
    """A fresh generator and discriminator for data_info's image shape, on `device`, by name. Both are saved
    in one state dict (generator.*, discriminator.*); steps.py gives each its own optimizer."""
    channels, side, _ = data_info["input_shape"]
    models = nn.ModuleDict({"generator": Generator(channels, side), "discriminator": Discriminator(channels, side)})
    models.apply(init_weights)
    return models.to(device)


def summary(model: nn.Module) -> str:
    """Parameter counts per top-level layer, and in all."""
    lines = [f"{'layer':<13} {'type':<18} {'params':>10}"]
    for name, child in model.named_children():
        lines.append(f"{name:<13} {type(child).__name__:<18} {sum(p.numel() for p in child.parameters()):>10,}")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)
