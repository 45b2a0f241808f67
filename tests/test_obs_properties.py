"""Issue 22, item 4: property-based tests of the OBS subproblem solve against a dense
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
    perp_norm = 0.0 if k == n else float(g_perp.norm())
    sol = solve_subproblem(spectral, g_par, perp_norm, radius, zero_tol=1e-12 * float(g.norm()))
    _, _, best = trust_region_dense(B, g, radius)
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
