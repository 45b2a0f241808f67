"""What ``LSR1.statistics()`` counts: one typed record, each counter documented.

Every step ends as exactly one of the ``OUTCOMES``, so they add up to ``steps``; the other
counters are per step unless they say otherwise. The record is kept in the optimizer's
state and written to a state dict as a plain dict of ints (``as_dict``), so checkpoints
load with ``torch.load(weights_only=True)`` and older ones (missing counters) still load.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# What a step ended as: every step is exactly one of these, so they sum to ``steps``.
OUTCOMES = (
    "accepted_steps",
    "rejected_steps",
    "nonfinite_points",
    "nonpositive_pred",
    "negligible_steps",
    "aborted_steps",
)


@dataclass
class Counters:
    steps: int = 0
    # --- outcomes (exactly one per step) ---
    accepted_steps: int = 0  # trial point (or line-search point) taken
    rejected_steps: int = 0  # trial point evaluated and refused (rho <= eta, non-finite, no decrease)
    nonfinite_points: int = 0  # loss or gradient at x not finite: no trial point evaluated
    nonpositive_pred: int = 0  # the model predicted no decrease (g = 0 or rounding): no trial point
    negligible_steps: int = 0  # x + s rounded to x (same loss and gradient at the trial point):
    #                            nothing changes, not even the radius (converged to rounding)
    aborted_steps: int = 0  # the closure raised: parameters back at x, the exception propagated
    # --- parts of the outcomes and fallbacks ---
    nonfinite_trials: int = 0  # part of rejected_steps: the loss or gradient at x + s was not finite
    pred_sign_changes: int = 0  # part of rejected_steps: pred of the applied s was <= 0 after rounding
    skip_tests: int = 0  # SR1 skip tests made (one per finite trial, or accepted line-search step)
    skipped_updates: int = 0  # skip tests that refused the pair
    dropped_pairs: int = 0  # by the pair policy, after a k x k failure or an inconsistent model
    linalg_failures: int = 0  # k x k factorisations that failed; each dropped the oldest pair
    inconsistent_models: int = 0  # models with g != 0 predicting no decrease; each dropped the oldest pair
    closure_evaluations: int = 0  # closure calls
    hard_cases: int = 0  # steps whose subproblem was a hard case (p = p_hat + alpha z)
    newton_iterations: int = 0  # Newton iterations of the solves the steps were taken from
    newton_unconverged: int = 0  # steps whose boundary solve stopped early (s clamped to the radius)
    step_clamps: int = 0  # steps whose s came out longer than the radius by more than rounding
    #                       and was scaled back onto it
    negative_curvature_steps: int = 0  # steps whose model B (the one solved) had a negative eigenvalue
    explicit_passes: int = 0  # extra passes over the memory against cancellation (g_perp, y - Bs, z)
    host_syncs: int = 0  # blocking device-to-host transfers (two per step on the common path)
    descent_fallbacks: int = 0  # line search: -H g was no descent direction, -g used
    line_search_evaluations: int = 0  # closure calls made by the line searches

    def outcomes(self) -> int:
        """How many steps have an outcome (equals ``steps`` between steps)."""
        return sum(getattr(self, key) for key in OUTCOMES)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> Counters:
        """From a state dict's plain dict; counters it lacks (an older version's) start at 0."""
        known = {f.name for f in fields(cls)}
        return cls(**{key: int(value) for key, value in values.items() if key in known})
