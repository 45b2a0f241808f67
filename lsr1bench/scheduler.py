"""Run many RunSpecs: decide what to (re)run, pick devices, and spread runs over workers.

* Resuming: a run whose ``run.json`` says ``completed`` or ``diverged`` for the same spec
  is skipped; anything else (no record, ``running`` from a killed process,
  ``interrupted``, ``failed``) runs again, from its checkpoint where it left one
  (the runner resumes it); a spec that changed, or ``force``, starts afresh.
* Devices: one run at a time in this process for a single device; otherwise one worker
  process per slot (``spawn``), each taking the next run from a shared queue. Several
  GPUs give one slot per GPU; ``jobs`` N gives N slots per device, the CPU threads split
  among the CPU workers.
* Data-parallel runs (``ranks`` > 1) come after the others, one at a time, over all the
  CPU cores or the first ``ranks`` GPUs; the runs with the same ``ranks`` share one set
  of rank processes started through ``torch.distributed.run`` (:mod:`lsr1bench.launch`).
* Ctrl-C, SIGTERM or SIGUSR1 (what a cluster scheduler sends before its time limit):
  every worker finishes its step, writes its run's checkpoint and marks it
  ``interrupted`` (:mod:`lsr1bench.execute.interrupt`); finished runs stay as they are.
  A second signal stops at once, from the last checkpoint.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsr1bench import records
from lsr1bench.execute import EventSink, interrupt, usable_cpus
from lsr1bench.grid import RunSpec


class DeviceError(ValueError):
    """A ``--devices`` request this machine cannot satisfy."""


class DataError(Exception):
    """A dataset a suite needs cannot be loaded."""


@dataclass
class PlannedRun:
    spec: RunSpec
    action: str  # "run" (no record), "rerun" (unfinished, changed or forced), "skip" (done)
    reason: str = ""
    fresh: bool = False  # start from scratch: a checkpoint it left is not resumed


@dataclass
class SuiteOutcome:
    statuses: dict[str, str] = field(default_factory=dict)
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    interrupted: bool = False


def plan(runs: Sequence[RunSpec], output: str | Path, force: bool = False) -> list[PlannedRun]:
    """What to do with each run given the records already under ``output``; reads only."""
    planned = []
    for spec in runs:
        directory = records.run_dir(output, spec.suite, spec.run_id)
        if not (directory / records.RUN_FILE).exists():
            planned.append(PlannedRun(spec, "run"))
            continue
        try:
            record = records.read_run(directory)
        except records.RecordError as exc:
            planned.append(PlannedRun(spec, "rerun", f"unreadable record: {exc}"))
            continue
        same = _comparable(record.spec) == spec.comparable()
        if record.finished and same and not force:
            planned.append(PlannedRun(spec, "skip", record.status))
        elif record.finished and same:
            planned.append(PlannedRun(spec, "rerun", f"--force ({record.status} before)", fresh=True))
        elif record.finished:
            planned.append(PlannedRun(spec, "rerun", "the suite changed since this run", fresh=True))
        elif force:  # --force: from the start, whatever it left
            planned.append(PlannedRun(spec, "rerun", f"was {record.status}; --force: from the start", fresh=True))
        else:
            planned.append(PlannedRun(spec, "rerun", f"was {record.status}{_resume_point(record, directory)}"))
    return planned


def _resume_point(record: records.RunRecord, directory: Path) -> str:
    """``; resumes from epoch E step S`` when the run left a checkpoint, else nothing."""
    saved = record.extra.get("checkpoint")
    if not isinstance(saved, dict) or not (directory / str(saved.get("file", ""))).is_file():
        return ""
    step = f" step {saved.get('step')}" if saved.get("step") else ""
    return f"; resumes after epoch {saved.get('epoch')}{step}"


def _comparable(spec_dict: dict[str, Any]) -> dict[str, Any] | None:
    try:
        return RunSpec.from_dict(spec_dict).comparable()
    except (TypeError, ValueError):
        return None


def resolve_devices(devices: str, jobs: int = 1) -> list[str]:
    """Worker slots for ``auto`` / ``cpu`` / ``cuda:0,cuda:1``: one per device, times ``jobs``."""
    import torch

    if jobs < 1:
        raise DeviceError(f"--jobs must be >= 1, got {jobs}")
    text = devices.replace(" ", "").lower()
    if text == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        names = [f"cuda:{i}" for i in range(count)] or ["cpu"]
    elif text == "cpu":
        names = ["cpu"]
    else:
        names = []
        for part in text.split(","):
            name = "cuda:0" if part == "cuda" else part
            if not name.startswith("cuda:") or not name[5:].isdigit():
                raise DeviceError(f"unknown device {part!r}; use auto, cpu or cuda:0,cuda:1,...")
            if not torch.cuda.is_available():
                raise DeviceError(f"{name} requested but CUDA is not available here (use --devices cpu)")
            if int(name[5:]) >= torch.cuda.device_count():
                raise DeviceError(f"{name} requested but this machine has {torch.cuda.device_count()} CUDA device(s)")
            if name in names:
                raise DeviceError(f"{name} is listed twice")
            names.append(name)
    return [name for name in names for _ in range(jobs)]


def prepare_data(runs: Sequence[RunSpec]) -> None:
    """Load (and download, where allowed) every dataset the runs need, before any record.

    Downloading here, once, also keeps worker processes from racing to fetch the same
    files. Raises :class:`DataError` naming the dataset and how to fix it.
    """
    from lsr1bench import runner
    from lsr1bench.registry.datasets import DatasetUnavailable

    seen = set()
    for spec in runs:
        key = runner.data_key(spec)
        if key in seen:
            continue
        seen.add(key)
        try:
            runner.load_data(spec, "cpu")
        except DatasetUnavailable as exc:
            raise DataError(f"data ({spec.dataset}): {exc}") from None
        except ValueError as exc:  # a subset larger than the split
            raise DataError(f"data ({spec.dataset}, used by {spec.run_id}): {exc}") from None


def run_suite(
    todo: Sequence[PlannedRun],
    output: str | Path,
    devices: Sequence[str],
    on_event: EventSink | None = None,
) -> SuiteOutcome:
    """Train every planned run on the device slots; never raises for one run's failure."""
    outcome = SuiteOutcome()
    sink = on_event or (lambda event: None)

    def record(event: dict[str, Any]) -> None:
        if event["type"] == "end":
            outcome.statuses[event["run_id"]] = event["status"]
            outcome.results[event["run_id"]] = event
        sink(event)

    from lsr1bench.execute import checkpoint

    for p in todo:
        if p.fresh:  # forced or changed: a checkpoint kept from before is not this run's
            checkpoint.remove(records.run_dir(output, p.spec.suite, p.spec.run_id))
    specs = [p.spec for p in todo if p.spec.ranks == 1]
    ranked = [p.spec for p in todo if p.spec.ranks > 1]
    with interrupt.installed():
        if len(specs) == 0:
            pass
        elif len(devices) == 1 or len(specs) == 1:
            _run_here(specs, output, devices[0], record, outcome)
        else:
            _run_workers(specs, output, list(devices)[: len(specs)], record, outcome)
        if ranked and not outcome.interrupted and not interrupt.STOP.requested:
            _run_ranked(ranked, output, devices, record, outcome)
    return outcome


