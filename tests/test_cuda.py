"""CUDA paths of the optimizer: float32 with the user's TF32 setting on. Skipped without a GPU."""

from __future__ import annotations

import pytest
import torch

from lsr1bench.optim import LSR1

pytestmark = pytest.mark.cuda


def elementwise_problem(n: int, seed: int = 0):
    """No matmul in the objective, so TF32 can only matter inside the optimizer."""
    gen = torch.Generator().manual_seed(seed)
    d = torch.rand(n, generator=gen) * 2.0 + 0.1
    x0 = torch.randn(n, generator=gen)

    def f(x):
        d_ = d.to(x)
        return (0.5 * d_ * x * x + 0.25 * x**4 + torch.log(torch.cosh(x))).sum()

    return f, x0


def run(f, x0, dtype, steps=10, memory=5):
    x = x0.to("cuda", dtype).clone().requires_grad_(True)
    opt = LSR1([x], memory=memory, keep_pairs=True)

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return x.detach(), opt


def test_user_tf32_setting_does_not_reach_the_optimizer_products():
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")  # TF32 allowed for float32 matmuls
    try:
        f, x0 = elementwise_problem(200_000)
        x32, opt = run(f, x0, torch.float32)
        assert torch.get_float32_matmul_precision() == "high"  # the user's setting is back
        model = opt.curvature()
        S, Psi = (t.double() for t in model.basis())
        ss, sp, pp = model.grams()
        for got, want in [(ss, (S * S).sum(1)), (sp, torch.tril(S @ Psi.T)), (pp, Psi @ Psi.T)]:
            # TF32 (10-bit mantissa) would give errors near 1e-3; float32 accumulation ~1e-6.
            torch.testing.assert_close(got, want.cpu(), rtol=2e-5, atol=2e-5 * float(want.abs().max()))
        # Trajectories: on a small, well-scaled problem the loss itself is exact enough in
        # float32 that accept/reject decisions match float64 (at n = 200,000 the float32 sum
        # of the loss is too coarse for rho, whatever the optimizer does).
        f_small, x0_small = elementwise_problem(4_096, seed=2)
        x32, _ = run(f_small, 0.3 * x0_small, torch.float32)
        x64, _ = run(f_small, 0.3 * x0_small, torch.float64)
        torch.testing.assert_close(x32.double(), x64, rtol=1e-4, atol=1e-4)
    finally:
        torch.set_float32_matmul_precision(previous)


def test_cuda_and_cpu_iterates_agree_in_float64():
    f, x0 = elementwise_problem(5_000, seed=1)
    x_gpu, _ = run(f, x0, torch.float64)
    x = x0.double().clone().requires_grad_(True)
    opt = LSR1([x], memory=5)

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    for _ in range(10):
        opt.step(closure)
    torch.testing.assert_close(x_gpu.cpu(), x.detach(), rtol=1e-9, atol=1e-10)


def test_a_cuda_step_makes_two_blocking_transfers():
    """statistics()["host_syncs"] counts what CUDA's sync debug mode sees: two blocking
    device-to-host transfers per step on the common path (after g, after the trial)."""
    f, x0 = elementwise_problem(100_000, seed=3)
    x = x0.to("cuda", torch.float32).clone().requires_grad_(True)
    opt = LSR1([x], memory=5)

    def closure():
        opt.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    for _ in range(12):  # fill the memory
        opt.step(closure)
    before = opt.statistics()
    torch.cuda.synchronize()
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            opt.step(closure)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    after = opt.statistics()
    syncs = after["host_syncs"] - before["host_syncs"]
    extra = after["explicit_passes"] - before["explicit_passes"]
    assert syncs == 2 + extra
    assert len([w for w in caught if "synchroniz" in str(w.message)]) <= syncs
