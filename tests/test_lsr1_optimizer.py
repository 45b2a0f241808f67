"""Oracles 6-8 of ALGORITHM.md and the optimizer's public behaviour."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from dense_reference import sr1_trust_region_dense

from lsr1bench.optim import LSR1
from lsr1bench.optim.lsr1 import OUTCOMES

F64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def quartic_problem(n: int = 8, seed: int = 0):
    """f(x) = 1/2 x^T A x + 1/4 sum x^4 + sum log cosh(x) - b^T x: smooth, non-quadratic."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    A = A @ A.T / n + 0.5 * torch.eye(n, dtype=F64)
    b = torch.randn(n, generator=gen, dtype=F64)
    x0 = 2.0 * torch.randn(n, generator=gen, dtype=F64)

    def f(x):
        A_ = A.to(x)
        return 0.5 * x @ A_ @ x + 0.25 * (x**4).sum() + torch.log(torch.cosh(x)).sum() - b.to(x) @ x

    return f, x0


def run_lsr1(f, x0, iterations, *, device="cpu", dtype=F64, split=None, **kw):
    """Run LSR1 on f; ``split`` cuts x into several parameter tensors of various shapes."""
    x0 = x0.to(device=device, dtype=dtype)
    if split is None:
        params = [x0.clone().requires_grad_(True)]
    else:
        pieces, shapes = torch.split(x0, [math.prod(s) for s in split]), split
        params = [p.reshape(s).clone().requires_grad_(True) for p, s in zip(pieces, shapes)]
    opt = LSR1(params, **kw)

    def flat():
        return torch.cat([p.detach().reshape(-1) for p in params])

    def closure():
        opt.zero_grad()
        loss = f(torch.cat([p.reshape(-1) for p in params]))
        loss.backward()
        return loss

    iterates = [flat().clone()]
    for _ in range(iterations):
        opt.step(closure)
        iterates.append(flat().clone())
    return iterates, opt


@pytest.mark.parametrize("memory", [50, 5])
def test_iterates_equal_dense_sr1_trust_region_reference(memory):
    f, x0 = quartic_problem()
    # 25 iterations: beyond that f(x) - f(x + s) reaches the rounding level and rho, hence
    # accept/reject, is decided by noise in both implementations.
    iterations = 25
    # The reference implements the paper's rules only, so the optimizer runs with them too
    # (pair_policy="paper"; the default "scaled" policy has tests of its own).
    ours, opt = run_lsr1(f, x0, iterations, memory=memory, pair_policy="paper")
    ref = sr1_trust_region_dense(f, x0, iterations, memory=memory)
    stats = opt.statistics()
    assert stats["accepted_steps"] >= 10 and stats["stored_pairs"] >= min(memory, 5)
    assert stats["rejected_steps"] >= 1  # the comparison covers rejected steps too
    for k, (a, b) in enumerate(zip(ours, ref)):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9, msg=f"iterate {k} differs")
    assert float(f(ours[-1])) < float(f(x0)) - 1.0


def test_reaches_known_minimum_of_a_convex_problem():
    f, x0 = quartic_problem(seed=3)
    ours, _ = run_lsr1(f, x0, 80, memory=5)
    x = ours[-1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    assert float(g.norm()) < 1e-8


def test_any_parameter_shapes_give_the_same_iterates_as_one_flat_tensor():
    f, x0 = quartic_problem(n=24, seed=4)
    flat, _ = run_lsr1(f, x0, 15)
    shaped, _ = run_lsr1(f, x0, 15, split=[(2, 3), (4,), (2, 2, 2), (1, 6)])
    for a, b in zip(flat, shaped):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["trust_region", "line_search"])
