"""Data-parallel L-SR1: which coordinates a rank holds, and the check that ranks agree
(the layout objects that use them are in ``_layout.py``).

L-SR1's algebra does not separate by layers (every Gram entry, Psi^T g, rho and the skip
test are inner products over all n coordinates), so the memory is split by coordinates:
rank r holds columns [lo_r, hi_r) of the (m x n) memory and of the work rows, computes
partial inner products, and one all-reduce of O(m) float64 values completes them. Every
decision is then taken from reduced (identical) values on every rank, so all ranks call
the closure the same number of times. Imports torch only; no call is made without a group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ._compact import CHUNK, SMALL, padded_length


@dataclass(frozen=True)
class Coordinates:
    """Where this rank's coordinates lie in the padded flat parameter vector."""

    world_size: int
    rank: int
    sharded: bool
    total: int  # padded length of the full flat vectors (a multiple of world_size slices)
    lo: int
    hi: int

    @property
    def width(self) -> int:
        return self.hi - self.lo

    def describe(self) -> dict:
        return {"world_size": self.world_size, "rank": self.rank, "sharded": self.sharded,
                "total": self.total, "lo": self.lo, "hi": self.hi}


def make_coordinates(n: int, world_size: int, rank: int, sharded: bool) -> Coordinates:
    """Balanced equal slices (so s can be all-gathered into one tensor); each slice a
    multiple of CHUNK when n exceeds it, so the chunked products stay chunked."""
    if world_size == 1 or not sharded:
        total = padded_length(n)
        return Coordinates(world_size, rank, False, total, 0, total)
    per = -(-n // world_size)
    if n > CHUNK:
        per = -(-per // CHUNK) * CHUNK
    total = per * world_size
    return Coordinates(world_size, rank, True, total, rank * per, (rank + 1) * per)


def decision_digest(stats: dict, radius: float | None, k: int) -> float:
    """A number every rank computes identically while their decisions agree.

    It includes ``steps``: a rank whose closure raised (an aborted step) and that goes on
    is one step ahead of the others, which would otherwise pair its collectives with
    theirs one batch out of step without notice."""
    value = (stats["accepted_steps"] + 3.0 * stats["rejected_steps"] + 7.0 * stats["skipped_updates"]
             + 13.0 * stats["dropped_pairs"] + 17.0 * k + 19.0 * stats["nonfinite_points"]
             + 23.0 * stats["steps"] + 29.0 * stats.get("aborted_steps", 0))
    if radius is not None and math.isfinite(radius):
        value += radius
    return value


def check_consistent(total: float, total_sq: float, world_size: int, step: int) -> None:
    """Ranks agree iff P * sum(h^2) == (sum h)^2 (Cauchy-Schwarz equality)."""
    gap = world_size * total_sq - total * total
    if not abs(gap) <= 1e-9 * max(total * total, 1.0):
        raise RuntimeError(
            f"LSR1: ranks disagree about the optimizer's state before step {step} "
            f"(their decisions diverged: a rank saw different data, parameters or settings)"
        )


def small(values: list[float], like: Tensor) -> Tensor:
    return torch.tensor(values, dtype=SMALL, device=like.device)