def _run_ranked(
    specs: Sequence[RunSpec], output: str | Path, devices: Sequence[str], sink: EventSink, outcome: SuiteOutcome
) -> None:
    """Data-parallel runs, one at a time, each over all the cores or its first ``ranks`` GPUs."""
    from lsr1bench import launch

    unique = list(dict.fromkeys(devices))
    groups: dict[int, list[RunSpec]] = {}
    for spec in specs:  # one set of rank processes for all the runs of a rank count
        groups.setdefault(spec.ranks, []).append(spec)
    try:
        for group in groups.values():
            if interrupt.STOP.requested:
                break
            launch.run_group_with_torchrun(group, output, unique, sink)
    except KeyboardInterrupt:
        pass
    outcome.interrupted = outcome.interrupted or interrupt.STOP.requested or _was_interrupted(outcome)


def _run_here(
    specs: Sequence[RunSpec], output: str | Path, device: str, sink: EventSink, outcome: SuiteOutcome
) -> None:
    from lsr1bench import runner

    try:
        for spec in specs:
            if interrupt.STOP.requested:  # a signal between two runs: start no other
                break
            runner.train(spec, output, device, sink)
    except KeyboardInterrupt:
        pass
    outcome.interrupted = outcome.interrupted or interrupt.STOP.requested or _was_interrupted(outcome)


def _was_interrupted(outcome: SuiteOutcome) -> bool:
    return any(status == records.INTERRUPTED for status in outcome.statuses.values())


