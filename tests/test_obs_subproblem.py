"""Oracles 1-5 of ALGORITHM.md: compact forms, secant, spectrum, and the OBS solve
against a dense eigendecomposition solver."""

from __future__ import annotations

import math

import pytest
import torch
from dense_reference import sr1_dense, sr1_inverse_dense, trust_region_dense

from lsr1bench.optim._compact import CurvatureMemory
from lsr1bench.optim._trust_region import solve_subproblem, spectral_form

F64 = torch.float64
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


def nonquadratic_pairs(n: int, k: int, seed: int = 0):
    """Pairs (s, y) from the gradient of a non-quadratic function: S^T Y is asymmetric."""
    gen = torch.Generator().manual_seed(seed)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    A = A @ A.T / n + torch.eye(n, dtype=F64)

    def grad(x):
        return A @ x + torch.sin(3 * x) + x**3

    pairs = []
    x = torch.randn(n, generator=gen, dtype=F64)
    for _ in range(k):
        s = 0.5 * torch.randn(n, generator=gen, dtype=F64)
        pairs.append((s, grad(x + s) - grad(x)))
        x = x + s
    return pairs


def fill_memory(pairs, m: int, device="cpu", dtype=F64, gamma: float = 1.0) -> CurvatureMemory:
    """A memory holding the pairs (it stores s and psi = y - gamma s)."""
    n = pairs[0][0].numel()
    like = torch.zeros(1, dtype=dtype, device=device)
    memory = CurvatureMemory({}, m, n, like)
    for s, y in pairs:
        memory.push(s.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype), gamma)
    return memory


def compact_B(memory: CurvatureMemory, gamma: float, pairs) -> torch.Tensor:
    n = pairs[0][0].numel()
    S = torch.stack([p[0] for p in pairs], 1)
    Y = torch.stack([p[1] for p in pairs], 1)
    Psi = Y - gamma * S
    _, m_inv = memory.b_factors(gamma)
    return gamma * torch.eye(n, dtype=F64) + Psi @ torch.linalg.solve(m_inv, Psi.T)


def test_compact_B_and_H_equal_dense_recursion_with_asymmetric_pairs():
    n, k, gamma = 12, 5, 1.3
    pairs = nonquadratic_pairs(n, k)
    S = torch.stack([p[0] for p in pairs], 1)
    Y = torch.stack([p[1] for p in pairs], 1)
    assert float((S.T @ Y - Y.T @ S).abs().max()) > 1e-3  # really asymmetric
    memory = fill_memory(pairs, m=k, gamma=gamma)
    B = compact_B(memory, gamma, pairs)
    B_ref = sr1_dense(gamma, pairs, n)
    torch.testing.assert_close(B, B_ref, rtol=1e-11, atol=1e-11)
    delta = 1.0 / gamma
    Phi = S - delta * Y
    _, n_inv = memory.h_factors(delta)
    H = delta * torch.eye(n, dtype=F64) + Phi @ torch.linalg.solve(n_inv, Phi.T)
    H_ref = sr1_inverse_dense(delta, pairs, n)
    torch.testing.assert_close(H, H_ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(H @ B, torch.eye(n, dtype=F64), rtol=0, atol=1e-9)


def test_paper_formula_for_N_inverse_is_wrong_for_asymmetric_pairs():
    """The paper's N^{-1} = Y^T S - delta Y^T Y differs from the triangular form here."""
    pairs = nonquadratic_pairs(10, 4, seed=3)
    memory = fill_memory(pairs, m=4)
    _, n_inv = memory.h_factors(1.0)
    S = torch.stack([p[0] for p in pairs])
    Y = torch.stack([p[1] for p in pairs])
    paper = Y @ S.T - Y @ Y.T
    assert float((paper - n_inv).abs().max()) > 1e-3


def test_ring_buffer_keeps_the_newest_pairs_in_order():
    pairs = nonquadratic_pairs(9, 8, seed=4)
    memory = fill_memory(pairs, m=3)
    assert memory.k == 3
    kept = pairs[-3:]
    B = compact_B(memory, 1.0, kept)
    torch.testing.assert_close(B, sr1_dense(1.0, kept, 9), rtol=1e-10, atol=1e-10)


def test_secant_equation_newest_pair_and_all_pairs_on_a_quadratic():
    n, gamma = 10, 0.7
    pairs = nonquadratic_pairs(n, 4, seed=1)
    B = compact_B(fill_memory(pairs, m=4, gamma=gamma), gamma, pairs)
    s, y = pairs[-1]
    torch.testing.assert_close(B @ s, y, rtol=1e-10, atol=1e-10)
    gen = torch.Generator().manual_seed(2)
    A = torch.randn(n, n, generator=gen, dtype=F64)
    A = A + A.T  # indefinite quadratic: y = A s
    qpairs = [(s, A @ s) for s in torch.randn(4, n, generator=gen, dtype=F64)]
    Bq = compact_B(fill_memory(qpairs, m=4, gamma=gamma), gamma, qpairs)
    for s, y in qpairs:
        torch.testing.assert_close(Bq @ s, y, rtol=1e-9, atol=1e-9)


def test_spectrum_matches_dense_eigenvalues():
    n, gamma = 11, 0.9
    pairs = nonquadratic_pairs(n, 5, seed=5)
    memory = fill_memory(pairs, m=5, gamma=gamma)
    psi_gram, m_inv = memory.b_factors(gamma)
    spectral = spectral_form(psi_gram, m_inv, gamma)
    expected = torch.linalg.eigvalsh(sr1_dense(gamma, pairs, n))
    got = torch.sort(torch.cat([spectral.lambda_par, torch.full((n - 5,), gamma, dtype=F64)])).values
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)


