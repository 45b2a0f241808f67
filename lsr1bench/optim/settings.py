"""LSR1's constructor arguments as one table: default, valid range, meaning.

``LSR1.__init__`` checks its arguments with :func:`check`, and the benchmark's suite
validation and ``lsr1bench list`` read :data:`LSR1_SETTINGS`, so a value the suite accepts
is a value the optimizer accepts, with the same words. This module imports the standard
library only (``lsr1bench.registry`` reads it without loading torch).

Ranges follow the paper (Ramamurthy & Duffy 2017, Algorithm 1 and section 4) where it
states one and the algebra otherwise: a radius growth factor of 1 keeps the radius (legal,
if pointless); a skip tolerance of 0 skips only exact zeros; the decrease threshold may
be 0 (shrink only on a rise), but must lie below the increase threshold.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Setting", "LSR1_SETTINGS", "LSR1_RULES", "check", "problems"]


@dataclass(frozen=True)
class Setting:
    """One hyperparameter: its type, default and the values it accepts.

    ``kind``: ``"int"``, ``"float"``, ``"bool"``, ``"choice"`` (one of ``choices``) or
    ``"pair"`` (two floats, each within the bounds). Bounds are closed unless
    ``low_open`` / ``high_open``; ``None`` is no bound. ``optional``: ``None`` is accepted
    (and means what ``description`` says). ``nonzero``: 0 is refused.
    """

    kind: str
    default: Any
    description: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nonzero: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()

    def allowed(self, none: str = "None") -> str:
        """What the setting accepts, in words: ``a number in (0, 1)``, ``an integer >= 1``.

        ``none``: how None is written (``null`` in YAML).
        """
        if self.kind == "bool":
            text = "true or false"
        elif self.kind == "choice":
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            noun = {"int": "an integer", "float": "a number", "pair": "two numbers"}[self.kind]
            text = noun + self._bounds()
            if self.kind == "float" and self.low is None and self.high is None:
                text = "a finite number"
            if self.nonzero:
                text += " other than 0"
        return text + (f" or {none}" if self.optional else "")

    def _bounds(self) -> str:
        low, high = self.low, self.high
        if low is not None and high is not None:
            return f" in {'(' if self.low_open else '['}{low:g}, {high:g}{')' if self.high_open else ']'}"
        if low is not None:
            return f" {'>' if self.low_open else '>='} {low:g}"
        if high is not None:
            return f" {'<' if self.high_open else '<='} {high:g}"
        return ""

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` is a valid value of this setting on its own."""
        if value is None:
            return self.optional
        if self.kind == "bool":
            return isinstance(value, bool)
        if self.kind == "choice":
            return isinstance(value, str) and value in self.choices
        if self.kind == "pair":
            return (
                isinstance(value, (list, tuple))
                and len(value) == 2
                and all(_is_number(v) and self._within(float(v)) for v in value)
            )
        if self.kind == "int":
            return isinstance(value, int) and not isinstance(value, bool) and self._within(value)
        return _is_number(value) and self._within(float(value))

    def _within(self, value: float) -> bool:
        if math.isnan(value) or math.isinf(value):
            return False
        if self.nonzero and value == 0:
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _unit(description: str, default: float | None, low_open: bool = True, high_open: bool = True) -> Setting:
    return Setting("float", default, description, 0.0, 1.0, low_open=low_open, high_open=high_open)


# Every keyword of LSR1.__init__ after ``params`` except ``process_group`` (an object).
LSR1_SETTINGS: Mapping[str, Setting] = {
    "method": Setting(
        "choice", "trust_region", "Algorithm 1 (trust region) or Algorithm 2 (line search)",
        choices=("trust_region", "line_search"),
    ),
    "memory": Setting("int", 5, "curvature pairs kept, m (the paper: 5)", low=1),
    "gamma": Setting("float", 1.0, "initial Hessian B_0 = gamma I", nonzero=True),
    "initial_radius": Setting(
        "float", None, "first trust radius; null (None): the first gradient's norm",
        low=0.0, low_open=True, optional=True,
    ),
    "eta": _unit("accept a step when actual / predicted decrease > eta (the paper: (0, 1e-3))", 1e-4, low_open=False),
    "skip_tol": _unit("SR1 skip test: skip a pair unless |s^T (y - B s)| >= skip_tol |s| |y - B s|", 1e-8, False),
    "radius_increase": Setting("float", 2.0, "factor the radius grows by after a good step", low=1.0),
    "radius_decrease": _unit("factor the radius shrinks by after a poor step", 0.5),
    "increase_threshold": _unit("grow the radius when the ratio exceeds this (and the step is near the edge)", 0.75),
    "decrease_threshold": _unit("shrink the radius when the ratio falls below this", 0.1, low_open=False),
    "boundary_fraction": _unit("a step is 'near the edge' beyond this fraction of the radius", 0.8, high_open=False),
    "max_radius": Setting(
        "float", None, "cap on the trust radius; null (None): no cap", low=0.0, low_open=True, optional=True
    ),
    "rank_tol": Setting(
        "float", None, "relative tolerance of the pair policy; null (None): 100 x the dtype's machine epsilon",
        0.0, 1.0, low_open=True, high_open=True, optional=True,
    ),
    "pair_policy": Setting(
        "choice", "scaled", "'scaled': test pairs after scaling out their lengths; 'paper': the unscaled test",
        choices=("paper", "scaled"),
    ),
    "skip_noise_floor": Setting("bool", False, "also skip a pair whose y - B s is at y's rounding level"),
    "line_search": Setting(
        "choice", "strong_wolfe", "the line search of Algorithm 2", choices=("strong_wolfe", "armijo")
    ),
    "c1": _unit("sufficient-decrease constant of the line search", 1e-4),
    "c2": _unit("curvature constant of the strong Wolfe search", 0.9),
    "max_line_search_evaluations": Setting("int", 10, "closure calls one line search may make", low=1),
    "shard_memory": Setting("bool", True, "data-parallel: each rank keeps 1/P of the curvature memory"),
    "keep_pairs": Setting("bool", False, "keep the pairs S, Y as well as the products Psi (diagnostics)"),
}

# Rules between two settings: (smaller, larger), the first must lie below the second.
LSR1_RULES: tuple[tuple[str, str], ...] = (("decrease_threshold", "increase_threshold"), ("c1", "c2"))


def problems(
    values: Mapping[str, Any],
    table: Mapping[str, Setting] = LSR1_SETTINGS,
    rules: tuple[tuple[str, str], ...] = LSR1_RULES,
) -> list[tuple[str, str]]:
    """``(key, message)`` for every value in ``values`` its setting refuses; unknown keys are skipped.

    The message reads ``Invalid memory: 0 (expected an integer >= 1)``. A rule is checked
    when ``values`` holds both of its settings, each valid on its own.
    """
    out = [
        (key, f"Invalid {key}: {value!r} (expected {table[key].allowed()})")
        for key, value in values.items()
        if key in table and not table[key].accepts(value)
    ]
    bad = {key for key, _ in out}
    for small, large in rules:
        if small in values and large in values and not (bad & {small, large}):
            if not values[small] < values[large]:
                out.append(
                    (
                        small,
                        f"Invalid {small}={values[small]!r}: it must be below {large}={values[large]!r}",
                    )
                )
    return out


def check(values: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming the first of ``values`` that LSR1 cannot take."""
    found = problems(values)
    if found:
        raise ValueError(found[0][1])
