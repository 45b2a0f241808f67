"""How runs are carried out and survive: the interrupt handler every process shares
(:mod:`.interrupt`) and one run's checkpoints (:mod:`.checkpoint`).

The training loop (:mod:`lsr1bench.runner`) saves and restores checkpoints; the
scheduler and the launcher only install the handler and pass signals on.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import Any

# What a run tells the display: {"type": "start" | "epoch" | "resume" | "end", "run_id": ...}
EventSink = Callable[[dict[str, Any]], None]


def usable_cpus() -> int:
    """The CPU cores this process may run on (its affinity mask, else all)."""
    with contextlib.suppress(AttributeError, OSError):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
