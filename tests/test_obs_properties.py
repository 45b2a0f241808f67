"""Property-based tests of the OBS subproblem solve against a dense
reference (eigendecomposition of the dense B plus bisection on the secular equation,
tests/dense_reference.py), over random small problems."""

from __future__ import annotations

import math

import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from dense_reference import trust_region_dense  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from lsr1bench.optim._trust_region import solve_subproblem, spectral_form  # noqa: E402

F64 = torch.float64


@st.composite
def subproblems(draw):
    n = draw(st.integers(2, 12))
    k = draw(st.integers(1, min(n, 8)))
    gamma = draw(st.floats(0.05, 2.0)) * draw(st.sampled_from([-1.0, 1.0]))
    seed = draw(st.integers(0, 2**31 - 1))
    radius = 10.0 ** draw(st.floats(-3.0, 2.0))
    gen = torch.Generator().manual_seed(seed)
    Psi = torch.randn(n, k, generator=gen, dtype=F64)
    A = torch.randn(k, k, generator=gen, dtype=F64)
    m_inv = A + A.T + 0.5 * torch.sign(torch.randn(1, generator=gen, dtype=F64)) * torch.eye(k, dtype=F64)
    g = torch.randn(n, generator=gen, dtype=F64)
    # the hard cases: g orthogonal to the eigenvectors of B's smallest eigenvalue, or g in
    # range(Psi) (no component along the eigenvalue gamma); tiny and huge radii reach them
    mode = draw(st.sampled_from(["generic", "orthogonal_to_lowest", "in_range_of_psi"]))
    if mode == "orthogonal_to_lowest":
        B = gamma * torch.eye(n, dtype=F64) + Psi @ torch.linalg.solve(m_inv, Psi.T)
        lam, V = torch.linalg.eigh(B)
        lowest = V[:, (lam - lam[0]).abs() <= 1e-9 * max(1.0, float(lam.abs().max()))]
        g = g - lowest @ (lowest.T @ g)
    elif mode == "in_range_of_psi":
        g = Psi @ torch.randn(k, generator=gen, dtype=F64)
    return n, k, gamma, Psi, m_inv, g, radius


def _well_conditioned(Psi, m_inv) -> bool:
    sv = torch.linalg.svdvals(Psi)
    ev = torch.linalg.eigvalsh(m_inv).abs()
    return float(sv[-1]) > 1e-3 * float(sv[0]) and float(ev.min()) > 1e-3 * float(ev.max())


@settings(max_examples=200, deadline=None, derandomize=True)
@given(subproblems())
def test_obs_model_value_equals_the_dense_minimum(problem):
    n, k, gamma, Psi, m_inv, g, radius = problem
    hypothesis.assume(_well_conditioned(Psi, m_inv))
    B = gamma * torch.eye(n, dtype=F64) + Psi @ torch.linalg.solve(m_inv, Psi.T)
    spectral = spectral_form(Psi.T @ Psi, m_inv, gamma, complete=k == n)
    g_par = spectral.parallel_coordinates(Psi.T @ g)
    P_par = Psi @ torch.linalg.solve_triangular(spectral.R, spectral.U, upper=True)
    g_perp = g - P_par @ g_par
    perp_norm = float(g_perp.norm())  # rounding only when k = n or g lies in range(Psi)
    sol = solve_subproblem(spectral, g_par, perp_norm, radius, zero_tol=1e-9 * float(g.norm()))
    hypothesis.assume(float(g.norm()) > 1e-8)
    _, _, best = trust_region_dense(B, g, radius, hard_tol=1e-9)
    scale = float(g.norm()) * radius + float(torch.linalg.eigvalsh(B).abs().max()) * radius**2
    # the model value the solver reports is the dense minimum, and its step is feasible
    assert abs(sol.model_value - best) <= 1e-7 * scale
    assert sol.step_norm <= radius * (1 + 1e-9)
    if sol.perp_unit == 0.0:  # the step itself (no hard-case z): its model value, recomputed
        p = P_par @ sol.par + (sol.perp_scale * g_perp if k < n else 0.0)
        assert float(p.norm()) <= radius * (1 + 1e-8)
        value = float(g @ p + 0.5 * p @ B @ p)
        assert abs(value - best) <= 1e-7 * scale
    # B's smallest eigenvalue: gamma counts only while range(Psi) is not all of R^n
    assert math.isclose(spectral.lambda_min, float(torch.linalg.eigvalsh(B)[0]), rel_tol=1e-7, abs_tol=1e-7)


