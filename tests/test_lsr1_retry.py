"""The one bounded retry of both steps: drop the oldest pair after a k x k breakdown or an
inconsistent model, and solve again; never more than k + 1 attempts."""

from __future__ import annotations

import pytest
import torch

from lsr1bench.optim._counters import Counters
from lsr1bench.optim._phases import _Breakdown, _Inconsistent, retry_dropping_oldest


class Pairs:
    """Stands in for CurvatureMemory: k pairs, oldest first."""

    def __init__(self, k: int) -> None:
        self.order = list(range(k))

    @property
    def k(self) -> int:
        return len(self.order)

    def drop_oldest(self) -> None:
        self.order.pop(0)


def test_breakdowns_drop_one_pair_each_and_the_cause_propagates_without_pairs():
    memory, stats, seen = Pairs(3), Counters(), []

    def attempt():
        seen.append(memory.k)
        try:
            raise torch.linalg.LinAlgError("singular")
        except torch.linalg.LinAlgError as exc:
            raise _Breakdown from exc

    with pytest.raises(torch.linalg.LinAlgError, match="singular"):
        retry_dropping_oldest(memory, stats, attempt)
    # k + 1 = 4 attempts with 3, 2, 1, 0 pairs; 3 failures counted, 3 pairs dropped
    assert seen == [3, 2, 1, 0]
    assert stats.linalg_failures == 3 and stats.dropped_pairs == 3 and stats.inconsistent_models == 0


def test_inconsistent_models_drop_the_oldest_until_one_is_consistent():
    memory, stats = Pairs(4), Counters()
    dropped_by_then = []

    def attempt():
        dropped_by_then.append(list(memory.order))
        if memory.k > 2:
            raise _Inconsistent
        return "step"

    assert retry_dropping_oldest(memory, stats, attempt) == "step"
    assert dropped_by_then == [[0, 1, 2, 3], [1, 2, 3], [2, 3]]  # the oldest pair leaves first
    assert stats.inconsistent_models == 2 and stats.dropped_pairs == 2 and stats.linalg_failures == 0


def test_a_breakdown_that_is_not_a_linalg_error_propagates_itself_without_pairs():
    memory, stats = Pairs(0), Counters()

    def attempt():
        raise _Breakdown

    with pytest.raises(_Breakdown):
        retry_dropping_oldest(memory, stats, attempt)
    assert stats.dropped_pairs == 0 and stats.linalg_failures == 0
