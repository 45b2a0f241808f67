"""Pieces both L-SR1 steps share: the two reductions (sync 1 at x, sync 2 at the trial
point), forming beta g + Psi w, the SR1 skip test with the pair policy, the one bounded
retry that drops the oldest pair, and the records the phases hand each other.

Each phase is a function of the optimizer ``opt`` (its work buffers, layout and
``param_groups[0]``) and of explicit inputs; it returns what the next phase reads."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor

from ._compact import SMALL, CurvatureMemory, combine, exact_float32_matmul, products, well_posed
from ._counters import Counters
from ._distributed import decision_digest
from ._trust_region import spectral_form

# A value computed as a difference of terms of total size ``size`` is trusted when it is at
# least CANCELLATION_GUARD * eps * size (eps of the parameters' dtype): the chunked products
# are accurate to a few eps, so that leaves about three correct digits. Below it the value
# is formed from the vectors by an extra pass (counted in ``explicit_passes``).
CANCELLATION_GUARD = 1e3

# The k-vectors of a model without pairs; shared (never written), so the step allocates nothing for it.
_NO_PAIRS = torch.zeros(0, dtype=torch.float64)


def first_products(opt, memory: CurvatureMemory, f: Tensor, g: Tensor) -> tuple[float, float, Tensor]:
    """Sync 1: the loss at x, g^T g and Psi^T g in one transfer (with a group: one
    all-reduce, which also carries the check that every rank's decisions agree)."""
    with exact_float32_matmul(g.device):
        gg = g.unsqueeze(0)
        state = opt._global_state()
        digest = decision_digest(state["stats"].as_dict(), state["radius"], memory.k)
        parts = [f.reshape(1).to(SMALL), *opt._layout.consistency_parts(digest, g.device)]
        parts.append(products(gg, gg).reshape(1))
        if memory.k > 0:
            parts.append(products(memory.buffer, gg).reshape(-1))
        first = opt._layout.consistent(opt._layout.gather(parts, means=1), 1, state["stats"].steps)
    opt._step_loss = float(first[0])
    return float(first[0]), float(first[1]), first[2:]


def second_products(opt, memory: CurvatureMemory, f_trial: Tensor | None, rows: Tensor, k: int):
    """Sync 2: [the loss at the trial point,] the 4 x 4 Gram of (s, psi, y, g) and
    Psi^T [s, psi] (one fused pass over the memory), in one transfer."""
    with exact_float32_matmul(rows.device):
        parts = [] if f_trial is None else [f_trial.reshape(1)]
        parts.append(products(rows, rows))
        if k > 0:
            parts.append(products(memory.buffer, rows[:2]))
        second = opt._layout.gather(parts, means=0 if f_trial is None else 1)
    offset = 0 if f_trial is None else 1
    f_t = float(second[0]) if f_trial is not None else None
    gram = second[offset : offset + 16].reshape(4, 4)
    dots = {"ss": float(gram[0, 0]), "sp": float(gram[0, 1]), "sy": float(gram[0, 2]), "gs": float(gram[0, 3]),
            "pp": float(gram[1, 1]), "yy": float(gram[2, 2])}
    slots = memory.slots
    if k > 0:
        both = second[offset + 16 :].reshape(slots, 2)
        s_products, p_products = both[:, 0].clone(), both[:, 1].clone()
    else:
        s_products = p_products = torch.zeros(slots, dtype=torch.float64)
    return f_t, dots, s_products, p_products, bool(torch.isfinite(second).all())


def form_step(opt, memory: CurvatureMemory, g: Tensor, beta: float, w: Tensor, out: Tensor) -> None:
    """out = beta g + Psi w: one pass over the memory (none without pairs)."""
    with exact_float32_matmul(g.device):
        if memory.k > 0:
            combine(memory.buffer, opt._coefficients(memory.psi_combination(w), g), out, base=g, beta=beta)
        else:
            torch.mul(g, beta, out=out)


def reduce_at_x(opt, memory: CurvatureMemory, f_device: Tensor, g: Tensor) -> _AtX | None:
    """Sync 1 (see ``_first_products``); None when f, g^T g or Psi^T g is not finite."""
    f, gg, g_products = first_products(opt, memory, f_device, g)
    if not (math.isfinite(f) and math.isfinite(gg) and bool(torch.isfinite(g_products).all())):
        return None
    return _AtX(f, gg, g_products)


def maybe_store_pair(
    opt, state, memory, s, psi, s_products, p_products, diag, numerator, residual_norm,
    reference_norm, other_norm, factors,
) -> None:
    """Append (s, y) unless the SR1 skip test says not to; then apply the pair policy.

    The paper's test: store when |numerator| >= r * other_norm * residual_norm, where
    the residual is y - B s (numerator s^T r) or, for the line search, s - H y
    (numerator y^T r). With ``skip_noise_floor`` (not the paper's) a residual at the
    rounding level of ``reference_norm`` (||y||, or ||s||) is also skipped.
    """
    stats = state["stats"]
    stats.skip_tests += 1
    denominator = other_norm * residual_norm
    cosine = abs(numerator) / denominator if denominator > 0.0 else 0.0
    state["last_update_cosine"] = cosine
    opt._cosines.append(cosine)
    # a zero denominator (s = 0, or y = B s exactly) leaves the SR1 update undefined: skip
    skip = not (denominator > 0.0 and abs(numerator) >= opt.param_groups[0]["skip_tol"] * denominator)
    if opt.param_groups[0]["skip_noise_floor"]:
        skip = skip or residual_norm <= 100.0 * torch.finfo(s.dtype).eps * reference_norm
    if skip:
        stats.skipped_updates += 1
        return
    memory.append(s, psi, s_products, p_products, diag)
    tol = opt._rank_tol()
    # Only the trust region factors Psi^T Psi (Cholesky); the line search needs N^{-1} alone.
    check_gram = opt.param_groups[0]["method"] == "trust_region"
    scaled = opt.param_groups[0]["pair_policy"] == "scaled"
    while memory.k > 0:
        if well_posed(*factors(), tol, check_gram=check_gram, scaled=scaled):
            break
        memory.drop_oldest()
        stats.dropped_pairs += 1


def retry_dropping_oldest(memory: CurvatureMemory, stats: Counters, attempt: Callable[[], Any]) -> Any:
    """``attempt()``'s result, calling it again after each failure with the oldest pair
    dropped. A failure is a ``_Breakdown`` (a k x k factorisation that failed or gave
    non-finite values; counted in ``linalg_failures``) or an ``_Inconsistent`` model (one
    that predicts no decrease while g != 0; counted in ``inconsistent_models``). Bounded:
    at most k + 1 attempts, since each failure drops a pair and a breakdown with no pair
    left propagates (as the error that caused it)."""
    for _ in range(memory.k + 1):
        try:
            return attempt()
        except _Breakdown as failure:
            if memory.k == 0:
                raise (failure.__cause__ or failure) from None
            stats.linalg_failures += 1
        except _Inconsistent:
            stats.inconsistent_models += 1
        memory.drop_oldest()
        stats.dropped_pairs += 1
    raise AssertionError("retry_dropping_oldest: an attempt without pairs can only succeed or raise")


class _InverseModel(NamedTuple):
    """The line search's H = delta I + Phi N Phi^T of k pairs (Phi^T Phi, N^{-1})."""

    k: int
    phi_gram: Tensor
    n_inv: Tensor
    delta: float


class _Solved(NamedTuple):
    """One step's model and the solution of its trust-region subproblem."""

    k: int
    psi_gram: Tensor
    m_inv: Tensor
    spectral: Any
    psi_g: Tensor
    u: Tensor
    solution: Any
    explicit_perp: bool


class _AtX(NamedTuple):
    """What the step knows at x after its first sync: f, g^T g and Psi^T g (slot order)."""

    f: float
    gg: float
    g_products: Tensor


class _AtTrial(NamedTuple):
    """What the step knows at x + s after its second sync."""

    f: float | None  # the loss at x + s (averaged over a group)
    dots: dict  # the 4 x 4 Gram of (s, psi, y, g), by name (ss, sp, sy, gs, pp, yy)
    s_products: Tensor  # Psi^T s, slot order
    p_products: Tensor  # Psi^T psi, slot order
    psi_s: Tensor  # Psi^T s, oldest pair first
    psi_psi: Tensor  # Psi^T psi, oldest pair first
    finite: bool


class _StepModel(NamedTuple):
    """The model a step was solved with (k pairs, Psi^T Psi, M^{-1}) and its ||s||^2."""

    k: int
    psi_gram: Tensor
    m_inv: Tensor
    ss_model: float


class _Breakdown(Exception):
    """The k x k algebra failed (its cause is the LinAlgError) or produced non-finite values."""


class _Inconsistent(Exception):
    """The trust-region model predicts no decrease while g != 0 (see ``solve_for_step``)."""


def _has_negative_eigenvalue(gram: Tensor, middle_inv: Tensor, scale: float, complete: bool = False) -> bool:
    """Whether scale I + Omega W Omega^T (W = middle_inv^{-1}, Omega^T Omega = gram) has a
    negative eigenvalue; False when the factors cannot be formed. ``complete``: Omega's
    columns span the whole space, so ``scale`` is no eigenvalue."""
    if scale < 0.0 and not complete:
        return True
    if gram.shape[0] == 0:
        return False
    try:
        return spectral_form(gram, middle_inv, scale, complete=complete).lambda_min < 0.0
    except torch.linalg.LinAlgError:
        return False

