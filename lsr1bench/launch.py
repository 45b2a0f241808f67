"""Start the P processes of a data-parallel run, or be one of them.

Two ways in:

* ``lsr1bench run`` meets runs with ``ranks: P > 1`` and starts them itself with
  :func:`run_group_with_torchrun`: one ``python -m torch.distributed.run --standalone
  --nproc-per-node P -m lsr1bench.launch ...`` for all the runs with that P, one process
  per GPU on NCCL, or P CPU processes on gloo with the cores split among them; the ranks
  train the runs in turn, so starting them, importing torch and loading the data are
  paid once. Rank 0 writes the records and appends progress events to a file this
  process reads, so the display works as for one-process runs.
* ``lsr1bench run`` is itself started by an external ``torchrun`` (``WORLD_SIZE``,
  ``RANK``, ``LOCAL_RANK`` in the environment; how multi-node runs go): the CLI calls
  :func:`init_from_environment` and trains as one worker.

Failures never hang a suite. Every collective waits at most ``LSR1BENCH_DIST_TIMEOUT``
seconds (default 300) for its peers; a rank that raises writes its message to an error
file and exits non-zero; torchrun then stops the other ranks, and the parent turns what
the ranks reported (or, for ranks that reported nothing, that they hung or were killed)
into a ``failed`` record.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from lsr1bench import records
from lsr1bench.execute import EventSink, interrupt, usable_cpus
from lsr1bench.grid import RunSpec

TIMEOUT_ENV = "LSR1BENCH_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 300.0
# Fault injection for tests of failure handling: "RANK:raise" or "RANK:hang" makes that
# rank of a self-launched run fail or stop answering right after the process group forms.
FAULT_ENV = "LSR1BENCH_INJECT_FAULT"


def collective_timeout() -> timedelta:
    """How long a collective waits for its peers before it raises (``LSR1BENCH_DIST_TIMEOUT``)."""
    text = os.environ.get(TIMEOUT_ENV, "")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise ValueError(f"{TIMEOUT_ENV} must be a number of seconds, got {text!r}") from None
    if seconds <= 0:
        raise ValueError(f"{TIMEOUT_ENV} must be > 0 seconds, got {text!r}")
    return timedelta(seconds=seconds)


def external_world_size() -> int:
    """The ``WORLD_SIZE`` an external torchrun gave this process (1 when there is none)."""
    text = os.environ.get("WORLD_SIZE", "1")
    return int(text) if text.isdigit() else 1


def init_from_environment(use_cuda: bool, devices: Sequence[str] = ()) -> tuple[Any, Any]:
    """Join the process group torchrun describes; ``(DataParallel layout, this rank's device)``.

    CUDA: NCCL, device ``devices[LOCAL_RANK]`` (or ``cuda:LOCAL_RANK``). CPU: gloo.
    """
    import torch
    import torch.distributed as dist

    from lsr1bench.parallel import DataParallel

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        name = devices[local_rank] if local_rank < len(devices) else f"cuda:{local_rank}"
        device = torch.device(name)
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", timeout=collective_timeout(), device_id=device)
    else:
        device = torch.device("cpu")
        dist.init_process_group("gloo", timeout=collective_timeout())
    return DataParallel(), device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def _inject_fault(rank: int) -> None:
    text = os.environ.get(FAULT_ENV, "")
    if not text:
        return
    target, _, kind = text.partition(":")
    if target.isdigit() and int(target) == rank:
        if kind == "hang":
            time.sleep(3600)
        raise RuntimeError(f"fault injected by {FAULT_ENV}={text}")


def _error_file(errors: Path, rank: int) -> Path:
    return errors / f"rank{rank}.json"


def _write_error(errors: Path, rank: int, message: str, trace: str | None) -> None:
    payload = {"rank": rank, "message": message, "traceback": trace, "time": time.time()}
    records.atomic_write_text(_error_file(errors, rank), json.dumps(payload) + "\n")


# ---------------------------------------------------------------------------- a worker


def worker(argv: Sequence[str] | None = None) -> int:
    """One rank of a self-launched group (``python -m lsr1bench.launch``; torchrun starts it).

    Trains the runs of ``--specs`` (a JSON list) in turn on one process group, the data
    loaded once. Rank 0 appends each run's events to ``--events``. A run that fails ends
    the group (its process group may be unusable; the parent starts a new one for the
    runs left); so does a stop request, after the run in progress has checkpointed.
    """
    parser = argparse.ArgumentParser(prog="lsr1bench.launch")
    parser.add_argument("--specs", required=True, type=Path)
    parser.add_argument("--output", required=True)
    parser.add_argument("--errors", required=True, type=Path)
    parser.add_argument("--events", required=True, type=Path)
    parser.add_argument("--devices", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from lsr1bench import runner

    torch.set_num_threads(max(1, args.threads))
    rank = int(os.environ.get("RANK", "0"))
    specs = [RunSpec.from_dict(item) for item in json.loads(args.specs.read_text(encoding="utf-8"))]
    use_cuda = args.devices != "cpu"
    try:
        # SIGTERM (torchrun passing on the parent's stop), SIGUSR1 (Slurm), SIGINT: every
        # rank checkpoints after the same step (the runner agrees on it over the group)
        with interrupt.installed():
            parallel, device = init_from_environment(use_cuda, args.devices.split(",") if use_cuda else ())
            _inject_fault(parallel.rank)
            with args.events.open("a", encoding="utf-8") as events:

                def sink(event: dict[str, Any]) -> None:
                    events.write(json.dumps(event) + "\n")
                    events.flush()

                for spec in specs:
                    if parallel.any_rank(interrupt.STOP.requested):
                        return interrupt.EXIT_INTERRUPTED
                    record = runner.train(spec, args.output, device, sink, parallel=parallel)
                    if record.status == records.FAILED:
                        _write_error(args.errors, rank, record.error or "failed", None)
                        return 1
    except KeyboardInterrupt:
        return interrupt.EXIT_INTERRUPTED
    except BaseException as exc:  # noqa: BLE001 - report, then end this rank
        _write_error(args.errors, rank, f"{type(exc).__name__}: {exc}".strip(), traceback.format_exc())
        return 1
    finally:
        shutdown()
    return 0


# ---------------------------------------------------------------------------- under an external torchrun


def plan_as_rank(parallel: Any, runs: Sequence[RunSpec], output: str | Path, force: bool) -> list[Any]:
    """Rank 0's resume plan (:func:`scheduler.plan`), the same on every rank."""
    from lsr1bench import scheduler

    return parallel.broadcast(scheduler.plan(runs, output, force=force) if parallel.is_writer else None)


def train_as_rank(
    parallel: Any, device: Any, todo: Sequence[Any], output: str | Path, on_event: EventSink
) -> Any:
    """This process as one rank of an external torchrun: train the planned runs in turn.

    Local rank 0 of each node prepares the data (one download per node), rank 0 writes
    the records and tells ``on_event``. A failed run stops the loop (its process group may
    be unusable); a stop request (any rank's signal) ends it after the current run's
    checkpoint, raising ``KeyboardInterrupt``. :class:`scheduler.DataError` if data is missing.
    """
    from lsr1bench import runner, scheduler

    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        scheduler.prepare_data([p.spec for p in todo])
    if parallel.is_writer and todo:
        Path(output).mkdir(parents=True, exist_ok=True)
    parallel.barrier()
    outcome = scheduler.SuiteOutcome()

    def sink(event: dict[str, Any]) -> None:
        if event["type"] == "end":
            outcome.results[event["run_id"]] = event
        on_event(event)

    with interrupt.installed():
        for planned in todo:
            if parallel.any_rank(interrupt.STOP.requested):
                raise KeyboardInterrupt
            record = runner.train(planned.spec, output, device, sink, parallel=parallel)
            outcome.statuses[planned.spec.run_id] = record.status
            if record.status == records.FAILED:
                break
    return outcome


# ---------------------------------------------------------------------------- the parent


def _rank_errors(errors: Path, ranks: int) -> tuple[list[dict[str, Any]], list[int]]:
    """The ranks' error reports, earliest first (the first is usually the cause), and the silent ranks."""
    reports = []
    for rank in range(ranks):
        with contextlib.suppress(OSError, ValueError):
            reports.append(json.loads(_error_file(errors, rank).read_text(encoding="utf-8")))
    reports.sort(key=lambda r: r["time"])
    silent = sorted(set(range(ranks)) - {r["rank"] for r in reports})
    return reports, silent


def failure_message(reports: Sequence[dict[str, Any]], silent: Sequence[int], exit_code: int, log_tail: str) -> str:
    """One line: what each rank reported, first report first, then the ranks that said nothing."""
    by_message: dict[str, list[int]] = {}
    for report in reports:  # earliest first; ranks that failed alike share one entry
        by_message.setdefault(report["message"], []).append(report["rank"])
    parts = [
        f"{'rank' if len(ranks) == 1 else 'ranks'} {', '.join(map(str, sorted(ranks)))}: {message}"
        for message, ranks in by_message.items()
    ]
    if silent and reports:
        noun = "rank" if len(silent) == 1 else "ranks"
        parts.append(f"{noun} {', '.join(map(str, silent))} reported nothing (hung or stopped by torchrun)")
    if not parts:
        parts.append(f"torch.distributed.run exited with code {exit_code}: {log_tail or 'no output'}")
    return "; ".join(parts)


def run_with_torchrun(
    spec: RunSpec, output: str | Path, devices: Sequence[str], on_event: EventSink | None = None
) -> str:
    """Train ``spec`` on ``spec.ranks`` processes started by ``torch.distributed.run``; its status."""
    return run_group_with_torchrun([spec], output, devices, on_event)[spec.run_id]


def run_group_with_torchrun(
    specs: Sequence[RunSpec], output: str | Path, devices: Sequence[str], on_event: EventSink | None = None
) -> dict[str, str]:
    """Train ``specs`` (all with the same ``ranks``) on one set of rank processes; their statuses.

    One ``torch.distributed.run`` starts the ranks, which train the runs in turn (the
    start-up, imports and data loading paid once, not per run). ``devices``: ``["cpu"]``
    (gloo, the cores split among the ranks) or at least ``ranks`` CUDA devices (NCCL, one
    per rank). Every run gets a finished record: a rank that fails or hangs ends the
    group and makes the run in progress ``failed`` naming the ranks; the runs after it
    start on a new group. A stop request (the process's signal handler) is passed on to
    the ranks, which checkpoint the run in progress; a second signal stops them at once.
    Either way ``KeyboardInterrupt`` is raised once the ranks are gone.
    """
    sink = on_event or (lambda event: None)
    if not specs:
        return {}
    ranks = specs[0].ranks
    if any(spec.ranks != ranks for spec in specs):
        raise ValueError("run_group_with_torchrun: every run of a group must have the same ranks")
    use_cuda = devices[0] != "cpu"
    if use_cuda and len(devices) < ranks:
        raise ValueError(f"{specs[0].run_id} needs {ranks} GPUs, got {', '.join(devices)}")
    statuses: dict[str, str] = {}
    left = list(specs)
    while left:
        interrupted = _launch(left, output, devices, sink, statuses)
        left = [spec for spec in left if spec.run_id not in statuses]
        if interrupted:
            raise KeyboardInterrupt
    return statuses


def _launch(
    specs: Sequence[RunSpec], output: str | Path, devices: Sequence[str], sink: EventSink, statuses: dict[str, str]
) -> bool:
    """One torchrun over ``specs``; fills ``statuses`` for every run it finished, and always
    for at least one (so a group that keeps failing still ends). Whether it was interrupted."""
    ranks = specs[0].ranks
    use_cuda = devices[0] != "cpu"
    threads = 1 if use_cuda else max(1, usable_cpus() // ranks)
    where = _where(devices, ranks)
    by_id = {spec.run_id: spec for spec in specs}
    started: dict[str, float] = {}  # run id -> when this process said it started
    current: list[str] = []  # the run the ranks are on (started, not ended)

    def start(run_id: str) -> None:
        if run_id not in started:
            started[run_id] = time.perf_counter()
            sink({"type": "start", "run_id": run_id, "device": where, "epochs": by_id[run_id].epochs})
        current[:] = [run_id]

    def relay(event: dict[str, Any]) -> None:
        kind, run_id = event.get("type"), event.get("run_id")
        if run_id not in by_id:
            return
        if kind == "start":
            start(run_id)
        elif kind == "end" and event.get("status") == records.FAILED:
            pass  # the ranks end now; what each reported is settled below
        elif kind == "end":
            current.clear()
            statuses[run_id] = event["status"]
            sink({**event, "seconds": time.perf_counter() - started.get(run_id, time.perf_counter())})
        else:
            sink(event)

    with tempfile.TemporaryDirectory(prefix="lsr1bench-ranks-") as tmp:
        work = Path(tmp)
        (work / "specs.json").write_text(json.dumps([spec.to_dict() for spec in specs]), encoding="utf-8")
        events_path = work / "events.jsonl"
        events_path.touch()
        command = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes=1",
            f"--nproc-per-node={ranks}", "--max-restarts=0", "--monitor-interval=0.5",
            "-m", "lsr1bench.launch",
            "--specs", str(work / "specs.json"), "--output", str(output), "--errors", str(work),
            "--events", str(events_path), "--threads", str(threads),
            "--devices", ",".join(devices[:ranks]) if use_cuda else "cpu",
        ]  # fmt: skip
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        start(specs[0].run_id)  # the first run's wall-clock includes starting the ranks
        with (work / "torchrun.log").open("w") as log:
            # torchrun has no SIGUSR1 handler (it would die of it and orphan the ranks):
            # it ignores it; the ranks, which install their own, get it from Slurm directly
            process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, preexec_fn=_ignore_sigusr1
            )
            interrupted, offset, passed_on = False, 0, False
            try:
                while process.poll() is None:
                    time.sleep(0.1)
                    offset = _forward_events(events_path, offset, relay)
                    if interrupt.STOP.requested and not passed_on:
                        # torchrun passes SIGTERM to the ranks: they checkpoint, then end
                        with contextlib.suppress(OSError):
                            process.send_signal(signal.SIGTERM)
                        passed_on = interrupted = True
            except KeyboardInterrupt:  # a second signal: now
                interrupted = True
                _stop(process)
            offset = _forward_events(events_path, offset, relay)
        log_tail = " | ".join((work / "torchrun.log").read_text(errors="replace").strip().splitlines()[-3:])
        reports, silent = _rank_errors(work, ranks)
        unsettled = current[0] if current else None
        if unsettled is None and process.returncode != 0 and not interrupted:
            # the ranks failed between runs or before the first: the next run takes the blame
            unsettled = next((spec.run_id for spec in specs if spec.run_id not in statuses), None)
            if unsettled is not None:
                start(unsettled)
        if unsettled is not None:
            spec = by_id[unsettled]
            directory = records.run_dir(output, spec.suite, spec.run_id)
            status, error = _finish_record(spec, directory, process.returncode, interrupted, reports, silent, log_tail)
            statuses[unsettled] = status
            rows = records.read_epochs(directory) if (directory / records.EPOCHS_FILE).exists() else []
            last = rows[-1] if rows else {}
            sink(
                {
                    "type": "end",
                    "run_id": unsettled,
                    "status": status,
                    "error": error,
                    "test_error": last.get("test_error"),
                    "epochs_completed": last.get("epoch", 0),
                    "train_seconds": last.get("train_seconds"),
                    "seconds": time.perf_counter() - started[unsettled],
                }
            )
    return interrupted


