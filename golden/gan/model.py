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


def example_input(data_info: dict, batch_size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """A batch of zeros for each model, shaped and typed as training feeds it: the generator's noise, the
    discriminator's images, as floats. Keep it in step with their forward when you change what they take."""
    images = torch.zeros(batch_size, *data_info["input_shape"], device=device)
    return {"generator": torch.zeros(batch_size, LATENT_DIM, device=device), "discriminator": images}


def summary(model: nn.Module, example: dict[str, torch.Tensor]) -> str:
    """Per top-level layer its parameter count, and the shapes going in and out of it when the model runs
    `example` (Lightning's ModelSummary with example_input_array); then the parameters in all. The forward pass
    runs in eval mode without gradients, which changes no weight, buffer or random state."""
    seen_in: dict[str, str] = {}
    seen_out: dict[str, str] = {}
    hooks = []
    for name, child in model.named_children():
        # A ModuleList is never called itself: its first module's input and its last one's output stand for it.
        first, last = (child[0], child[-1]) if isinstance(child, nn.ModuleList) and len(child) else (child, child)
        hooks.append(first.register_forward_pre_hook(lambda _, args, name=name: note_shapes(seen_in, name, args)))
        hooks.append(last.register_forward_hook(lambda _, args, out, name=name: note_shapes(seen_out, name, out)))
    training = model.training
    model.eval()
    with torch.no_grad():
        for name, inputs in example.items():
            model[name](inputs)
    model.train(training)
    for hook in hooks:
        hook.remove()
    rows = [("layer", "type", "params", "in", "out")]
    for name, child in model.named_children():
        params = f"{sum(p.numel() for p in child.parameters()):,}"
        # -: the forward pass did not call it
        rows.append((name, type(child).__name__, params, seen_in.get(name, "-"), seen_out.get(name, "-")))
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}  {d:<{widths[3]}}  {e}" for a, b, c, d, e in rows]
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lines.append(f"{total:,} parameters ({trainable:,} trainable), {total * 4 / 2**20:.1f} MiB in float32")
    return "\n".join(lines)


def note_shapes(shapes: dict[str, str], name: str, values: object) -> None:
    """Record under `name` the shapes of the tensors in `values` (a module's inputs or its output); a module called
    more than once keeps its first call's. Returns None, as a pre-hook must to leave the inputs as they are."""
    tensors = values if isinstance(values, tuple | list) else (values,)
    shapes.setdefault(name, ", ".join(str(list(t.shape)) for t in tensors if isinstance(t, torch.Tensor)))
