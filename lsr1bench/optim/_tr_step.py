"""Algorithm 1's step as its phases: reduce at x, the radius, solve (and form s), trial,
reduce at the trial point, decide, store. ``trust_region_step`` reads them top to bottom."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._compact import CHUNK, CurvatureMemory, combine, exact_float32_matmul, products, residual
from ._counters import Counters
from ._phases import (
    _NO_PAIRS,
    CANCELLATION_GUARD,
    _AtTrial,
    _Breakdown,
    _Inconsistent,
    _Solved,
    _StepModel,
    form_step,
    maybe_store_pair,
    reduce_at_x,
    retry_dropping_oldest,
    second_products,
)
from ._trust_region import decide, model_decrease, solve_subproblem, spectral_form


def trust_region_step(opt, state: dict, f_device: Tensor, g: Tensor, evaluate) -> None:
    """Algorithm 1, one iteration, as its phases: reduce at x, solve (and form s), trial,
    reduce at the trial point, decide, store."""
    settings, stats = opt.param_groups[0], state["stats"]
    memory = opt._memory(state)
    at_x = reduce_at_x(opt, memory, f_device, g)
    if at_x is None:
        stats.nonfinite_points += 1
        state["last_rho"] = None
        return
    radius = current_radius(opt, state, at_x.gg)
    rows = opt._pair_rows()
    model = solve_for_step(opt, state, memory, g, at_x.gg, at_x.g_products, radius, rows[0])
    if model is None:
        return
    x_saved = trial(opt, evaluate, rows, g, settings["gamma"])
    at_trial = reduce_at_trial(opt, memory, f_device, rows, model)
    if at_trial.finite and at_trial.f == at_x.f and at_trial.dots["yy"] == 0.0:
        # x + s rounded to x (same loss, same gradient): nothing to decide or learn.
        stats.negligible_steps += 1
        opt._restore(x_saved)
        state["last_rho"] = None
        return
    ss = at_trial.dots["ss"]
    pred = -math.inf
    if at_trial.finite:
        # pred of the s that was applied, from its own products (no cancellation between
        # derived terms)
        pred = model_decrease(at_trial.dots["gs"], ss, at_trial.psi_s, model.m_inv, settings["gamma"])
        state["last_pred"] = pred
        stats.pred_sign_changes += int(not pred > 0.0)  # rounded away: the step is refused
    step_norm = math.sqrt(ss) if at_trial.finite else math.sqrt(model.ss_model)
    f_trial = at_trial.f if at_trial.finite else math.inf
    decision = decide(at_x.f, f_trial, pred, step_norm, radius, settings)
    state["last_rho"] = decision.rho if at_trial.finite else None
    state["last_step_norm"] = step_norm
    if decision.accepted:
        stats.accepted_steps += 1
        opt._moved_from = None
    else:
        stats.rejected_steps += 1
        opt._restore(x_saved)
    state["radius"] = decision.radius
    if not at_trial.finite:
        stats.nonfinite_trials += 1
        rows.zero_()  # never leave inf/nan in the work rows
        return
    store(opt, state, memory, model, at_trial, rows, g)


def current_radius(opt, state: dict, gg: float) -> float:
    """The trust-region radius; the first step's is ``initial_radius`` or ||g||."""
    if state["radius"] is None:
        initial = opt.param_groups[0]["initial_radius"]
        state["radius"] = initial if initial is not None else math.sqrt(gg)
        if not state["radius"] > 0:
            state["radius"] = 1.0
    return state["radius"]


def trial(opt, evaluate, rows: Tensor, g: Tensor, gamma: float) -> Tensor:
    """x + s on the same minibatch: save x (full length on every rank, so a rejected
    step restores it without a collective), move, evaluate; rows get y = g(x + s) - g
    and psi = y - gamma s. Returns the saved x."""
    s, psi, y = rows[0], rows[1], rows[2]
    x_saved = opt._buffer("x")
    opt._save_params(x_saved)
    opt._moved_from = x_saved
    opt._add_to_params(opt._full(s, "step"))
    _, opt._f_trial = evaluate(y, minus=g)  # y = g(x + s) - g, fused (no gradient copy)
    torch.add(y, s, alpha=-gamma, out=psi)
    return x_saved


