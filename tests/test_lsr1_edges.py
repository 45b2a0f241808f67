"""Inputs that crashed the optimizer or sent it silently down a wrong path.

Each test here failed on the core before these edge cases were fixed (see the commit message
that added it for how).
"""

from __future__ import annotations

import math

import pytest
import torch
from dense_reference import sr1_trust_region_dense
from test_lsr1_optimizer import quartic_problem

from lsr1bench.optim import LSR1
from lsr1bench.optim.lsr1 import OUTCOMES

F64 = torch.float64


def _closure(opt, params, f):
    def closure():
        opt.zero_grad()
        loss = f(*params)
        loss.backward()
        return loss

    return closure


def _outcomes_add_up(stats) -> bool:
    return stats["steps"] == sum(stats[key] for key in OUTCOMES)


# --- a full-batch run to convergence ----------------------------------------------------------
def _quadratic(n: int = 50):
    gen = torch.Generator().manual_seed(0)
    Q = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))[0]
    A = Q @ torch.diag(torch.linspace(0.5, 20.0, n, dtype=F64)) @ Q.T
    b = torch.randn(n, generator=gen, dtype=F64)
    x_star = torch.linalg.solve(A, b)
    f_star = float(-0.5 * b @ x_star)
    x0 = torch.randn(n, generator=gen, dtype=F64)

    def f(x):
        return 0.5 * x @ A.to(x) @ x - b.to(x) @ x

    return f, x0, x_star, f_star


def _rosenbrock(n: int = 4):
    def f(x):
        return (100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2).sum()

    x0 = torch.tensor([-1.2, 1.0] * (n // 2), dtype=F64)
    return f, x0, torch.ones(n, dtype=F64), 0.0


def _run_to_convergence(problem, dtype, steps):
    f, x0, x_star, f_star = problem()
    x = x0.to(dtype).clone().requires_grad_(True)
    opt = LSR1([x], memory=5, keep_pairs=True)
    closure = _closure(opt, [x], f)
    radii = []
    for step in range(steps):
        opt.step(closure)  # raised ZeroDivisionError (step 596 in float32) before the fix
        radii.append(opt.statistics()["radius"])
        model = opt.curvature() if step % 25 == 0 else None
        if model is not None and model.k:  # a zero-length s is never stored
            S, _ = model.pairs()
            assert float(S.norm(dim=1).min()) > 0.0
    stats = opt.statistics()
    assert _outcomes_add_up(stats), stats
    eps = torch.finfo(dtype).eps
    # the minimum to the resolution of f in this dtype (float32's f cannot tell the quadratic's
    # last 1e-5 apart; x is then 6e-3 from x*, as sqrt(2 * 1e-5 / lambda_min) says)
    assert float(f(x.detach().to(F64))) - f_star <= 100 * eps * (1.0 + abs(f_star))
    if dtype == F64:
        assert float((x.detach() - x_star).norm()) <= 1e-6 * (1.0 + float(x_star.norm()))
    # Converged: the steps that can no longer be measured are counted as such (or, at a
    # gradient that is exactly zero, as nonpositive_pred) and do nothing.
    assert stats["negligible_steps"] + stats["nonpositive_pred"] > steps // 2, stats
    # the radius stops at a floor instead of halving to underflow (1e-159 on the old core)
    assert min(radii) > 1e-100 and radii[-1] == radii[-100], radii[-5:]
    # no pair storm: the old core stored and dropped 511 zero-length pairs
    assert stats["dropped_pairs"] <= 50, stats


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, F64], ids=["float32", "float64"])
@pytest.mark.parametrize("problem", [_quadratic, _rosenbrock], ids=["quadratic", "rosenbrock"])
def test_three_thousand_full_batch_steps_converge_without_crashing(problem, dtype):
    _run_to_convergence(problem, dtype, 3000)


def test_float32_quadratic_runs_past_the_old_crash_at_step_596():
    _run_to_convergence(_quadratic, torch.float32, 650)


