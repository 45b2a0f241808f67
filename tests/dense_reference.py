"""Dense, independent references for the L-SR1 oracles (float64, n small).

Nothing here shares code with ``lsr1bench.optim``: B and H come from the SR1 recursion
itself (N&W eq. 6.24), the trust-region subproblem from an eigendecomposition of the
dense B and a bisection on the secular equation, and the whole method from those two.
"""

from __future__ import annotations

import math

import torch

F64 = torch.float64


def sr1_dense(gamma: float, pairs: list[tuple[torch.Tensor, torch.Tensor]], n: int) -> torch.Tensor:
    """B_k from B_0 = gamma I by the SR1 recursion over the pairs, oldest first."""
    B = gamma * torch.eye(n, dtype=F64)
    for s, y in pairs:
        r = y - B @ s
        B = B + torch.outer(r, r) / (r @ s)
    return B


def sr1_inverse_dense(delta: float, pairs, n: int) -> torch.Tensor:
    """H_k from H_0 = delta I by the inverse SR1 recursion (s and y swapped)."""
    H = delta * torch.eye(n, dtype=F64)
    for s, y in pairs:
        r = s - H @ y
        H = H + torch.outer(r, r) / (r @ y)
    return H


def trust_region_dense(B: torch.Tensor, g: torch.Tensor, radius: float, hard_tol: float = 1e-10):
    """Global minimiser of g^T p + 1/2 p^T B p over ||p|| <= radius (Moré & Sorensen).

    Returns (p, sigma, model_value). Bisection on ||p(sigma)|| = radius over
    sigma in (-lambda_min, upper], 200 halvings (float64 resolution).
    """
    lam, V = torch.linalg.eigh(B)
    a = V.T @ g
    lam_min = float(lam[0])

    def p_of(sigma: float, drop: torch.Tensor | None = None) -> torch.Tensor:
        d = lam + sigma
        coef = torch.where(d.abs() > 0, -a / torch.where(d == 0, 1.0, d), torch.zeros_like(a))
        if drop is not None:
            coef = torch.where(drop, torch.zeros_like(coef), coef)
        return V @ coef

    def value(p):
        return float(g @ p + 0.5 * p @ B @ p)

    if lam_min > 0:
        p = -torch.linalg.solve(B, g)
        if float(p.norm()) <= radius:
            return p, 0.0, value(p)
    floor = max(0.0, -lam_min)
    at_min = (lam - lam_min).abs() <= 1e-12 * max(1.0, float(lam.abs().max()))
    scale = float(g.norm()) + 1e-300
    degenerate = bool((a[at_min].abs() <= hard_tol * scale).all())
    if degenerate:
        phat = p_of(floor, drop=at_min if lam_min <= 0 else None)
        if float(phat.norm()) <= radius:
            if lam_min < 0:
                z = V[:, 0]
                tau = math.sqrt(max(radius**2 - float(phat.norm()) ** 2, 0.0))
                p = phat + tau * z
                return p, floor, value(p)
            return phat, floor, value(phat)
    lo, hi = floor, floor + float(g.norm()) / radius + float(lam.abs().max()) + 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid == lo or mid == hi:
            break
        if float(p_of(mid).norm()) > radius:
            lo = mid
        else:
            hi = mid
    p = p_of(hi)
    return p, hi, value(p)


def well_posed_dense(S: torch.Tensor, Y: torch.Tensor, gamma: float, tol: float) -> bool:
    """The paper's pair policy (Algorithm 1, lines 31-39) on dense matrices: the pairs may
    stay when Psi^T Psi is positive definite and M^{-1} = S^T Y - S^T B0 S (in its
    triangular form D + L + L^T - gamma S^T S) is nonsingular. Numerically, with the
    textbook relative tolerance: smallest eigenvalue (magnitude) above ``tol`` times the
    largest."""
    if S.shape[1] == 0:
        return True
    Psi = Y - gamma * S
    ev = torch.linalg.eigvalsh(Psi.T @ Psi)
    if not float(ev[0]) > tol * float(ev[-1]):
        return False
    SY = S.T @ Y
    Minv = torch.tril(SY, -1) + torch.tril(SY, -1).T + torch.diag(torch.diagonal(SY)) - gamma * S.T @ S
    ev = torch.linalg.eigvalsh(Minv).abs()
    return float(ev.min()) > tol * float(ev.max())


def sr1_trust_region_dense(
    fun, x0: torch.Tensor, iterations: int, *, memory: int, gamma: float = 1.0, eta: float = 1e-4,
    skip_tol: float = 1e-8, tol: float | None = None,
) -> list[torch.Tensor]:
    """The dense SR1 trust-region method with the paper's rules (Algorithm 1) and nothing
    else; returns the iterates."""
    tol = 100 * torch.finfo(F64).eps if tol is None else tol
    n = x0.numel()
    x = x0.clone()
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
    radius = None
    iterates = [x.clone()]

    def f_and_g(z):
        z = z.detach().clone().requires_grad_(True)
        v = fun(z)
        (gz,) = torch.autograd.grad(v, z)
        return float(v.detach()), gz

    for _ in range(iterations):
        f, g = f_and_g(x)
        if radius is None:
            radius = float(g.norm())
        B = sr1_dense(gamma, pairs, n)
        s, _, mval = trust_region_dense(B, g, radius)
        pred = -mval
        f_t, g_t = f_and_g(x + s)
        y = g_t - g
        rho = (f - f_t) / pred
        if rho > eta:
            x = x + s
        if rho > 0.75:
            if float(s.norm()) > 0.8 * radius:
                radius *= 2.0
        elif rho < 0.1:
            radius *= 0.5
        r = y - B @ s
        if abs(float(s @ r)) >= skip_tol * float(s.norm()) * float(r.norm()):
            pairs.append((s.clone(), y.clone()))
            if len(pairs) > memory:
                pairs.pop(0)
            while pairs:
                S = torch.stack([p[0] for p in pairs], 1)
                Y = torch.stack([p[1] for p in pairs], 1)
                if well_posed_dense(S, Y, gamma, tol):
                    break
                pairs.pop(0)
        iterates.append(x.clone())
    return iterates