def reduce_at_trial(opt, memory: CurvatureMemory, f_device: Tensor, rows: Tensor, model: _StepModel) -> _AtTrial:
    """Sync 2 (see ``_second_products``), with Psi^T s and Psi^T psi in logical order."""
    f_t, dots, s_products, p_products, finite = second_products(opt, memory, opt._f_trial, rows, model.k)
    finite = finite and math.isfinite(f_t)
    psi_s = memory.split(s_products) if model.k > 0 else _NO_PAIRS
    psi_psi = memory.split(p_products) if model.k > 0 else _NO_PAIRS
    return _AtTrial(f_t, dots, s_products, p_products, psi_s, psi_psi, finite)


def store(opt, state: dict, memory: CurvatureMemory, model: _StepModel, at_trial: _AtTrial, rows: Tensor,
           g: Tensor) -> None:
    """The SR1 skip test |s^T (y - B s)| >= r ||s|| ||y - B s|| with B the model of this
    step (y - B s = psi - Psi M Psi^T s), then the pair policy."""
    gamma, stats = opt.param_groups[0]["gamma"], state["stats"]
    s, psi = rows[0], rows[1]
    dots, ss, k = at_trial.dots, at_trial.dots["ss"], model.k
    eps = torch.finfo(s.dtype).eps
    s_dot_r, r_sq, size = residual(dots["sp"], dots["pp"], ss, at_trial.psi_psi, at_trial.psi_s,
                                   model.psi_gram, model.m_inv, 0.0)
    if r_sq <= CANCELLATION_GUARD * eps * size:
        # y - B s is small next to psi: form it explicitly (cancellation).
        r = opt._local("r")
        w_s = torch.linalg.solve(model.m_inv, at_trial.psi_s) if k > 0 else _NO_PAIRS
        with exact_float32_matmul(s.device):
            combine(memory.buffer, opt._coefficients(memory.psi_combination(-w_s), g), r, base=psi)
            sr_rr = opt._layout.gather([products(r.unsqueeze(0), torch.stack([s, r])).reshape(2)])
        s_dot_r, r_sq = float(sr_rr[0]), float(sr_rr[1])
        stats.explicit_passes += 1
    maybe_store_pair(opt,
        state, memory, s, psi, at_trial.s_products, at_trial.p_products, (ss, dots["sp"], dots["pp"]), s_dot_r,
        math.sqrt(max(r_sq, 0.0)), math.sqrt(dots["yy"]), math.sqrt(ss),
        lambda: memory.b_policy_inputs(gamma),
    )


def solve_for_step(opt, state: dict, memory: CurvatureMemory, g: Tensor, gg: float, g_products: Tensor,
                   radius: float, s: Tensor) -> _StepModel | None:
    """Solve this step's trust-region subproblem and form its s (in ``s``); return the
    model it was solved with and ||s||^2 as the solve measured it, or None when the model
    predicts no decrease (no trial point).

    A model whose k x k algebra breaks down, or that predicts no decrease while g != 0
    (inconsistent), drops its oldest pair and is solved again (``retry_dropping_oldest``),
    so the optimizer cannot stall on the same pairs."""
    return retry_dropping_oldest(
        memory, state["stats"], lambda: attempt_step(opt, state, memory, g, gg, g_products, radius, s)
    )


