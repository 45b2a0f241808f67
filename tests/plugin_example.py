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


# --- broken plugins, for the checks before training ---


def wide_net(extra: int = 2, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    """A model with ``extra`` logits too many: it would train silently on the wrong problem."""
    return tiny_net(8, input_shape, num_classes + extra)


def failing_net(input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> nn.Module:
    raise RuntimeError("no weights file at /nowhere/net.pt")


def corrupt_blobs(train: int = 200):
    """A dataset factory that raises, as one whose archive is corrupt does."""
    raise OSError(f"blobs archive is corrupt (wanted {train} examples)")


class ExplodingSGD(torch.optim.Optimizer):
    """Steps like SGD, then raises on its third step: a failure only training can find."""

    def __init__(self, params, lr: float = 0.01):
        super().__init__(params, {"lr": lr})
        self.calls = 0

    @torch.no_grad()
    def step(self, closure=None):
        self.calls += 1
        if self.calls == 3:
            raise FloatingPointError("step 3 exploded")
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    p.add_(p.grad, alpha=-group["lr"])