# --- the subproblem -------------------------------------------------------------------


def solve_obs(Psi, M_inv, g, gamma, radius, zero_tol=1e-13):
    """OBS through the module's small-matrix API, mapped back to an n-vector p."""
    spectral = spectral_form(Psi.T @ Psi, M_inv, gamma)
    g_par = spectral.parallel_coordinates(Psi.T @ g)
    u = spectral.psi_coefficients(g_par)
    g_perp = g - Psi @ u
    sol = solve_subproblem(spectral, g_par, float(g_perp.norm()), radius, zero_tol=zero_tol * float(g.norm()))
    p = Psi @ spectral.psi_coefficients(sol.par) + sol.perp_scale * g_perp
    if sol.perp_unit != 0.0:
        Q, _ = torch.linalg.qr(torch.cat([Psi, torch.eye(Psi.shape[0], dtype=F64)], 1))
        p = p + sol.perp_unit * Q[:, Psi.shape[1]]
    return p, sol


def dense_B(Psi, M_inv, gamma):
    n = Psi.shape[0]
    return gamma * torch.eye(n, dtype=F64) + Psi @ torch.linalg.solve(M_inv, Psi.T)


def model(B, g, p):
    return float(g @ p + 0.5 * p @ B @ p)


def check_more_sorensen(B, g, p, sigma, radius):
    n = B.shape[0]
    scale = float(g.norm()) + float(B.abs().max()) * float(p.norm()) + 1e-30
    torch.testing.assert_close((B + sigma * torch.eye(n, dtype=F64)) @ p, -g, rtol=0, atol=1e-9 * scale)
    assert sigma >= 0
    assert float(p.norm()) <= radius * (1 + 1e-9)
    assert abs(sigma * (radius - float(p.norm()))) <= 1e-8 * max(1.0, sigma * radius)
    assert float(torch.linalg.eigvalsh(B + sigma * torch.eye(n, dtype=F64))[0]) >= -1e-9 * max(1.0, sigma)


def random_case(seed, n=9, k=4, gamma=1.0, negative=0):
    gen = torch.Generator().manual_seed(seed)
    Psi = torch.randn(n, k, generator=gen, dtype=F64)
    Q, _ = torch.linalg.qr(torch.randn(k, k, generator=gen, dtype=F64))
    ev = torch.rand(k, generator=gen, dtype=F64) + 0.5
    ev[:negative] = -ev[:negative] * 3
    M = Q @ torch.diag(ev) @ Q.T
    M_inv = torch.linalg.inv(M)
    M_inv = 0.5 * (M_inv + M_inv.T)
    g = torch.randn(n, generator=gen, dtype=F64)
    return Psi, M_inv, g, gamma


