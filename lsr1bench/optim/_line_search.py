"""Step-length searches for the line-search variant (the paper's Algorithm 2).

``phi(alpha)`` returns (f(x + alpha d), grad f(x + alpha d)^T d) on the step's minibatch.
Both searches return the chosen alpha (0.0 when none gave sufficient decrease) and
whether the last call of ``phi`` was at that alpha, so the caller knows if the gradient
it holds belongs to the chosen point.

References: N&W Algorithms 3.1 (backtracking), 3.5 and 3.6 (strong Wolfe with zoom),
eq. 3.59 (cubic interpolation of two points with derivatives).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

Phi = Callable[[float], tuple[float, float]]


@dataclass(frozen=True)
class SearchResult:
    alpha: float
    f: float
    evaluations: int
    last_is_alpha: bool


def armijo_backtracking(
    phi: Phi, f0: float, slope0: float, alpha: float, *, c1: float, max_evaluations: int,
    shrink: float = 0.5,
) -> SearchResult:
    """Halve alpha until f(x + alpha d) <= f0 + c1 alpha slope0 (N&W Algorithm 3.1)."""
    for evaluation in range(1, max_evaluations + 1):
        f, _ = phi(alpha)
        if math.isfinite(f) and f <= f0 + c1 * alpha * slope0:
            return SearchResult(alpha, f, evaluation, True)
        alpha *= shrink
    return SearchResult(0.0, f0, max_evaluations, False)


def _cubic_minimizer(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float | None:
    """Minimiser of the cubic through (a, fa, da), (b, fb, db) (N&W eq. 3.59), or None."""
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0.0 or not math.isfinite(disc):
        return None
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0.0:
        return None
    return b - (b - a) * (db + d2 - d1) / denom


def strong_wolfe(
    phi: Phi, f0: float, slope0: float, alpha: float, *, c1: float, c2: float,
    max_evaluations: int, alpha_max: float = 1e10,
) -> SearchResult:
    """A step satisfying the strong Wolfe conditions (N&W Algorithms 3.5 and 3.6).

    Falls back to the best sufficient-decrease point seen when the evaluation budget
    runs out; returns alpha = 0 when no point decreased f enough.
    """
    evaluations = 0
    last_alpha = -1.0
    best = (0.0, f0)  # (alpha, f) with sufficient decrease and lowest f

    def evaluate(a: float) -> tuple[float, float]:
        nonlocal evaluations, last_alpha, best
        f, d = phi(a)
        evaluations += 1
        last_alpha = a
        if math.isfinite(f) and f <= f0 + c1 * a * slope0 and f < best[1]:
            best = (a, f)
        return f, d

    def done(a: float, f: float) -> SearchResult:
        return SearchResult(a, f, evaluations, last_alpha == a)

    def zoom(lo: float, f_lo: float, d_lo: float, hi: float, f_hi: float, d_hi: float) -> SearchResult:
        while evaluations < max_evaluations:
            a = _cubic_minimizer(lo, f_lo, d_lo, hi, f_hi, d_hi) if math.isfinite(f_hi) else None
            width = abs(hi - lo)
            # Safeguard: stay at least 10% of the interval away from both ends.
            if a is None or not (min(lo, hi) + 0.1 * width <= a <= max(lo, hi) - 0.1 * width):
                a = 0.5 * (lo + hi)
            f, d = evaluate(a)
            if not math.isfinite(f) or f > f0 + c1 * a * slope0 or f >= f_lo:
                hi, f_hi, d_hi = a, f, d
            else:
                if abs(d) <= -c2 * slope0:
                    return done(a, f)
                if d * (hi - lo) >= 0.0:
                    hi, f_hi, d_hi = lo, f_lo, d_lo
                lo, f_lo, d_lo = a, f, d
        return done(*best)

    prev, f_prev, d_prev = 0.0, f0, slope0
    while evaluations < max_evaluations:
        f, d = evaluate(alpha)
        if not math.isfinite(f) or f > f0 + c1 * alpha * slope0 or (evaluations > 1 and f >= f_prev):
            return zoom(prev, f_prev, d_prev, alpha, f, d)
        if abs(d) <= -c2 * slope0:
            return done(alpha, f)
        if d >= 0.0:
            return zoom(alpha, f, d, prev, f_prev, d_prev)
        prev, f_prev, d_prev = alpha, f, d
        alpha = min(2.0 * alpha, alpha_max)
    return done(*best)