def test_negligible_step_leaves_parameters_and_radius_unchanged():
    # A gradient of 1e-20 at x of order 1: x + s rounds to x, the loss and the gradient at
    # the trial point are those at x, so the step is counted and changes nothing at all.
    x = torch.tensor([1.0, -2.0, 3.0], dtype=F64, requires_grad=True)
    opt = LSR1([x], memory=3)
    closure = _closure(opt, [x], lambda x: 1e-20 * x.sum() + 1.0)
    for _ in range(5):
        opt.step(closure)
    stats = opt.statistics()
    assert torch.equal(x.detach(), torch.tensor([1.0, -2.0, 3.0], dtype=F64))
    assert stats["negligible_steps"] == 5 and stats["stored_pairs"] == 0, stats
    assert stats["radius"] == pytest.approx(math.sqrt(3) * 1e-20, rel=1e-12)  # ||g_0||, unchanged


# --- settings live in param_groups[0] -----------------------------------------------------------
def _small_problem(dtype=F64):
    gen = torch.Generator().manual_seed(1)
    A = torch.randn(6, 6, generator=gen, dtype=F64)
    A = A @ A.T / 6 + 0.3 * torch.eye(6, dtype=F64)
    x0 = torch.randn(6, generator=gen, dtype=F64)

    def f(x):
        return 0.5 * x @ A.to(x) @ x + 0.25 * (x**4).sum()

    return f, x0.to(dtype)


def test_editing_param_groups_changes_the_step():
    f, x0 = _small_problem()
    x = (10 * x0).clone().requires_grad_(True)
    opt = LSR1([x], memory=3)
    opt.param_groups[0]["max_radius"] = 0.05
    closure = _closure(opt, [x], f)
    for _ in range(10):
        start = x.detach().clone()
        opt.step(closure)
        assert float((x.detach() - start).norm()) <= 0.05 * (1 + 1e-9)
        assert opt.statistics()["radius"] <= 0.05


@pytest.mark.parametrize(
    "setting, saved, mine",
    [("gamma", 2.0, 1.0), ("memory", 3, 4), ("method", "line_search", "trust_region")],
)
def test_loading_a_state_made_with_another_structural_setting_names_it(setting, saved, mine):
    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    source = LSR1([x], **{setting: saved})
    closure = _closure(source, [x], f)
    for _ in range(5):
        source.step(closure)
    target = LSR1([x0.clone().requires_grad_(True)], **{setting: mine})
    with pytest.raises(ValueError, match=setting):
        target.load_state_dict(source.state_dict())


def test_changing_gamma_in_param_groups_after_pairs_are_stored_is_an_error():
    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    opt = LSR1([x], memory=3)
    closure = _closure(opt, [x], f)
    for _ in range(4):
        opt.step(closure)
    opt.param_groups[0]["gamma"] = 2.0
    with pytest.raises(ValueError, match="gamma"):
        opt.step(closure)


def test_add_param_group_is_refused():
    x = torch.zeros(3, requires_grad=True)
    opt = LSR1([x])
    with pytest.raises(ValueError, match="parameter group"):
        opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)]})
    assert len(opt.param_groups) == 1


# --- a closure that raises -----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["trust_region", "line_search"])
def test_closure_raising_at_the_trial_point_restores_x_and_counts_an_aborted_step(method):
    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    opt = LSR1([x], memory=3, method=method)
    closure = _closure(opt, [x], f)
    for _ in range(3):
        opt.step(closure)
    start = x.detach().clone()
    calls = []

    def failing():
        calls.append(1)
        if len(calls) == 2:  # the trial point (or the line search's first point)
            raise KeyboardInterrupt("stop")
        return closure()

    with pytest.raises(KeyboardInterrupt):
        opt.step(failing)
    assert torch.equal(x.detach(), start)  # 0.15 away on the old core
    stats = opt.statistics()
    assert stats["aborted_steps"] == 1 and _outcomes_add_up(stats), stats
    opt.step(closure)  # and the optimizer goes on
    assert _outcomes_add_up(opt.statistics())


def test_closure_raising_at_x_counts_an_aborted_step():
    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    opt = LSR1([x], memory=3)

    def failing():
        raise RuntimeError("data loader broke")

    with pytest.raises(RuntimeError, match="data loader"):
        opt.step(failing)
    stats = opt.statistics()
    assert stats["aborted_steps"] == 1 and _outcomes_add_up(stats), stats


