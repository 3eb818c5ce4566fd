"""The model: a ResNet-18 for small images, as in CIFAR-10 papers (He et al., 2016).

Unlike ImageNet's ResNet, the stem is one 3x3 convolution with no max-pool, so a 32x32 image keeps its
resolution through the first stage. Four stages of basic blocks follow, each halving the resolution (but the
first) and doubling the channels; then global average pooling and a linear classifier.
"""

from collections import OrderedDict

import torch
from torch import nn

DEPTH = 18  # [model] depth: 10, 18 or 34 layers
WIDTH = 64  # [model] width: channels of the first stage; the next three have 2x, 4x and 8x as many
BLOCKS = (2, 2, 2, 2)  # basic blocks in each of the 4 stages, for DEPTH (2 convolutions each, + stem + head)
DROPOUT = 0.1  # [model] dropout, before the classifier


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, added to the input (through a 1x1 convolution where the shape changes)."""

    def __init__(self, channels_in: int, channels_out: int, stride: int) -> None:
        super().__init__()
        # No biases: the BatchNorm right after each convolution has its own.
        self.conv1 = nn.Conv2d(channels_in, channels_out, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Identity()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels_out, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(channels_out),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


def stage(channels_in: int, channels_out: int, blocks: int, stride: int) -> nn.Sequential:
    """`blocks` basic blocks; the first one changes the channels and, with stride 2, halves the resolution."""
    return nn.Sequential(
        *(
            BasicBlock(channels_in if i == 0 else channels_out, channels_out, stride if i == 0 else 1)
            for i in range(blocks)
        )
    )


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized ResNet for data_info's image channels and number of classes, on `device`."""
    widths = [WIDTH * 2**i for i in range(len(BLOCKS))]
    model = nn.Sequential(
        OrderedDict(
            stem=nn.Sequential(
                nn.Conv2d(data_info["input_shape"][0], WIDTH, kernel_size=3, padding=1, bias=False),
                nn.BatchNorm2d(WIDTH),
                nn.ReLU(),
            ),
            stage1=stage(WIDTH, widths[0], BLOCKS[0], stride=1),
            stage2=stage(widths[0], widths[1], BLOCKS[1], stride=2),
            stage3=stage(widths[1], widths[2], BLOCKS[2], stride=2),
            stage4=stage(widths[2], widths[3], BLOCKS[3], stride=2),
            pool=nn.AdaptiveAvgPool2d(1),  # any image size works: each channel is averaged over the image
            flatten=nn.Flatten(),
            dropout=nn.Dropout(DROPOUT),
            head=nn.Linear(widths[3], data_info["num_outputs"]),
        )
    )
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for module in model.modules():
        if isinstance(module, BasicBlock):
            # Each block starts as the identity (its residual branch outputs 0), which makes early training of
            # deep ResNets more stable (Goyal et al., 2017, "Accurate, Large Minibatch SGD"; torchvision's zero_init_residual).
            nn.init.zeros_(module.bn2.weight)
    # On a GPU, convolutions run fastest with channels-last (NHWC) weights and inputs.
    return model.to(device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format)


def example_input(data_info: dict, batch_size: int, device: torch.device) -> torch.Tensor:
    """A batch of zeros shaped and typed as training feeds the model: images of data_info's input shape, as
    floats. Keep it in step with the model's forward when you change what it takes."""
    return torch.zeros(batch_size, *data_info["input_shape"], device=device)


def summary(model: nn.Module, example: torch.Tensor) -> str:
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
        model(example)
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
