"""One interrupt handler for every process of a suite: stop at the next step boundary.

SIGINT (Ctrl-C), SIGTERM (what a cluster scheduler sends at its time limit) and SIGUSR1
(what Slurm sends ``--signal=USR1@120`` seconds before it) all mean the same: finish the
optimizer step in progress, write a checkpoint, record the run ``interrupted`` and exit
with :data:`EXIT_INTERRUPTED`. The handler only sets a flag that the training loop reads
between steps (:meth:`StopRequest.check`), so a step is never cut in half.

A second signal means "now": it raises ``KeyboardInterrupt`` wherever the process is,
and the run is recorded ``interrupted`` from its last checkpoint. One request often
arrives twice (Slurm signals every process of a job step, and a parent passes the signal
on to its workers as well), so a repeat within :data:`REPEAT_WINDOW_S` seconds of the
first counts as the same request.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

# The exit code of a suite (and of each rank of a data-parallel run) stopped by a signal,
# with its unfinished runs checkpointed: rerun the same command to resume.
EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)
REPEAT_WINDOW_S = 1.0
# Fault injection for tests of resuming: the run in this process behaves as if a signal
# arrived right after its N-th optimizer step (counted from the start of this process's
# attempt at the run).
STOP_AFTER_STEPS_ENV = "LSR1BENCH_STOP_AFTER_STEPS"


class Stopped(KeyboardInterrupt):
    """The run stopped at a step boundary on request, its checkpoint written."""


class StopRequest:
    """Whether this process was asked to stop, and by which signal."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.reason: str | None = None
        self.first_at: float | None = None

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str) -> None:
        """Ask the loop to stop at its next step boundary (the signal handler's first answer)."""
        if self.reason is None:
            self.reason = reason
            self.first_at = self.clock()

    def handle(self, signum: int, frame: Any = None) -> None:
        """The signal handler: the first signal requests a stop, a later one stops at once."""
        name = signal.Signals(signum).name
        if self.reason is None:
            self.request(name)
            return
        if self.first_at is not None and self.clock() - self.first_at < REPEAT_WINDOW_S:
            return  # the same request, delivered twice
        raise KeyboardInterrupt(f"second signal ({name})")

    def reset(self) -> None:
        self.reason = None
        self.first_at = None

    def message(self) -> str:
        return f"interrupted by {self.reason or 'a signal'}; resumes from its checkpoint"


# the one instance of this process: every loop and launcher reads it
STOP = StopRequest()


_depth: dict[int, int] = {}  # id(stop) -> how many installed() blocks are open on it


@contextlib.contextmanager
def installed(stop: StopRequest = STOP) -> Iterator[StopRequest]:
    """Route SIGINT, SIGTERM and SIGUSR1 to ``stop`` while the block runs (main thread only).

    The outermost block starts with no request: one left from an earlier suite in the same
    process (a test, a notebook) does not stop this one."""
    if not _depth.get(id(stop)):
        stop.reset()
    _depth[id(stop)] = _depth.get(id(stop), 0) + 1
    previous: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, stop.handle)
    except ValueError:  # not the main thread: signals go to the main thread's handler
        pass
    try:
        yield stop
    finally:
        _depth[id(stop)] -= 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_after_steps() -> int | None:
    """The step count of :data:`STOP_AFTER_STEPS_ENV`, or None."""
    text = os.environ.get(STOP_AFTER_STEPS_ENV, "")
    if not text:
        return None
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{STOP_AFTER_STEPS_ENV} must be a positive step count, got {text!r}")
    return int(text)
