"""L-SR1 really trains a network on real data (the embedded MNIST subset)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lsr1bench.optim import LSR1
from lsr1bench.registry.datasets import load_dataset
from lsr1bench.registry.models import build_model


@pytest.mark.slow
def test_lsr1_trains_lenet5_with_batch_norm_on_real_mnist():
    torch.manual_seed(0)
    data = load_dataset("mnist-embedded", train_subset=3000, test_subset=500)
    model = build_model("lenet5", batch_norm=True, input_shape=data.input_shape)
    opt = LSR1(model.parameters(), memory=5)
    gen = torch.Generator().manual_seed(0)

    def test_error() -> float:
        model.eval()
        with torch.no_grad():
            wrong = (model(data.test_x).argmax(1) != data.test_y).float().mean()
        model.train()
        return 100.0 * float(wrong)

    start_error = test_error()
    losses = []
    for _ in range(3):  # three epochs of batch 400
        for idx in torch.randperm(len(data.train_y), generator=gen).split(400):
            x, y = data.train_x[idx], data.train_y[idx]

            def closure(x=x, y=y):
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            losses.append(float(opt.step(closure).detach()))
    stats = opt.statistics()
    assert losses[-1] < 0.35 * losses[0], losses
    assert test_error() < 10.0 < start_error
    assert stats["accepted_steps"] >= 5 and stats["stored_pairs"] >= 1
