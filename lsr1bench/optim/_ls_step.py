"""Algorithm 2's step as its phases: reduce at x, the direction d = -H g, the search along
it, reduce at the new point, store (the inverse skip test). ``line_search_step`` reads
them top to bottom."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._compact import CurvatureMemory, combine, exact_float32_matmul, products, residual
from ._line_search import armijo_backtracking, strong_wolfe
from ._phases import (
    _NO_PAIRS,
    CANCELLATION_GUARD,
    _AtX,
    _Breakdown,
    _has_negative_eigenvalue,
    _InverseModel,
    maybe_store_pair,
    reduce_at_x,
    retry_dropping_oldest,
    second_products,
)


def line_search_step(opt, state: dict, f_device: Tensor, g: Tensor, evaluate) -> None:
    """Algorithm 2, one iteration, as its phases: reduce at x, direction, search, reduce
    at the new point, store."""
    stats = state["stats"]
    memory = opt._memory(state)
    at_x = reduce_at_x(opt, memory, f_device, g)
    state["last_rho"] = None
    if at_x is None:
        stats.nonfinite_points += 1
        return
    if at_x.gg == 0.0:  # a stationary point: no descent direction exists
        stats.nonpositive_pred += 1
        state["last_pred"] = 0.0
        return
    rows = opt._pair_rows()
    inverse, slope = descent_direction(opt, state, memory, g, at_x, rows[0])
    result, x_saved, views = search(opt, state, evaluate, rows, at_x.f, slope)
    state["last_pred"] = -result.alpha * slope
    if result.alpha <= 0.0:
        stats.rejected_steps += 1
        opt._restore(x_saved)
        rows.zero_()
        return
    if not result.last_is_alpha:
        line_point(opt, evaluate, rows, views, result.alpha)
    opt._moved_from = None
    stats.accepted_steps += 1
    state["last_step_length"] = result.alpha
    gamma = opt.param_groups[0]["gamma"]
    y = rows[2].sub_(g)
    s = rows[0].mul_(result.alpha)  # s = alpha d
    torch.add(y, s, alpha=-gamma, out=rows[1])
    _, dots, s_products, p_products, finite = second_products(opt, memory, None, rows, inverse.k)
    if not finite:
        stats.nonfinite_trials += 1
        rows.zero_()
        return
    store_inverse(opt, state, memory, inverse, rows, g, dots, s_products, p_products)


def descent_direction(opt, state: dict, memory: CurvatureMemory, g: Tensor, at_x: _AtX,
                      direction: Tensor) -> tuple[_InverseModel, float]:
    """d = -H g into ``direction`` (-g when that is no descent direction); returns the
    inverse model it used and the slope g^T d. A k x k failure drops the oldest pair
    (``retry_dropping_oldest``)."""
    stats = state["stats"]
    delta = 1.0 / opt.param_groups[0]["gamma"]

    def factor() -> tuple[int, Tensor, Tensor, Tensor | None, Tensor | None]:
        k = memory.k
        try:
            phi_gram, n_inv = memory.h_factors(delta)
            phi_g = c = None
            if k > 0:
                phi_g = -delta * memory.split(at_x.g_products)  # Phi^T g, Phi = -delta Psi
                c = torch.linalg.solve(n_inv, phi_g)  # N Phi^T g
                if not bool(torch.isfinite(c).all()):
                    raise _Breakdown
        except torch.linalg.LinAlgError as exc:
            raise _Breakdown from exc
        return k, phi_gram, n_inv, phi_g, c

    k, phi_gram, n_inv, phi_g, c = retry_dropping_oldest(memory, stats, factor)
    complete = k >= opt._trainable_numel()
    stats.negative_curvature_steps += int(_has_negative_eigenvalue(phi_gram, n_inv, delta, complete))
    fallback = True
    if k > 0:
        # d = -H g = -delta g - Phi c = -delta g + delta Psi c
        with exact_float32_matmul(g.device):
            combine(memory.buffer, opt._coefficients(memory.psi_combination(delta * c), g), direction,
                    base=g, beta=-delta)
        slope = -delta * at_x.gg - float(phi_g @ c)
        fallback = not slope < 0.0
        stats.descent_fallbacks += int(fallback)
    if fallback:
        torch.neg(g, out=direction)
        slope = -at_x.gg
    return _InverseModel(k, phi_gram, n_inv, delta), slope


def line_point(opt, evaluate, rows: Tensor, views: tuple[list[Tensor], list[Tensor]],
                alpha: float) -> tuple[float, float]:
    """(f, g^T d) at x + alpha d (the gradient into the y row): one closure call, one sync.
    ``views``: per-parameter views of the saved x and of the full direction."""
    direction, y = rows[0], rows[2]
    torch._foreach_copy_(opt._params, views[0])
    torch._foreach_add_(opt._params, views[1], alpha=alpha)
    _, f_a = evaluate(y)
    values = opt._layout.gather(
        [f_a.reshape(1), products(y.unsqueeze(0), direction.unsqueeze(0)).reshape(1)], means=1
    )
    return float(values[0]), float(values[1])


def search(opt, state: dict, evaluate, rows: Tensor, f: float, slope: float):
    """The step length along d (strong Wolfe or Armijo), from min(1, 2 alpha_prev);
    returns the search's result, the saved x and the views ``_line_point`` moves along."""
    settings, stats = opt.param_groups[0], state["stats"]
    x_saved = opt._buffer("x")
    opt._save_params(x_saved)
    opt._moved_from = x_saved
    views = (opt._views_of(x_saved), opt._views_of(opt._full(rows[0], "step")))  # one all-gather

    def phi(alpha: float) -> tuple[float, float]:
        return line_point(opt, evaluate, rows, views, alpha)

    alpha0 = min(1.0, 2.0 * state["last_step_length"]) if stats.steps > 1 else 1.0
    budget = settings["max_line_search_evaluations"]
    if settings["line_search"] == "strong_wolfe":
        result = strong_wolfe(phi, f, slope, alpha0, c1=settings["c1"], c2=settings["c2"], max_evaluations=budget)
    else:
        result = armijo_backtracking(phi, f, slope, alpha0, c1=settings["c1"], max_evaluations=budget)
    stats.line_search_evaluations += result.evaluations
    return result, x_saved, views