# --- k = n, negative gamma, frozen parameters --------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_memory_equal_to_n_with_negative_gamma_agrees_with_the_dense_reference(seed):
    # With k = n pairs, range(Psi) is all of R^n: gamma is no eigenvalue of B, so it may
    # not make a hard case (the old core counted it: bogus hard cases and iterates that left
    # the reference by step 3-6).
    f, x0 = quartic_problem(n=3, seed=seed)
    n = x0.numel()
    x = x0.clone().requires_grad_(True)
    opt = LSR1([x], memory=n, gamma=-1.0, pair_policy="paper")
    closure = _closure(opt, [x], f)
    ours = [x.detach().clone()]
    for _ in range(15):
        opt.step(closure)
        ours.append(x.detach().clone())
    ref = sr1_trust_region_dense(f, x0, 15, memory=n, gamma=-1.0)
    assert opt.statistics()["stored_pairs"] == n  # the k = n case is exercised
    for k, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-8, msg=f"iterate {k} differs")


def test_frozen_parameters_never_move_in_a_hard_case():
    # f = 1/2 a ||w||^2 with gamma = -1: every gradient is parallel to the first step, so g
    # lies in range(Psi) and B's smallest eigenvalue is gamma < 0 on its complement: the
    # hard case, whose z must stay off the frozen coordinates.
    w = torch.tensor([3.0, -2.0, 1.0], dtype=F64, requires_grad=True)
    frozen = torch.tensor([0.5, 0.25], dtype=F64, requires_grad=False)
    opt = LSR1([w, frozen], memory=4, gamma=-1.0)

    def closure():
        opt.zero_grad()
        loss = 2.0 * (w * w).sum() + (frozen * frozen).sum()
        loss.backward()
        return loss

    for _ in range(6):
        opt.step(closure)
    assert opt.statistics()["hard_cases"] >= 1  # the path is exercised
    assert torch.equal(frozen, torch.tensor([0.5, 0.25], dtype=F64))


def test_state_dict_loads_with_weights_only_and_keeps_counting():
    import io

    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    opt = LSR1([x], memory=3)
    closure = _closure(opt, [x], f)
    for _ in range(4):
        opt.step(closure)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)  # counters are a plain dict of ints
    other = LSR1([x0.clone().requires_grad_(True)], memory=3)
    other.load_state_dict(loaded)
    assert other.statistics()["steps"] == 4 and _outcomes_add_up(other.statistics())


def test_pairs_need_keep_pairs_and_round_trip_with_it():
    f, x0 = _small_problem()
    x = x0.clone().requires_grad_(True)
    plain = LSR1([x], memory=3)
    closure = _closure(plain, [x], f)
    for _ in range(4):
        plain.step(closure)
    with pytest.raises(RuntimeError, match="keep_pairs=True"):
        plain.curvature().pairs()
    assert plain.curvature().k > 0 and plain.curvature().eigenvalues().numel() > 0  # B needs no S

    x = x0.clone().requires_grad_(True)
    kept = LSR1([x], memory=3, keep_pairs=True)
    closure = _closure(kept, [x], f)
    for _ in range(4):
        kept.step(closure)
    S, Y = kept.curvature().pairs()
    other = LSR1([x0.clone().requires_grad_(True)], memory=3, keep_pairs=True)
    other.load_full_state_dict(kept.full_state_dict())
    S2, Y2 = other.curvature().pairs()
    assert torch.equal(S, S2) and torch.equal(Y, Y2)
    # the state's n-long rows: Psi (and S with keep_pairs), m n and 2 m n elements
    n = x0.numel()
    elements = [sum(t.numel() for t in opt.state[p].values() if torch.is_tensor(t) and t.shape[-1:] == (n,))
                for opt, p in ((plain, plain.param_groups[0]["params"][0]), (kept, x))]
    assert elements == [3 * n, 6 * n]


def test_the_ranks_digest_tells_a_rank_one_step_ahead():
    # A rank whose closure raised before the first collective and that goes on is one
    # step ahead with every other counter equal: the digest must differ (Cauchy-Schwarz
    # check in check_consistent), or its collectives pair with the others' one batch late.
    from lsr1bench.optim._distributed import check_consistent, decision_digest

    behind = dict.fromkeys(("accepted_steps", "rejected_steps", "skipped_updates", "dropped_pairs",
                            "nonfinite_points", "aborted_steps"), 0)
    behind["steps"] = 7
    ahead = {**behind, "steps": 8}
    a, b = decision_digest(behind, 1.0, 3), decision_digest(ahead, 1.0, 3)
    assert a != b
    with pytest.raises(RuntimeError, match="disagree"):
        check_consistent(a + b, a * a + b * b, 2, 8)