def attempt_step(opt, state: dict, memory: CurvatureMemory, g: Tensor, gg: float, g_products: Tensor,
                 radius: float, s: Tensor) -> _StepModel | None:
    """One attempt of ``solve_for_step`` with the pairs the memory holds now: raises
    ``_Breakdown`` or ``_Inconsistent`` when this model cannot give the step."""
    stats = state["stats"]
    gamma = opt.param_groups[0]["gamma"]
    eps = torch.finfo(g.dtype).eps
    device = g.device
    reducer = opt._layout
    empty = _NO_PAIRS
    solved = solve_model(opt, memory, stats, g, gg, g_products, radius, s)
    k, psi_gram, m_inv, spectral, psi_g, u, solution, explicit_perp = solved
    state["last_solve_radius"] = radius
    # s = beta (g - Psi u) + Psi c_par (+ perp_unit z in the hard case) = beta g + Psi w.
    beta = solution.perp_scale
    w = spectral.psi_coefficients(solution.par) - beta * u
    clamped = False
    if not (explicit_perp or solution.perp_unit != 0.0):
        # ||s||^2, g^T s and Psi^T s of the vector s = beta g + Psi w itself, from g^T g,
        # Psi^T g and Psi^T Psi: no inverse enters, so they hold to the accuracy of those
        # products even when Psi is ill-conditioned and the solver's eigenbasis is not
        # exactly orthonormal in float32.
        g_w = float(w @ psi_g) if k > 0 else 0.0
        gram_w = psi_gram @ w if k > 0 else empty
        ss_model = beta * beta * gg + 2.0 * beta * g_w + (float(w @ gram_w) if k > 0 else 0.0)
        # Rounding bound of ss_model: each product over n carries a relative error of
        # about sqrt(n) eps of its own size, and the terms may cancel.
        size = beta * beta * gg
        if k > 0:
            size += 2.0 * abs(beta) * float((w.abs() * psi_g.abs()).sum())
            size += float(w.abs() @ psi_gram.abs() @ w.abs())
        margin = 4.0 * math.sqrt(min(opt._n, CHUNK)) * eps * size
        if ss_model + margin > radius * radius:  # keep s inside the trust region
            factor = radius / math.sqrt(ss_model + margin)
            beta, w, gram_w, g_w = beta * factor, w * factor, gram_w * factor, g_w * factor
            # ||s||^2 of the scaled step, not radius^2: the margin may be a sizable
            # part of ||s||^2 (large w over an ill-conditioned Psi), and pred's
            # gamma ||s||^2 can nearly cancel against (Psi^T s)^T M (Psi^T s)
            # where the pairs saw almost no curvature (y ~ 0): counting radius^2
            # there turned pred negative and froze a batch-10000 MNIST run of the reproduction.
            # counted only beyond the margin: within it the scaling is rounding only
            clamped = ss_model > radius * radius + margin
            ss_model = ss_model * factor * factor
        gs_model = beta * gg + g_w
        psi_s = beta * psi_g + gram_w if k > 0 else empty
        form_step(opt, memory, g, beta, w, s)
    else:
        # Rare paths (g mostly in range(Psi), or the hard case): form s, then measure it.
        form_step(opt, memory, g, beta, w, s)
        if solution.perp_unit != 0.0:
            z = unit_orthogonal_to_psi(opt, memory, spectral, gamma, stats.steps, opt._local("r"))
            s.add_(z, alpha=solution.perp_unit)
        with exact_float32_matmul(device):
            parts = [products(s.unsqueeze(0), torch.stack([s, g])).reshape(2)]
            if k > 0:
                parts.append(products(memory.buffer, s.unsqueeze(0)).reshape(-1))
            measured = reducer.gather(parts)
        stats.explicit_passes += 1
        ss_model, gs_model = float(measured[0]), float(measured[1])
        if k > 0:
            psi_s = memory.split(measured[2:])
        else:
            psi_s = empty
        if ss_model > radius * radius:
            factor = radius / math.sqrt(ss_model)
            s.mul_(factor)
            clamped = ss_model > radius * radius * (1.0 + CANCELLATION_GUARD * eps)
            ss_model, gs_model, psi_s = radius * radius, gs_model * factor, psi_s * factor
    pred = model_decrease(gs_model, ss_model, psi_s, m_inv, gamma)
    state["last_pred"] = state["last_model_pred"] = pred
    # an inconsistent model is solved again (by the retry); only the solve the step ends
    # with is counted, so these counters are per step
    if not (memory.k > 0 and gg > 0.0 and not (pred > 0.0 and math.isfinite(pred))):
        stats.newton_iterations += solution.newton_iterations
        stats.newton_unconverged += int(not solution.converged)
        stats.hard_cases += int(solution.hard_case)
        stats.negative_curvature_steps += int(spectral.lambda_min < 0.0)
        stats.step_clamps += int(clamped)
    if not (pred > 0.0 and math.isfinite(pred)):
        if memory.k > 0 and gg > 0.0:
            # The trust-region minimiser of a consistent model decreases it whenever
            # g != 0; a step that does not means the pairs' k x k algebra has broken
            # down (near-singular M^{-1} or Psi^T Psi that the pair policy let
            # through). Keeping the pairs would repeat this at every step (the state
            # would never change), so drop the oldest and solve again.
            raise _Inconsistent
        # g = 0 with B positive semidefinite, or rounding: the model predicts no decrease.
        stats.nonpositive_pred += 1
        state["last_rho"] = None
        return None
    return _StepModel(k, psi_gram, m_inv, ss_model)


