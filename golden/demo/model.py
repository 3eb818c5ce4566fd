"""The model: a CNN of 2 conv blocks (16, 32 channels), dropout 0.1."""

import torch
from torch import nn

CHANNELS = [16, 32]  # [model] channels: each block halves the image
DROPOUT = 0.1  # [model] dropout, before the classifier


def build_model(data_info: dict, device: torch.device) -> nn.Module:
    """A fresh, randomly initialized CNN for data_info's image shape and number of classes, on `device`."""
    channels, height, width = data_info["input_shape"]
    layers: list[nn.Module] = []
    for channels_out in CHANNELS:
        layers += [nn.Conv2d(channels, channels_out, kernel_size=3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        channels, height, width = channels_out, height // 2, width // 2
    layers += [nn.Flatten(), nn.Dropout(DROPOUT), nn.Linear(channels * height * width, data_info["num_outputs"])]
    # On a GPU, convolutions run fastest with channels-last (NHWC) weights and inputs.
    return nn.Sequential(*layers).to(
        device, memory_format=torch.channels_last if device.type == "cuda" else torch.preserve_format
    )


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
