"""The L-SR1 trust-region subproblem, solved by the orthonormal basis (OBS) method.

Brust, Erway & Marcia, "On solving L-SR1 trust-region subproblems", arXiv:1506.07222
(Computational Optimization and Applications 66, 2017). Everything here is k x k
algebra in float64 on small tensors; the optimizer maps the returned coefficients
back to the n-dimensional step (see ``lsr1.py``), so this module never touches an
n-vector and can be tested without a network.

Notation (``../shared/ALGORITHM.md``): B = gamma*I + Psi M Psi^T with Psi (n x k),
Psi^T Psi = R^T R, R M R^T = U diag(Lhat) U^T, P_par = Psi R^{-1} U (orthonormal),
Lambda_1 = Lhat + gamma. B has eigenvalues Lambda_1 (eigenvectors P_par) and gamma
on the orthogonal complement of range(Psi).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Newton on the secular equation: relative tolerance on | ||p(sigma)|| - radius | and an
# iteration cap (Brust et al. report convergence in a handful of iterations; Moré &
# Sorensen 1983 show Newton on 1/||p|| is monotone from the left).
NEWTON_RTOL = 1e-12
NEWTON_MAX_ITERATIONS = 100
# A boundary solution whose norm is within this relative distance of the radius counts
# as converged; otherwise the solve is reported unconverged (and clamped to the radius).
CONVERGED_RTOL = 1e-9


@dataclass(frozen=True)
class Spectral:
    """Spectral form of the compact L-SR1 matrix (step 1-4 of the OBS method)."""

    R: Tensor  # upper-triangular Cholesky factor of Psi^T Psi (k x k)
    U: Tensor  # orthonormal eigenvectors of R M R^T, columns in ascending eigenvalue order
    lambda_par: Tensor  # Lambda_1 = Lhat + gamma, ascending (k,)
    gamma: float
    # range(Psi) is the whole (trainable) space, k = n: gamma is then no eigenvalue of B
    complete: bool = False

    @property
    def k(self) -> int:
        return int(self.lambda_par.shape[0])

    @property
    def lambda_min(self) -> float:
        """Smallest eigenvalue of B; gamma counts only when range(Psi) is not everything."""
        if self.k == 0:
            return self.gamma
        if self.complete:
            return float(self.lambda_par[0])
        return min(float(self.lambda_par[0]), self.gamma)

    def parallel_coordinates(self, psi_t_v: Tensor) -> Tensor:
        """P_par^T v = U^T R^{-T} (Psi^T v), from Psi^T v alone."""
        if self.k == 0:
            return psi_t_v.new_zeros(0)
        w = torch.linalg.solve_triangular(self.R.T, psi_t_v.unsqueeze(1), upper=False)
        return (self.U.T @ w).squeeze(1)

    def psi_coefficients(self, par: Tensor) -> Tensor:
        """c with Psi c = P_par par, i.e. c = R^{-1} U par."""
        if self.k == 0:
            return par.new_zeros(0)
        return torch.linalg.solve_triangular(self.R, (self.U @ par).unsqueeze(1), upper=True).squeeze(1)


def spectral_form(psi_gram: Tensor, m_inv: Tensor, gamma: float, *, complete: bool = False) -> Spectral:
    """OBS steps 1-4 from Psi^T Psi and M^{-1} (both k x k, float64). ``complete``: the k
    columns of Psi span the whole space (k = n), so B has no eigenvalue gamma.

    M is never formed: R M R^T = R (M^{-1})^{-1} R^T is computed by solving with M^{-1}.
    Raises ``torch.linalg.LinAlgError`` when Psi^T Psi is not positive definite or
    M^{-1} is singular; the optimizer's pair policy prevents both.
    """
    k = psi_gram.shape[0]
    if k == 0:
        empty = psi_gram.new_zeros((0, 0))
        return Spectral(empty, empty, psi_gram.new_zeros(0), float(gamma))
    R = torch.linalg.cholesky(psi_gram, upper=True)
    X = torch.linalg.solve(m_inv, R.T)  # M R^T
    W = R @ X
    W = 0.5 * (W + W.T)
    lhat, U = torch.linalg.eigh(W)
    return Spectral(R, U, lhat + gamma, float(gamma), complete)


@dataclass(frozen=True)
class SubproblemSolution:
    """Minimiser p* = P_par par + perp_scale * g_perp + perp_unit * z_perp of the TR model.

    ``z_perp`` (a unit vector orthogonal to range(Psi)) is needed only in the hard case
    with lambda_min = gamma < Lambda_1[0]; then ``perp_unit`` is nonzero.
    """

    par: Tensor  # coordinates of p* along the columns of P_par (k,)
    perp_scale: float  # coefficient of g_perp
    perp_unit: float  # coefficient of a unit vector orthogonal to range(Psi) (hard case)
    sigma: float  # Lagrange multiplier
    step_norm: float
    model_value: float  # g^T p + 1/2 p^T B p
    hard_case: bool
    interior: bool
    newton_iterations: int
    converged: bool = True  # False: Newton stopped early; the step was clamped to the radius


def _norm_sq(a: Tensor, lam: Tensor, sigma: float, active: Tensor) -> float:
    d = lam[active] + sigma
    return float(((a[active] / d) ** 2).sum())


def solve_subproblem(
    spectral: Spectral,
    g_par: Tensor,
    g_perp_norm: float,
    radius: float,
    *,
    zero_tol: float = 0.0,
) -> SubproblemSolution:
    """Solve min g^T p + 1/2 p^T B p subject to ||p|| <= radius (OBS steps 5-9).

    ``g_par`` = P_par^T g, ``g_perp_norm`` = ||g - P_par g_par|| (computed explicitly by
    the caller). Components with |a_i| <= ``zero_tol`` count as zero (the hard-case
    test); the caller scales it to the precision its inner products were computed in.
    """
    if not radius > 0.0 or not math.isfinite(radius):
        raise ValueError(f"radius must be positive and finite, got {radius}")
    gamma = spectral.gamma
    k = spectral.k
    a = torch.cat([g_par.to(torch.float64), g_par.new_tensor([g_perp_norm], dtype=torch.float64)])
    lam = torch.cat([spectral.lambda_par, spectral.lambda_par.new_tensor([gamma])])
    active = a.abs() > zero_tol
    if spectral.complete:  # g_perp is rounding only, and gamma no eigenvalue of B
        active[k] = False
    lambda_min = spectral.lambda_min

    def finish(
        sigma: float, hard: bool, interior: bool, extra_norm: float, newton: int = 0,
        boundary: bool = False,
    ) -> SubproblemSolution:
        denom = lam + sigma
        coef = torch.where(active & (denom != 0), -a / torch.where(denom == 0, 1.0, denom), 0.0)
        perp_scale = -1.0 / (gamma + sigma) if (active[k] and gamma + sigma != 0) else 0.0
        converged = True
        if boundary:
            norm = math.sqrt(float((coef**2).sum()))
            converged = abs(norm - radius) <= CONVERGED_RTOL * radius
            if norm > radius:  # never return a step longer than the radius
                coef = coef * (radius / norm)
                perp_scale *= radius / norm
        par = coef[:k].clone()
        perp_unit = 0.0
        if hard and extra_norm > 0.0:
            # z: unit eigenvector for lambda_min; prefer P_par's first column when it attains it.
            if k > 0 and (spectral.complete or float(spectral.lambda_par[0]) <= gamma):
                par[0] = par[0] + extra_norm
                coef = coef.clone()
                coef[0] = coef[0] + extra_norm
            else:
                perp_unit = extra_norm
        # Model value in the eigenbasis: sum_i a_i p_i + 1/2 lam_i p_i^2 (+ the perp unit part,
        # which is orthogonal to g and an eigenvector for gamma).
        value = float((a * coef + 0.5 * lam * coef**2).sum()) + 0.5 * gamma * perp_unit**2
        norm = math.sqrt(float((coef**2).sum()) + perp_unit**2)
        return SubproblemSolution(
            par=par,
            perp_scale=perp_scale,
            perp_unit=perp_unit,
            sigma=sigma,
            step_norm=norm,
            model_value=value,
            hard_case=hard,
            interior=interior,
            newton_iterations=newton,
            converged=converged,
        )

    # Step 7: interior solution when B is positive definite and the Newton step fits.
    if lambda_min > 0.0:
        if math.sqrt(_norm_sq(a, lam, 0.0, active)) <= radius:
            return finish(0.0, hard=False, interior=True, extra_norm=0.0)
    # Step 8: sigma = -lambda_min when ||p(-lambda_min)|| <= radius (pseudo-inverse there).
    sigma_floor = max(0.0, -lambda_min)
    at_floor = lam + sigma_floor
    pole = active & (at_floor.abs() <= 0.0)
    if not bool(pole.any()):
        norm_floor = math.sqrt(_norm_sq(a, lam, sigma_floor, active & (at_floor != 0)))
        if norm_floor <= radius:
            hard = lambda_min < 0.0
            extra = math.sqrt(max(radius**2 - norm_floor**2, 0.0)) if hard else 0.0
            return finish(sigma_floor, hard=hard, interior=not hard, extra_norm=extra)
    # Step 9: boundary solution; Newton on phi(sigma) = 1/||p(sigma)|| - 1/radius, which is
    # concave and increasing on (-lambda_min, inf), from a point where phi <= 0.
    sigma_hat = float((a[active].abs() / radius - lam[active]).max()) if bool(active.any()) else 0.0
    sigma = max(sigma_floor, sigma_hat)
    newton = 0
    for newton in range(1, NEWTON_MAX_ITERATIONS + 1):  # noqa: B007 - the count is reported
        d = lam[active] + sigma
        w = a[active] / d
        norm_sq = float((w**2).sum())
        norm = math.sqrt(norm_sq)
        if abs(norm - radius) <= NEWTON_RTOL * radius or not norm_sq * norm > 0.0:
            break  # converged, or ||p|| underflowed (no Newton step can be formed)
        # phi'(sigma) = ||p||^{-3} * sum a_i^2 / (lam_i + sigma)^3
        dphi = float((w**2 / d).sum()) / (norm_sq * norm)
        phi = 1.0 / norm - 1.0 / radius
        step = -phi / dphi
        if not math.isfinite(step) or step <= 0.0:
            break
        sigma = sigma + step
    return finish(sigma, hard=False, interior=False, extra_norm=0.0, newton=newton, boundary=True)


# The radius never shrinks below this: a step that short moves no parameter of any usual
# scale (it rounds to x, a negligible step), and the squares and cubes of the secular
# equation stay normal float64 numbers (the unfloored radius reached 1e-159 and the
# Newton iteration divided by zero).
MIN_RADIUS = 1e-60


def model_decrease(g_dot_s: float, s_dot_s: float, psi_s: Tensor, m_inv: Tensor, gamma: float) -> float:
    """pred = -(g^T s + 1/2 s^T B s), with s^T B s = gamma ||s||^2 + (Psi^T s)^T M (Psi^T s)
    and M applied by solving with M^{-1} (never inverted); ``psi_s`` = Psi^T s (k,)."""
    curvature = gamma * s_dot_s
    if psi_s.numel():
        curvature += float(psi_s @ torch.linalg.solve(m_inv, psi_s))
    return -(g_dot_s + 0.5 * curvature)


@dataclass(frozen=True)
class Decision:
    """What Algorithm 1 decides from a trial point."""

    rho: float  # ared / pred; -inf when the trial point or pred is unusable
    accepted: bool  # rho > eta: x <- x + s
    radius: float  # the next trust-region radius


def decide(f: float, f_trial: float, pred: float, step_norm: float, radius: float, settings: dict) -> Decision:
    """rho = (f - f_trial) / pred, accept when rho > eta, and the radius rule of
    Algorithm 1: grow by ``radius_increase`` when rho > ``increase_threshold`` and
    ||s|| > ``boundary_fraction`` * radius, shrink by ``radius_decrease`` (never below
    MIN_RADIUS) when rho < ``decrease_threshold``, cap at ``max_radius``. A non-finite
    f_trial or a pred <= 0 gives rho = -inf: a rejected step and a smaller radius."""
    usable = math.isfinite(f_trial) and pred > 0.0 and math.isfinite(pred)
    rho = (f - f_trial) / pred if usable else -math.inf
    if rho > settings["increase_threshold"]:
        if step_norm > settings["boundary_fraction"] * radius:
            radius *= settings["radius_increase"]
    elif rho < settings["decrease_threshold"]:
        radius = max(radius * settings["radius_decrease"], MIN_RADIUS)
    if settings["max_radius"] is not None:
        radius = min(radius, settings["max_radius"])
    return Decision(rho, rho > settings["eta"], radius)