def solve_model(opt, memory: CurvatureMemory, stats: Counters, g: Tensor, gg: float, g_products: Tensor,
                radius: float, s: Tensor) -> _Solved:
    """The k x k algebra of this step's model and its trust-region subproblem's solution;
    raises ``_Breakdown`` when a factorisation fails (its cause the LinAlgError) or gives
    non-finite values. ``s`` may be used as work space (g_perp formed explicitly)."""
    gamma = opt.param_groups[0]["gamma"]
    eps = torch.finfo(g.dtype).eps
    device = g.device
    reducer = opt._layout
    empty = _NO_PAIRS
    k = memory.k
    try:
        psi_gram, m_inv = memory.b_factors(gamma)
        spectral = spectral_form(psi_gram, m_inv, gamma, complete=k >= opt._trainable_numel())
        psi_g = memory.split(g_products) if k > 0 else empty
        g_par = spectral.parallel_coordinates(psi_g)
        u = spectral.psi_coefficients(g_par)  # Psi u = P_par g_par
        if not (bool(torch.isfinite(g_par).all()) and bool(torch.isfinite(u).all())):
            raise _Breakdown
        par_sq = float((g_par**2).sum())
        # gg - par_sq loses to cancellation only the digits the products lack
        # (chunked float64 sums); form g_perp explicitly when that leaves too few.
        explicit_perp = par_sq > (1.0 - CANCELLATION_GUARD * eps) * gg
        if not explicit_perp:
            g_perp_sq = gg - par_sq  # at most one bit lost to cancellation
        else:  # g lies mostly in range(Psi): form g_perp = g - Psi u explicitly
            with exact_float32_matmul(device):
                combine(memory.buffer, opt._coefficients(memory.psi_combination(-u), g), s, base=g)
                g_perp_sq = float(reducer.dots([(s, s)])[0])
            stats.explicit_passes += 1
        solution = solve_subproblem(
            spectral, g_par, math.sqrt(max(g_perp_sq, 0.0)), radius,
            zero_tol=100.0 * eps * math.sqrt(gg),
        )
        if not (math.isfinite(solution.model_value) and math.isfinite(solution.perp_scale)):
            raise _Breakdown
        return _Solved(k, psi_gram, m_inv, spectral, psi_g, u, solution, explicit_perp)
    except torch.linalg.LinAlgError as exc:
        raise _Breakdown from exc


def unit_orthogonal_to_psi(opt, memory, spectral, gamma: float, seed: int, out: Tensor) -> Tensor:
    """A unit vector orthogonal to range(Psi): the hard case with lambda_min = gamma."""
    generator = torch.Generator(device=out.device).manual_seed(1_000_003 + seed)
    full = torch.randn(opt._layout.total, generator=generator, device=out.device, dtype=out.dtype)
    full[opt._n :] = 0.0  # the padding stays zero
    for piece, p in zip(torch.split(full[: opt._n], opt._numels), opt._params):
        if not p.requires_grad:  # frozen parameters never move, hard cases included
            piece.zero_()
    out.copy_(full[opt._layout.lo : opt._layout.hi])
    with exact_float32_matmul(out.device):
        if memory.k > 0:
            psi_v = memory.split(opt._layout.rows(memory.buffer, out))
            u = spectral.psi_coefficients(spectral.parallel_coordinates(psi_v))
            combine(memory.buffer, opt._coefficients(memory.psi_combination(-u), out), out)
        norm_sq = float(opt._layout.dots([(out, out)])[0])
    if norm_sq > 0.0:
        out.div_(math.sqrt(norm_sq))
    # else range(Psi) holds every trainable coordinate: no such z; out is zero
    return out

