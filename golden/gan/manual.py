"""Manual optimization ([trainer] manual_optimization): steps.py's training_step calls backward and the
optimizer steps itself, through a ManualStep, which does around them what the automatic loop would:
- zero the gradients after each step.
"""

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class ManualStep:
    """The `step` of training_step(models, optimizers, batch, step). For each optimizer, in order:

    with step.toggle(optimizer):     # only its parameters get gradients (Lightning's toggle_optimizer)
        loss = ...
        step.backward(loss, optimizer)
        step.step(optimizer)
    """

    def __init__(
        self,
        models: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
    ) -> None:
        self.models, self.optimizers = models, optimizers

    @contextlib.contextmanager
    def toggle(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Within: the parameters that `optimizer` does not step are frozen, so a loss that runs through several
        models (a GAN's generator loss runs through the discriminator) puts gradients only where they are used."""
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        frozen = [
            p for model in self.models.values() for p in model.parameters() if p.requires_grad and id(p) not in trained
        ]
        for p in frozen:
            p.requires_grad_(False)
        try:
            yield
        finally:
            for p in frozen:
                p.requires_grad_(True)

    def backward(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() for `optimizer`'s parameters, as the automatic loop runs it."""
        loss.backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step `optimizer`: step, zero its gradients. True if it stepped."""
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return True
