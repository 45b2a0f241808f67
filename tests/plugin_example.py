"""A plugin module outside the package, for the tests of optimizers, models and datasets by path.

Suites name these as ``plugin_example:tiny_net`` (the tests run from ``tests/``) or
``tests.plugin_example:...`` from the repository root.
"""

from __future__ import annotations

import torch
from torch import nn


def tiny_net(hidden: int = 16, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A one-hidden-layer network sized by the dataset (input_shape, num_classes come from lsr1bench)."""
    inputs = 1
    for d in input_shape:
        inputs *= d
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.Tanh(), nn.Linear(hidden, num_classes))


def blobs(train: int = 200, test: int = 100, classes: int = 3, features: int = 8):
    """Gaussian clusters: train as (x, y) tensors, test as a torch dataset of (x, y) items."""
    generator = torch.Generator().manual_seed(1)
    centres = 3.0 * torch.randn(classes, features, generator=generator)

    def draw(n: int):
        y = torch.arange(n) % classes
        return centres[y] + torch.randn(n, features, generator=generator), y

    test_x, test_y = draw(test)
    return draw(train), torch.utils.data.TensorDataset(test_x, test_y), classes


blobs.weight_decay = 1e-3  # the plugin declares the L2 coefficient of its objective


class SignSGD(torch.optim.Optimizer):
    """A first-order optimizer of the plugin's own: x <- x - lr * sign(g)."""

    def __init__(self, params, lr: float = 0.01):
        if lr <= 0:
            raise ValueError(f"Invalid learning rate: {lr}")
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad.sign(), alpha=-group["lr"])