def store_inverse(opt, state: dict, memory: CurvatureMemory, inverse: _InverseModel, rows: Tensor,
                   g: Tensor, dots: dict, s_products: Tensor, p_products: Tensor) -> None:
    """The inverse skip test |y^T (s - H y)| >= r ||y|| ||s - H y||, then the pair policy."""
    stats, gamma = state["stats"], opt.param_groups[0]["gamma"]
    s, psi, y = rows[0], rows[1], rows[2]
    k, delta = inverse.k, inverse.delta
    eps = torch.finfo(s.dtype).eps
    ss, sy, yy = dots["ss"], dots["sy"], dots["yy"]
    state["last_step_norm"] = math.sqrt(ss)
    if k > 0:
        psi_s = memory.split(s_products)
        psi_y = memory.split(p_products) + gamma * psi_s  # Psi^T y = Psi^T psi + gamma Psi^T s
        basis_s, basis_y = -delta * psi_s, -delta * psi_y  # Phi^T s, Phi^T y
    else:
        basis_s = basis_y = _NO_PAIRS
    y_dot_r, r_sq, size = residual(sy, ss, yy, basis_s, basis_y, inverse.phi_gram, inverse.n_inv, delta)
    if r_sq <= CANCELLATION_GUARD * eps * size:
        # s - H y = s - delta y - Phi N Phi^T y = s - delta y + delta Psi (N Phi^T y)
        r = opt._local("r")
        w_y = torch.linalg.solve(inverse.n_inv, basis_y) if k > 0 else _NO_PAIRS
        with exact_float32_matmul(s.device):
            combine(memory.buffer, opt._coefficients(memory.psi_combination(delta * w_y), g), r, base=s)
            r.add_(y, alpha=-delta)
            yr_rr = opt._layout.gather([products(r.unsqueeze(0), torch.stack([y, r])).reshape(2)])
        y_dot_r, r_sq = float(yr_rr[0]), float(yr_rr[1])
        stats.explicit_passes += 1
    maybe_store_pair(opt,
        state, memory, s, psi, s_products, p_products, (ss, dots["sp"], dots["pp"]), y_dot_r,
        math.sqrt(max(r_sq, 0.0)), math.sqrt(ss), math.sqrt(yy),
        lambda: memory.h_policy_inputs(delta),
    )