# --- the whole step on random small problems ------------------------------------------------
@st.composite
def step_problems(draw):
    n = draw(st.integers(2, 40))
    return {
        "n": n,
        "memory": draw(st.integers(1, 8)),
        "gamma": draw(st.floats(0.1, 2.0)) * draw(st.sampled_from([-1.0, 1.0])),
        "dtype": draw(st.sampled_from([torch.float32, F64])),
        "frozen": draw(st.integers(0, n - 1)),  # how many leading coordinates are frozen
        "radius": 10.0 ** draw(st.floats(-2.0, 1.0)),
        "seed": draw(st.integers(0, 2**31 - 1)),
    }


@settings(max_examples=60, deadline=None, derandomize=True)
@given(step_problems())
def test_step_invariants_on_random_problems(problem):
    """Every step: frozen coordinates never move, the trial point lies in the trust region,
    the outcomes add up to the steps; the stored pairs satisfy the newest secant equation
    and (float64) define the B of the dense SR1 recursion (oracle 1)."""
    from dense_reference import sr1_dense

    from lsr1bench.optim import LSR1
    from lsr1bench.optim.lsr1 import OUTCOMES

    n, dtype = problem["n"], problem["dtype"]
    gen = torch.Generator().manual_seed(problem["seed"])
    A = torch.randn(n, n, generator=gen, dtype=F64)
    A = (A + A.T) / math.sqrt(n)  # indefinite: negative curvature and hard cases occur
    b = torch.randn(n, generator=gen, dtype=F64)
    x0 = torch.randn(n, generator=gen, dtype=F64)
    cut = problem["frozen"]
    frozen = x0[:cut].to(dtype).clone()
    free = x0[cut:].to(dtype).clone().requires_grad_(True)
    params = [free] if cut == 0 else [frozen, free]
    opt = LSR1(params, memory=problem["memory"], gamma=problem["gamma"],
               initial_radius=problem["radius"], keep_pairs=True)
    points = []

    def closure():
        opt.zero_grad()
        x = torch.cat([frozen, free]).to(F64)
        loss = 0.5 * x @ A @ x - b @ x + 0.25 * (x**4).sum()  # bounded below
        loss.backward()
        points.append(torch.cat([frozen, free.detach()]).to(F64))
        return loss.to(dtype)

    eps = torch.finfo(dtype).eps
    for _ in range(12):
        radius = opt.statistics()["radius"] or float("inf")
        points.clear()
        opt.step(closure)
        if len(points) == 2:
            step = float((points[1] - points[0]).norm())
            assert step <= radius * (1 + 1e-5) + 10 * eps * float(points[0].abs().max())
        assert torch.equal(frozen, x0[:cut].to(dtype))
    stats = opt.statistics()
    assert stats["steps"] == sum(stats[key] for key in OUTCOMES) == 12
    model = opt.curvature()
    if model.k and dtype == F64:
        S, Y = (t.to(F64) for t in model.pairs())
        B = sr1_dense(problem["gamma"], list(zip(S, Y)), n)
        v = torch.randn(n, generator=gen, dtype=F64)
        scale = float(B.abs().max()) * float(v.norm())
        torch.testing.assert_close(model.matvec(v), B @ v, rtol=0, atol=1e-6 * scale)
        secant = float((model.matvec(S[-1]) - Y[-1]).norm())
        assert secant <= 1e-6 * (float(Y[-1].norm()) + float(B.abs().max()) * float(S[-1].norm()))