def _threads_per_worker(devices: Sequence[str]) -> int:
    return max(1, usable_cpus() // len(devices))


def _worker(device: str, threads: int, output: str, tasks: Any, events: Any) -> None:
    """A worker process: train runs from ``tasks`` on ``device`` until the sentinel."""
    import torch

    from lsr1bench import runner

    torch.set_num_threads(threads)
    # Ctrl-C, SIGTERM or SIGUSR1 (from the terminal, the cluster or passed on by the main
    # process), even where the shell started the suite with SIGINT ignored (a background
    # job): checkpoint at the next step boundary, then stop
    try:
        with interrupt.installed():
            while not interrupt.STOP.requested:
                item = tasks.get()
                if item is None:
                    break
                runner.train(RunSpec.from_dict(item), output, device, events.put)
            stopped = interrupt.STOP.requested
        _quiet_exit()  # after the block, which puts back the handlers it found
        if stopped:
            events.put({"type": "worker_interrupted", "device": device})
    except KeyboardInterrupt:
        _quiet_exit()
        events.put({"type": "worker_interrupted", "device": device})
    except BaseException as exc:  # noqa: BLE001 - report, then let the process end
        _quiet_exit()
        events.put({"type": "worker_error", "device": device, "error": f"{type(exc).__name__}: {exc}"})
    finally:
        _quiet_exit()


def _quiet_exit() -> None:
    """From here on a worker only reports and exits: a later signal (the main process's
    terminate(), a repeated Slurm signal) must not raise KeyboardInterrupt inside the
    queue's locks while it flushes its last events, which would leave it hung holding the
    suite's pipes. The main process still ends a worker that does not exit in time."""
    for sig in interrupt.SIGNALS:
        with contextlib.suppress(ValueError, OSError):
            signal.signal(sig, signal.SIG_IGN)


def _run_workers(
    specs: Sequence[RunSpec], output: str | Path, devices: Sequence[str], sink: EventSink, outcome: SuiteOutcome
) -> None:
    from lsr1bench import runner

    runner.clear_data_cache()  # the workers load their own copies; free the check's
    context = mp.get_context("spawn")
    tasks = context.Queue()
    events = context.Queue()
    for spec in specs:
        tasks.put(spec.to_dict())
    for _ in devices:
        tasks.put(None)
    threads = _threads_per_worker(devices) if all(d == "cpu" for d in devices) else 1
    workers = [
        context.Process(target=_worker, args=(d, threads, str(output), tasks, events), daemon=True) for d in devices
    ]
    for w in workers:
        w.start()
    running: dict[str, str] = {}  # run id -> device
    try:
        _pump(workers, events, sink, running, outcome)
        if interrupt.STOP.requested:
            outcome.interrupted = True
    except KeyboardInterrupt:
        outcome.interrupted = True  # a second signal: the workers stop at once too
        _pass_on(workers, signal.SIGINT)
        with contextlib.suppress(KeyboardInterrupt):
            _pump(workers, events, sink, running, outcome, deadline=time.monotonic() + 30)
    finally:
        for w in workers:
            if w.is_alive():
                w.terminate()
            w.join(timeout=5)
            if w.is_alive():  # hung (it ignores signals while it reports): never leave one behind
                w.kill()
                w.join(timeout=5)
    # a worker that died (killed, out of memory) leaves its run 'running': say so on disk
    for run_id in list(running):
        _mark_lost(output, specs, run_id, outcome, sink)


def _pass_on(workers: Sequence[Any], sig: int) -> None:
    for w in workers:
        if w.is_alive() and w.pid is not None:
            with contextlib.suppress(OSError):
                os.kill(w.pid, sig)


def _pump(
    workers: Sequence[Any],
    events: Any,
    sink: EventSink,
    running: dict[str, str],
    outcome: SuiteOutcome,
    deadline: float | None = None,
) -> None:
    passed_on = False
    while True:
        if interrupt.STOP.requested and not passed_on:
            # the workers checkpoint at their next step boundary and end; wait for them
            _pass_on(workers, signal.SIGTERM)
            passed_on = True
        try:
            event = events.get(timeout=0.2)
        except queue.Empty:
            if not any(w.is_alive() for w in workers):
                # drain what is left, then stop
                with contextlib.suppress(queue.Empty):
                    while True:
                        _handle(events.get(timeout=0.2), sink, running, outcome)
                return
            if deadline is not None and time.monotonic() > deadline:
                return
            continue
        _handle(event, sink, running, outcome)


def _handle(event: dict[str, Any], sink: EventSink, running: dict[str, str], outcome: SuiteOutcome) -> None:
    kind = event.get("type")
    if kind == "start":
        running[event["run_id"]] = event.get("device", "")
    elif kind == "end":
        running.pop(event["run_id"], None)
        if event["status"] == records.INTERRUPTED:
            outcome.interrupted = True
    elif kind == "worker_interrupted":
        outcome.interrupted = True
        return
    elif kind == "worker_error":
        sink({"type": "message", "text": f"worker on {event['device']} stopped: {event['error']}"})
        return
    sink(event)


def _mark_lost(
    output: str | Path, specs: Sequence[RunSpec], run_id: str, outcome: SuiteOutcome, sink: EventSink
) -> None:
    spec = next(s for s in specs if s.run_id == run_id)
    directory = records.run_dir(output, spec.suite, spec.run_id)
    status = records.INTERRUPTED if outcome.interrupted else records.FAILED
    error = "its worker process ended without finishing it"
    with contextlib.suppress(records.RecordError, OSError):
        record = records.read_run(directory)
        if record.status == records.RUNNING:
            record.status, record.error, record.finished_at = status, error, records.now_iso()
            records.write_run(directory, record)
    sink({"type": "end", "run_id": run_id, "status": status, "error": error})
    outcome.statuses[run_id] = status