def _ignore_sigusr1() -> None:
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def _where(devices: Sequence[str], ranks: int) -> str:
    if devices[0] == "cpu":
        return f"cpu x{ranks} (gloo)"
    return f"{','.join(devices[:ranks])} (nccl)"


def _forward_events(path: Path, offset: int, sink: EventSink) -> int:
    """Pass on the complete event lines rank 0 appended since ``offset``; the new offset."""
    with path.open("rb") as handle:
        handle.seek(offset)
        data = handle.read()
    end = data.rfind(b"\n") + 1
    for line in data[:end].splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            sink(event)
    return offset + end


def _stop(process: subprocess.Popen) -> None:
    """Ask torchrun to stop its ranks (they mark the run interrupted), then insist."""
    for sig, wait in ((signal.SIGINT, 30), (signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        if process.poll() is not None:
            return
        with contextlib.suppress(OSError):
            process.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            process.wait(timeout=wait)


def _finish_record(
    spec: RunSpec,
    directory: Path,
    exit_code: int,
    interrupted: bool,
    reports: Sequence[dict[str, Any]],
    silent: Sequence[int],
    log_tail: str,
) -> tuple[str, str | None]:
    """Settle the record rank 0 left: keep a clean finish, else say what the ranks reported."""
    try:
        record = records.read_run(directory)
    except records.RecordError:
        record = records.RunRecord(suite=spec.suite, run_id=spec.run_id, spec=spec.to_dict())
        record.started_at = records.now_iso()
    if exit_code == 0 and record.status in records.FINISHED:
        return record.status, record.error
    if interrupted or (record.status == records.INTERRUPTED and exit_code == 130):
        record.status = records.INTERRUPTED
        record.error = record.error or "interrupted (Ctrl-C, SIGINT or SIGTERM)"
    else:
        record.status = records.FAILED
        record.error = failure_message(reports, silent, exit_code, log_tail)
        traces = [f"--- rank {r['rank']} ---\n{r['traceback']}" for r in reports if r.get("traceback")]
        if traces:
            records.atomic_write_text(directory / "traceback.txt", "\n".join(traces))
    record.finished_at = records.now_iso()
    records.write_run(directory, record)
    return record.status, record.error


if __name__ == "__main__":
    sys.exit(worker())