@pytest.mark.parametrize("device", DEVICES)
def test_float32_agrees_with_float64(method, device):
    f, x0 = quartic_problem(n=10, seed=5)
    x0 = 0.3 * x0
    it64, _ = run_lsr1(f, x0, 8, method=method, device=device, dtype=F64)
    it32, _ = run_lsr1(f, x0, 8, method=method, device=device, dtype=torch.float32)
    for a, b in zip(it64, it32):
        torch.testing.assert_close(b.double().cpu(), a.cpu(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["trust_region", "line_search"])
@pytest.mark.parametrize("device", DEVICES)
def test_state_dict_round_trip_lockstep(method, device):
    f, x0 = quartic_problem(n=12, seed=6)
    x0 = x0.to(device)
    p1 = x0.clone().requires_grad_(True)
    opt1 = LSR1([p1], method=method, memory=4)

    def closure_for(p, opt):
        def closure():
            opt.zero_grad()
            loss = f(p)
            loss.backward()
            return loss
        return closure

    for _ in range(6):
        opt1.step(closure_for(p1, opt1))
    saved = copy.deepcopy(opt1.state_dict())
    p2 = p1.detach().clone().requires_grad_(True)
    opt2 = LSR1([p2], method=method, memory=4)
    opt2.load_state_dict(saved)
    st = opt2.state[p2]
    assert st["gram_sp"].dtype == F64 and st["gram_sp"].device.type == "cpu"
    for _ in range(6):
        opt1.step(closure_for(p1, opt1))
        opt2.step(closure_for(p2, opt2))
        assert torch.equal(p1, p2)
    assert opt1.statistics() == opt2.statistics()


def test_rejected_step_leaves_parameters_bit_identical():
    torch.manual_seed(0)
    x = torch.randn(1000, dtype=torch.float32, requires_grad=True)
    opt = LSR1([x], initial_radius=1e4, gamma=1e-3)  # B0 = 1e-3 I: a step of length 1e4

    def closure():  # a function whose quadratic model overshoots badly
        opt.zero_grad()
        loss = torch.log1p(x**2).sum()
        loss.backward()
        return loss

    before = x.detach().clone()
    opt.step(closure)
    stats = opt.statistics()
    assert stats["rejected_steps"] == 1 and stats["accepted_steps"] == 0
    assert torch.equal(x.detach(), before)
    assert stats["radius"] == pytest.approx(0.5e4)
    assert stats["stored_pairs"] == 1  # the pair is collected after a rejected step too


def test_nonfinite_trial_is_a_rejected_step_not_a_nan():
    x = torch.ones(5, dtype=F64, requires_grad=True)
    opt = LSR1([x], initial_radius=10.0)
    calls = {"n": 0}

    def closure():
        opt.zero_grad()
        calls["n"] += 1
        loss = (x**2).sum()
        if calls["n"] % 2 == 0:  # the trial point blows up
            loss = loss * float("nan")
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.equal(x.detach(), torch.ones(5, dtype=F64))
    stats = opt.statistics()
    assert stats["rejected_steps"] == 1 and stats["nonfinite_trials"] == 1
    assert stats["stored_pairs"] == 0 and stats["radius"] == 5.0


def test_statistics_count_closure_evaluations_and_steps():
    f, x0 = quartic_problem()
    _, opt = run_lsr1(f, x0, 7)
    stats = opt.statistics()
    assert stats["steps"] == 7
    assert stats["closure_evaluations"] == 14  # x_k and x_k + s on the same data
    assert stats["accepted_steps"] + stats["rejected_steps"] == 7
    for key in ["skipped_updates", "dropped_pairs", "radius", "stored_pairs", "last_rho",
                "hard_cases", "newton_iterations"]:
        assert key in stats


def test_noise_floor_option_skips_pairs_the_model_already_explains():
    """On f = 1/2 ||x||^2 with gamma = 1, y = s = B s up to rounding, so y - B s is rounding
    noise. The paper's test |s^T r| >= r ||s|| ||r|| scores noise like any vector and
    stores the pairs; ``skip_noise_floor=True`` skips them."""

    def run(**kw):
        x = torch.tensor([3.0, -1.0, 2.0], dtype=F64, requires_grad=True)
        opt = LSR1([x], initial_radius=0.5, **kw)

        def closure():
            opt.zero_grad()
            loss = 0.5 * (x**2).sum()
            loss.backward()
            return loss

        for _ in range(3):
            opt.step(closure)
        return opt.statistics()

    floor = run(skip_noise_floor=True)
    assert floor["skipped_updates"] == 3 and floor["stored_pairs"] == 0
    paper = run()
    assert paper["skip_tests"] == 3
    assert paper["skipped_updates"] + paper["stored_pairs"] + paper["dropped_pairs"] >= 3


def test_paper_pair_policy_drops_well_conditioned_float32_pairs_that_scaled_keeps():
    """Why the default pair policy is "scaled": radii that change 2x per step make pairs of
    very different lengths, and the paper's unscaled test at float32 precision reads that as
    rank deficiency. On this problem it drops pairs that float64 keeps, and the float32 run
    then leaves the float64 trajectory; the scaled test keeps them and follows it."""
    f, x0 = quartic_problem(n=10, seed=5)
    x0 = 0.3 * x0
    it64, opt64 = run_lsr1(f, x0, 8, dtype=F64, pair_policy="paper")
    it32_paper, opt_paper = run_lsr1(f, x0, 8, dtype=torch.float32, pair_policy="paper")
    it32_scaled, opt_scaled = run_lsr1(f, x0, 8, dtype=torch.float32, pair_policy="scaled")
    assert opt64.statistics()["dropped_pairs"] == 0
    assert opt_paper.statistics()["dropped_pairs"] >= 1
    assert opt_scaled.statistics()["dropped_pairs"] == 0
    assert float((it32_paper[-1].double() - it64[-1]).norm()) > 1e-2
    torch.testing.assert_close(it32_scaled[-1].double(), it64[-1], rtol=1e-4, atol=1e-4)


def test_scaled_pair_policy_is_invariant_to_pair_lengths_and_drops_dependent_pairs():
    from lsr1bench.optim._compact import well_posed

    gen = torch.Generator().manual_seed(0)
    S = torch.randn(3, 20, generator=gen, dtype=F64)
    Psi = torch.randn(3, 20, generator=gen, dtype=F64)
    lengths = torch.tensor([1e-3, 1.0, 1e3], dtype=F64)

    def inputs(S, Psi):
        gram = Psi @ Psi.T
        sp = S @ Psi.T
        lower = torch.tril(sp, -1)
        m_inv = torch.diag(torch.diagonal(sp)) + lower + lower.T
        return gram, m_inv, S.norm(dim=1) * Psi.norm(dim=1)

    tol = 100 * torch.finfo(torch.float32).eps
    assert well_posed(*inputs(S, Psi), tol, check_gram=True, scaled=True)
    scaled = inputs(S * lengths[:, None], Psi * lengths[:, None])
    assert well_posed(*scaled, tol, check_gram=True, scaled=True)
    assert not well_posed(*scaled, tol, check_gram=True, scaled=False)  # the paper's reading
    dependent = Psi.clone()
    dependent[2] = dependent[0] + 1e-7 * dependent[1]
    assert not well_posed(*inputs(S, dependent), tol, check_gram=True, scaled=True)


def test_saddle_escape_where_lbfgs_stalls():
    """f = 1/2 x^T diag(1..5, -1) x + 1/4 x_6^4 has a saddle at 0 and minima at x_6 = +-1.

    Started next to the saddle with a tiny component along the negative direction,
    L-BFGS converges to the saddle; L-SR1 picks up the negative curvature and goes down.
    """
    d = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, -1.0], dtype=F64)

    def f(x):
        return 0.5 * (d * x * x).sum() + 0.25 * x[5] ** 4

    x0 = torch.tensor([1.0, 1.0, 1.0, 1.0, 1.0, 1e-6], dtype=F64)
    ours, _ = run_lsr1(f, x0, 30, memory=6)
    assert float(f(ours[-1])) < -0.24  # the minimum value is -0.25

    x = x0.clone().requires_grad_(True)
    lbfgs = torch.optim.LBFGS([x], lr=1, max_iter=30, history_size=6, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = f(x)
        loss.backward()
        return loss

    lbfgs.step(closure)
    assert abs(float(f(x.detach()))) < 1e-6  # stuck at the saddle value 0


@pytest.mark.parametrize("line_search", ["strong_wolfe", "armijo"])
def test_line_search_variant_minimises(line_search):
    f, x0 = quartic_problem(seed=7)
    ours, opt = run_lsr1(f, x0, 60, method="line_search", line_search=line_search)
    x = ours[-1].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    assert float(g.norm()) < 1e-6
    assert opt.statistics()["stored_pairs"] > 0


def test_line_search_falls_back_to_steepest_descent_when_direction_ascends():
    """An indefinite H (from a negative-curvature pair) can give g^T d >= 0: use -g then."""
    d = torch.tensor([1.0, -1.0], dtype=F64)

    def f(x):
        return 0.5 * (d * x * x).sum() + 0.25 * (x**4).sum()

    _, opt = run_lsr1(f, torch.tensor([0.5, 0.3], dtype=F64), 25, method="line_search")
    stats = opt.statistics()
    assert stats["descent_fallbacks"] >= 1
    assert stats["accepted_steps"] >= 1


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"memory": 0}, "memory: 0"),
        ({"memory": 2.5}, "memory: 2.5"),
        ({"gamma": 0.0}, "gamma: 0.0"),
        ({"eta": -1e-3}, "eta: -0.001"),
        ({"radius_decrease": 1.5}, "radius_decrease: 1.5"),
        ({"radius_increase": 0.5}, "radius_increase: 0.5"),
        ({"initial_radius": -1.0}, "initial_radius: -1.0"),
        ({"method": "newton"}, "'newton'"),
        ({"skip_tol": 2.0}, "skip_tol: 2.0"),
        ({"decrease_threshold": 0.9}, "decrease_threshold=0.9"),
        ({"boundary_fraction": 0.0}, "boundary_fraction: 0.0"),
        ({"line_search": "exact"}, "'exact'"),
    ],
)
def test_bad_hyperparameters_raise_value_error_naming_the_value(kwargs, fragment):
    with pytest.raises(ValueError, match="Invalid") as err:
        LSR1([torch.zeros(3, requires_grad=True)], **kwargs)
    assert fragment in str(err.value)