CASES = {
    "pd-interior": (random_case(0), 1e3),
    "pd-boundary": (random_case(1), 0.05),
    "indefinite": (random_case(2, negative=1), 1.0),
    "indefinite-two-negative": (random_case(3, negative=2), 3.0),
    "gamma-negative": (random_case(4, gamma=-0.5), 2.0),
    "tiny-radius": (random_case(5, negative=1), 1e-8),
    "huge-radius-pd": (random_case(6), 1e8),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_obs_matches_dense_solver_and_more_sorensen(name):
    (Psi, M_inv, g, gamma), radius = CASES[name]
    p, sol = solve_obs(Psi, M_inv, g, gamma, radius)
    B = dense_B(Psi, M_inv, gamma)
    _, _, ref_value = trust_region_dense(B, g, radius)
    assert sol.model_value == pytest.approx(model(B, g, p), rel=1e-10, abs=1e-14)
    assert sol.model_value == pytest.approx(ref_value, rel=1e-10, abs=1e-14 * max(1.0, radius))
    check_more_sorensen(B, g, p, sol.sigma, radius)
    gen = torch.Generator().manual_seed(99)
    q = torch.randn(2000, g.numel(), generator=gen, dtype=F64)
    q = q / q.norm(dim=1, keepdim=True) * radius * torch.rand(2000, 1, generator=gen, dtype=F64) ** (1 / g.numel())
    values = (q @ g) + 0.5 * ((q @ B) * q).sum(1)
    assert float(values.min()) >= sol.model_value - 1e-12 * max(1.0, abs(sol.model_value))


def test_analytic_hard_case_value_is_minus_seven_sixths():
    Psi = torch.tensor([[1.0], [0.0]], dtype=F64)
    M_inv = torch.tensor([[-1.0 / 3.0]], dtype=F64)
    g = torch.tensor([0.0, 1.0], dtype=F64)
    p, sol = solve_obs(Psi, M_inv, g, 1.0, 1.0)
    torch.testing.assert_close(dense_B(Psi, M_inv, 1.0), torch.diag(torch.tensor([-2.0, 1.0], dtype=F64)))
    assert sol.hard_case
    assert sol.sigma == pytest.approx(2.0, abs=1e-14)
    assert sol.model_value == pytest.approx(-7.0 / 6.0, abs=1e-14)
    assert float(p[1]) == pytest.approx(-1.0 / 3.0, abs=1e-14)
    assert abs(float(p[0])) == pytest.approx(math.sqrt(8.0 / 9.0), abs=1e-14)
    assert float(p.norm()) == pytest.approx(1.0, abs=1e-14)


def test_hard_case_lambda_min_is_lambda1_with_g_orthogonal_to_its_eigenvector():
    Psi, M_inv, _, gamma = random_case(7, negative=1)
    B = dense_B(Psi, M_inv, gamma)
    lam, V = torch.linalg.eigh(B)
    g = torch.randn(Psi.shape[0], generator=torch.Generator().manual_seed(8), dtype=F64)
    g = g - (g @ V[:, 0]) * V[:, 0]
    radius = 50.0
    p, sol = solve_obs(Psi, M_inv, g, gamma, radius)
    assert sol.hard_case
    _, _, ref = trust_region_dense(B, g, radius)
    assert sol.model_value == pytest.approx(ref, rel=1e-10)
    assert sol.model_value == pytest.approx(model(B, g, p), rel=1e-10)
    check_more_sorensen(B, g, p, sol.sigma, radius)


def test_hard_case_lambda_min_is_negative_gamma_with_g_in_range_of_psi():
    gen = torch.Generator().manual_seed(9)
    n, k, gamma = 8, 3, -1.0
    Psi = torch.randn(n, k, generator=gen, dtype=F64)
    M_inv = torch.diag(torch.tensor([0.5, 0.25, 1.0], dtype=F64))  # Lambda_1 well above gamma
    g = Psi @ torch.randn(k, generator=gen, dtype=F64)  # g_perp = 0
    B = dense_B(Psi, M_inv, gamma)
    assert float(torch.linalg.eigvalsh(B)[0]) == pytest.approx(gamma)
    radius = 100.0
    p, sol = solve_obs(Psi, M_inv, g, gamma, radius)
    assert sol.hard_case and sol.perp_unit != 0.0
    _, _, ref = trust_region_dense(B, g, radius)
    assert sol.model_value == pytest.approx(ref, rel=1e-10)
    assert sol.model_value == pytest.approx(model(B, g, p), rel=1e-10)
    check_more_sorensen(B, g, p, sol.sigma, radius)


def test_singular_B_and_g_in_range_of_psi():
    # B = I + e1 (-1) e1^T = diag(0, 1, 1, 1): singular, positive semidefinite.
    n = 4
    Psi = torch.zeros(n, 1, dtype=F64)
    Psi[0, 0] = 1.0
    M_inv = torch.tensor([[-1.0]], dtype=F64)
    B = dense_B(Psi, M_inv, 1.0)
    for g, radius in [(torch.tensor([0.0, 1.0, 2.0, 0.0], dtype=F64), 10.0),  # g _|_ null space
                      (torch.tensor([1.0, 1.0, 0.0, 0.0], dtype=F64), 2.0),  # g touches null space
                      (torch.tensor([3.0, 0.0, 0.0, 0.0], dtype=F64), 0.5)]:  # g in range(Psi)
        p, sol = solve_obs(Psi, M_inv, g, 1.0, radius)
        _, _, ref = trust_region_dense(B, g, radius)
        assert sol.model_value == pytest.approx(ref, rel=1e-10, abs=1e-14)
        check_more_sorensen(B, g, p, sol.sigma, radius)


@pytest.mark.parametrize("gamma", [2.0, -2.0])
@pytest.mark.parametrize("radius", [1e-3, 10.0])
def test_no_pairs_closed_form(gamma, radius):
    g = torch.tensor([3.0, -4.0], dtype=F64)  # ||g|| = 5
    empty = torch.zeros(0, 0, dtype=F64)
    spectral = spectral_form(empty, empty, gamma)
    sol = solve_subproblem(spectral, torch.zeros(0, dtype=F64), 5.0, radius)
    if gamma > 0 and 5.0 / gamma <= radius:
        expected = -1.0 / gamma
    else:
        expected = -radius / 5.0
    assert sol.perp_scale == pytest.approx(expected, rel=1e-12)
    p = sol.perp_scale * g
    B = gamma * torch.eye(2, dtype=F64)
    assert sol.model_value == pytest.approx(model(B, g, p), rel=1e-12)


def test_first_step_with_gamma_one_is_minus_gradient():
    """At k = 0 with gamma = 1 and radius ||g||, the paper's first step is exactly -g."""
    empty = torch.zeros(0, 0, dtype=F64)
    sol = solve_subproblem(spectral_form(empty, empty, 1.0), torch.zeros(0, dtype=F64), 7.0, 7.0)
    assert sol.perp_scale == -1.0 and sol.interior


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_memory_grams_on_device_and_dtype(device, dtype):
    """Gram matrices built incrementally on the device agree with a float64 recomputation."""
    pairs = nonquadratic_pairs(50, 7, seed=11)
    memory = fill_memory(pairs, m=5, device=device, dtype=dtype)
    kept = pairs[-5:]
    S = torch.stack([p[0] for p in kept], 1)
    Y = torch.stack([p[1] for p in kept], 1)
    Psi = Y - S  # gamma = 1
    ss, sp, pp = memory.grams()
    tol = 1e-12 if dtype == F64 else 2e-5
    # kept: ||s_i||^2, the lower triangle of S^T Psi with its diagonal, and Psi^T Psi
    for got, want in [(ss, (S * S).sum(0)), (sp, torch.tril(S.T @ Psi)), (pp, Psi.T @ Psi)]:
        assert got.dtype == F64
        torch.testing.assert_close(got, want, rtol=tol, atol=tol * float(want.abs().max()))
