"""Start-up anchor: the least a PyTorch training script with TensorBoard and a progress bar pays before its first step.

It imports what an emitted project imports (torch, TensorBoard's SummaryWriter, tqdm), builds the default mnist
project's model (MLP 784-128-10, dropout 0.1) and optimizer (AdamW), and runs one training step on one random
batch of 64. benchmarks/run.py times it as a whole process beside `python train.py --fast-dev-run`.

    python benchmarks/startup_anchor.py
"""

import torch
from torch import nn
from torch.utils.tensorboard import SummaryWriter  # noqa: F401  imported, as a training script does; its cost counts
from tqdm import tqdm


def main() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Dropout(0.1), nn.Linear(128, 10))
    # The optimizer's constructor is part of the start-up bill (it imports torch._dynamo), as in any PyTorch loop.
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    batch = (torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,)))
    for images, labels in tqdm([batch], disable=True):  # one step, through a (silent) progress bar
        loss = nn.functional.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    print(f"one step: loss {loss.item():.4f}")


if __name__ == "__main__":
    main()
