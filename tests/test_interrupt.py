"""The one interrupt handler: first signal = stop at the next step boundary, second = now."""

from __future__ import annotations

import os
import signal

import pytest

from lsr1bench import records, runner
from lsr1bench.execute import checkpoint, interrupt
from lsr1bench.execute.interrupt import REPEAT_WINDOW_S, Stopped, StopRequest


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_signal_requests_a_stop_a_repeat_is_the_same_request_a_later_one_stops_at_once() -> None:
    clock = Clock()
    stop = StopRequest(clock)
    stop.handle(signal.SIGUSR1)
    assert stop.requested and stop.reason == "SIGUSR1"
    clock.now += REPEAT_WINDOW_S / 2
    stop.handle(signal.SIGTERM)  # Slurm signals the step and the parent passes it on: one request
    assert stop.reason == "SIGUSR1"
    clock.now += REPEAT_WINDOW_S
    with pytest.raises(KeyboardInterrupt):
        stop.handle(signal.SIGTERM)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT])
def test_a_real_signal_during_training_stops_at_a_step_boundary_with_a_checkpoint(tmp_path, sig) -> None:
    from test_resume import spec_for

    spec = spec_for("adam", False, epochs=2)
    folder = records.run_dir(tmp_path, spec.suite, spec.run_id)

    def signal_myself(event: dict) -> None:
        if event["type"] == "epoch" and event["epoch"] == 1:
            os.kill(os.getpid(), sig)  # lands in the handler: the run goes on to a boundary

    stop = StopRequest()
    with interrupt.installed(stop), pytest.raises(Stopped):
        runner.train(spec, tmp_path, "cpu", signal_myself, stop=stop)
    record = records.read_run(folder)
    assert record.status == "interrupted" and signal.Signals(sig).name in record.error
    assert record.extra["checkpoint"]["epoch"] == 1 and checkpoint.path(folder).exists()
    assert signal.getsignal(sig) is not stop.handle  # the handler is gone after the block


def test_a_request_left_from_an_earlier_suite_does_not_stop_the_next() -> None:
    stop = StopRequest()
    stop.request("SIGTERM")
    with interrupt.installed(stop):
        assert not stop.requested
        stop.request("SIGUSR1")
        with interrupt.installed(stop):  # nested: the request stands
            assert stop.reason == "SIGUSR1"