def test_missing_closure_and_several_groups_are_clear_errors():
    p = torch.zeros(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="needs a closure"):
        LSR1([p]).step()
    q = torch.zeros(2, requires_grad=True)
    with pytest.raises(ValueError, match="single parameter group"):
        LSR1([{"params": [p]}, {"params": [q]}])
    with pytest.raises(ValueError, match="one device with one dtype"):
        LSR1([p, torch.zeros(2, dtype=F64, requires_grad=True)])


def test_memory_is_capped_at_the_number_of_parameters():
    f, x0 = quartic_problem(n=3, seed=8)
    _, opt = run_lsr1(f, x0, 20, memory=10)
    assert opt.statistics()["stored_pairs"] <= 3


@pytest.mark.parametrize("method", ["trust_region", "line_search"])
def test_kept_grams_equal_recomputed_products_of_stored_vectors(method):
    f, x0 = quartic_problem(n=30, seed=9)
    _, opt = run_lsr1(f, x0, 20, method=method, memory=4, keep_pairs=True)
    model = opt.curvature()
    assert model.k >= 3
    S, Psi = model.basis()
    ss, sp, pp = model.grams()
    # kept: ||s_i||^2, the lower triangle of S^T Psi with its diagonal, and Psi^T Psi
    for got, want in [(ss, (S * S).sum(1)), (sp, torch.tril(S @ Psi.T)), (pp, Psi @ Psi.T)]:
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12 * float(want.abs().max()))


def test_curvature_operator_equals_the_dense_sr1_matrix_of_its_pairs():
    from dense_reference import sr1_dense

    f, x0 = quartic_problem(n=12, seed=4)
    _, opt = run_lsr1(f, x0, 15, memory=4, gamma=0.8, pair_policy="paper", keep_pairs=True)
    model = opt.curvature()
    S, Y = model.pairs()
    assert S.shape == Y.shape == (model.k, 12) and model.k >= 3
    B = sr1_dense(0.8, list(zip(S, Y)), 12)
    v = torch.randn(12, dtype=F64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(model.matvec(v), B @ v, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(model.matvec(S[-1]), Y[-1], rtol=1e-9, atol=1e-9)  # secant
    dense = torch.linalg.eigvalsh(B)
    got = torch.sort(torch.cat([model.eigenvalues(), torch.full((12 - model.k,), 0.8, dtype=F64)])).values
    torch.testing.assert_close(got, dense, rtol=1e-8, atol=1e-8)
    assert torch.equal(model.eigenvalues(), torch.sort(model.eigenvalues()).values)


def test_every_step_has_exactly_one_outcome_and_two_host_syncs():

    f, x0 = quartic_problem(n=20, seed=6)
    _, opt = run_lsr1(f, x0, 40, memory=5)
    stats = opt.statistics()
    assert stats["steps"] == 40 == sum(stats[key] for key in OUTCOMES)
    assert stats["host_syncs"] == 2 * 40 + stats["explicit_passes"] + 2 * stats["hard_cases"] - (
        stats["nonpositive_pred"]
    )


def test_stationary_point_and_nonfinite_gradient_are_counted_outcomes():
    x = torch.zeros(3, dtype=F64, requires_grad=True)
    opt = LSR1([x])

    def closure():
        opt.zero_grad()
        loss = (x**2).sum()
        loss.backward()
        return loss

    opt.step(closure)  # g = 0: the model predicts no decrease
    assert opt.statistics()["nonpositive_pred"] == 1

    def bad():
        opt.zero_grad()
        loss = (x**2).sum() * float("nan")
        loss.backward()
        return loss

    opt.step(bad)
    stats = opt.statistics()
    assert stats["nonfinite_points"] == 1 and stats["steps"] == 2 and torch.equal(x.detach(), torch.zeros(3, dtype=F64))


def test_linear_algebra_failure_drops_pairs_and_the_step_goes_on(monkeypatch):
    """A factorisation that fails inside the k x k algebra is counted, the oldest pair is
    dropped and the subproblem solved again; step() never raises it."""
    from lsr1bench.optim import _tr_step as module

    f, x0 = quartic_problem(n=15, seed=2)
    _, opt = run_lsr1(f, x0, 10, memory=4)
    k_before = opt.statistics()["stored_pairs"]
    assert k_before >= 2
    real = module.spectral_form
    calls = {"n": 0}

    def failing_once(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise torch.linalg.LinAlgError("injected")
        return real(*args, **kw)

    monkeypatch.setattr(module, "spectral_form", failing_once)
    opt.step(_closure(opt, f))
    stats = opt.statistics()
    assert stats["linalg_failures"] == 1 and stats["dropped_pairs"] >= 1


def _closure(opt, f):
    """The usual closure of a one-tensor problem ``f``."""
    params = opt.param_groups[0]["params"]

    def closure():
        opt.zero_grad()
        loss = f(params[0])
        loss.backward()
        return loss

    return closure


def _uphill(real):
    """solve_subproblem, but returning the negated minimiser -p* while pairs are stored:
    a model whose step goes uphill, as a k x k breakdown the pair policy missed gives."""
    from dataclasses import replace

    def solve(spectral, *args, **kw):
        solution = real(spectral, *args, **kw)
        if spectral.k == 0:
            return solution
        return replace(solution, par=-solution.par, perp_scale=-solution.perp_scale)

    return solve


def test_a_model_predicting_no_decrease_drops_its_oldest_pair_and_solves_again(monkeypatch):
    """Table 1's batch-10000 run froze: with 4 pairs stored, every step's model
    predicted no decrease, the step ended with no trial point, and nothing in the state
    changed, for epochs. A trust-region minimiser with g != 0 always predicts a decrease,
    so such a step now drops the oldest pair and solves again."""
    from lsr1bench.optim import _tr_step as module

    f, x0 = quartic_problem(n=15, seed=2)
    _, opt = run_lsr1(f, x0, 10, memory=4)
    before = opt.statistics()
    assert before["stored_pairs"] >= 2
    monkeypatch.setattr(module, "solve_subproblem", _uphill(module.solve_subproblem))
    opt.step(_closure(opt, f))
    after = opt.statistics()
    # every stored pair gave an uphill step, so all were dropped and the step was taken
    # with B = gamma I, whose minimiser the injection leaves alone
    assert after["inconsistent_models"] == before["stored_pairs"]
    assert after["nonpositive_pred"] == before["nonpositive_pred"] == 0
    trials = after["accepted_steps"] + after["rejected_steps"]
    assert trials == before["accepted_steps"] + before["rejected_steps"] + 1
    assert after["last_pred"] > 0.0


def test_a_model_that_never_predicts_decrease_does_not_freeze_the_optimizer(monkeypatch):
    """With the breakdown on every step, the old rule (no trial point, state unchanged)
    left x where it was for ever; dropping pairs keeps the loss going down."""
    from lsr1bench.optim import _tr_step as module

    f, x0 = quartic_problem(n=15, seed=2)
    x, opt = run_lsr1(f, x0, 10, memory=4)
    monkeypatch.setattr(module, "solve_subproblem", _uphill(module.solve_subproblem))
    params = opt.param_groups[0]["params"]
    start = float(f(params[0].detach()))

    def closure():
        opt.zero_grad()
        loss = f(params[0])
        loss.backward()
        return loss

    for _ in range(20):
        opt.step(closure)
    stats = opt.statistics()
    assert stats["nonpositive_pred"] == 0 and stats["inconsistent_models"] >= 19
    assert sum(stats[k] for k in OUTCOMES) == stats["steps"]
    assert float(f(params[0].detach())) < start


def test_unconverged_newton_is_counted_and_never_longer_than_the_radius(monkeypatch):
    from lsr1bench.optim import _trust_region

    monkeypatch.setattr(_trust_region, "NEWTON_MAX_ITERATIONS", 1)
    gen = torch.Generator().manual_seed(0)
    pairs = [(torch.randn(6, generator=gen, dtype=F64), torch.randn(6, generator=gen, dtype=F64)) for _ in range(3)]
    from lsr1bench.optim._compact import CurvatureMemory

    memory = CurvatureMemory({}, 3, 6, torch.zeros(1, dtype=F64))
    for s_, y_ in pairs:
        memory.push(s_, y_, 1.0)
    psi_gram, m_inv = memory.b_factors(1.0)
    spectral = _trust_region.spectral_form(psi_gram, m_inv, 1.0)
    g = torch.randn(6, generator=gen, dtype=F64)
    S = torch.stack([p[0] for p in pairs])
    Psi = torch.stack([p[1] for p in pairs]) - S
    g_par = spectral.parallel_coordinates(Psi @ g)
    g_perp = float((g - (Psi.T @ spectral.psi_coefficients(g_par))).norm())
    sol = _trust_region.solve_subproblem(spectral, g_par, g_perp, 0.05)
    assert not sol.converged and sol.step_norm <= 0.05 * (1 + 1e-12)


# The state at which Table 1's batch-10000 L-SR1 run froze: its 4 stored pairs
# and the gradient, as coordinates in an orthonormal basis of their span (s_1..s_4,
# psi_1..psi_4, g; float64 from the float32 run), at radius 1.7982479762585655. The pairs
# saw almost no curvature (psi ~ -s), so B is nearly singular on range(S).
FROZEN_COORDINATES = [
    [
        0.787587250611808, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    ],
    [
        1.0383600326125675, -0.44150134668884145, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    ],
    [
        0.19414514338919217, 0.1505623600218124, 0.049888749944008125, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    ],
    [
        0.9234766913886882, -0.008367217214087931, 0.09861592683088752, 0.07034678860870539, 0.0, 0.0, 0.0, 0.0, 0.0
    ],
    [
        -0.7860261929602419, -0.00044218440816567653, -0.005635193945696867, -0.0033503433288670894,
        0.016599611214880287, 0.0, 0.0, 0.0, 0.0
    ],
    [
        -1.0355782584173514, 0.41769909386869425, -0.005541655841825646, -0.02842505964686904,
        0.0017549631044323426, -0.041513482450925746, 0.0, 0.0, 0.0
    ],
    [
        -0.1948685824898183, -0.1433633843756445, -0.03282565370534695, -0.0027120999199631733,
        0.0034426176320825983, 0.013734235244567527, 0.011170522496115363, 0.0, 0.0
    ],
    [
        -0.9231333163779011, 0.009619210281785156, -0.09444463202539444, -0.06448386645669686,
        0.0017794202605209072, 0.0039180534650442135, 0.005270409205755033, -0.016738969355059793, 0.0
    ],
    [
        0.0008094866035896392, 2.4991932414350515e-05, -0.006297059899771501, -0.01063492427547526,
        0.006279200456321147, -0.005292644092646932, -0.00019587116869471648, -0.006592195736908955,
        0.04280588572040362
    ],
]
FROZEN_RADIUS = 1.7982479762585655


def test_the_frozen_batch_10000_state_takes_a_step():
    """Embedded in n = 4096 float32 coordinates (the chunk size, so the rounding margin
    of ||s|| is the real run's), the old code clamped s into the radius with a margin of
    a few % of ||s||^2, counted ||s||^2 as radius^2, found pred < 0 and evaluated no trial
    point, at every later step. The pre-trial pred must agree with the model decrease of
    the applied step, computed here in float64 from the vectors."""
    from lsr1bench.optim._compact import CurvatureMemory

    n = 4096
    coords = torch.tensor(FROZEN_COORDINATES, dtype=F64)
    basis, _ = torch.linalg.qr(torch.randn(n, 9, generator=torch.Generator().manual_seed(0), dtype=F64))
    vectors = (coords @ basis.T).float()
    s_rows, psi_rows, g = vectors[:4], vectors[4:8], vectors[8]
    x = torch.nn.Parameter(torch.zeros(n))
    opt = LSR1([x], memory=5)

    def closure():  # a linear loss with gradient g, so that the step is accepted
        opt.zero_grad()
        x.grad = g.clone()
        return 0.2255 + (g * x.detach()).sum()

    opt.step(closure)  # builds the state; then replace its pairs with the frozen ones
    state = opt.state[x]
    for key in ("ss_diag", "gram_sp", "gram_pp"):
        state[key].zero_()
    state["order"].clear()
    width = state["memory"].shape[1]
    memory = CurvatureMemory(state, 5, width, state["memory"])
    for s_i, psi_i in zip(s_rows, psi_rows):
        s_pad, psi_pad = torch.zeros(width), torch.zeros(width)
        s_pad[:n], psi_pad[:n] = s_i, psi_i
        memory.push(s_pad, psi_pad + s_pad, 1.0)  # y = psi + gamma s, gamma = 1
    state["radius"] = FROZEN_RADIUS
    state["stats"] = {}  # every counter back to zero
    x.data.zero_()

    opt.step(closure)
    stats = opt.statistics()
    assert stats["nonpositive_pred"] == 0 and stats["inconsistent_models"] == 0
    assert stats["accepted_steps"] == 1  # a trial point was evaluated, and taken
    # the model decrease of the applied step s = x, in float64 from the vectors: the
    # compact SR1 form (Byrd, Nocedal & Schnabel 1994) with B0 = gamma I, gamma = 1:
    # B = B0 + Psi M Psi^T, Psi = Y - B0 S, M^{-1} = D + L + L^T - gamma S^T S with
    # S^T Y = L + D + U
    s = x.detach().double()
    S, P, gd = s_rows.double(), psi_rows.double(), g.double()
    sy = S @ (P + S).T
    m_inv = torch.diag(torch.diagonal(sy)) + torch.tril(sy, -1) + torch.tril(sy, -1).T - S @ S.T
    ps = P @ s
    terms = (float(gd @ s), float(s @ s), float(ps @ torch.linalg.solve(m_inv, ps)))
    pred = -(terms[0] + 0.5 * (terms[1] + terms[2]))
    assert pred > 0.0
    # to 1e-3 of the terms pred is the difference of (they nearly cancel here); the old
    # pre-trial pred was off by more than its own size
    size = abs(terms[0]) + 0.5 * (abs(terms[1]) + abs(terms[2]))
    assert abs(stats["last_pred"] - pred) <= 1e-3 * size
    assert float(s.norm()) <= FROZEN_RADIUS * (1 + 1e-5)
