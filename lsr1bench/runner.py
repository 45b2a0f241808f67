"""Train one :class:`~lsr1bench.grid.RunSpec` and write its records.

What every run shares, whatever the optimizer:

* the objective: cross-entropy + ``l2_penalty(model, weight_decay)`` (the paper's L2),
  the cross-entropy averaged over the minibatch, or summed with ``loss_reduction: sum``
  (:func:`minibatch_objective`); recorded losses are per-example means either way;
* for a given seed, the same initial weights (``torch.manual_seed(seed)`` right before
  the model is built) and the same minibatch order (a separate ``torch.Generator``
  seeded with the seed draws each epoch's permutation, so nothing an optimizer does with
  the global RNG can change it);
* closure-based steps on one minibatch (second-order methods call the closure several
  times on the same minibatch);
* an evaluation before training (epoch 0) and after every epoch, in ``model.eval()``
  mode without gradients, excluded from ``train_seconds``;
* batch-norm running statistics that only ever see the iterates the optimizer accepts.
  A first-order method evaluates its closure once, at x_k. A second-order one also
  evaluates it at trial points (L-SR1's x_k + s, even when rejected; L-BFGS's line
  search, which can try points far away); in train mode each of those forward passes
  would move the running statistics used at test time. So for second-order methods the
  closure leaves them untouched, and one forward pass without gradients at the point the
  step ends on updates them once per step (:class:`RunningStatsGuard`).

Each epoch draws a fresh permutation and takes ``n // batch_size`` full minibatches
(the last partial one is dropped, so every step sees a full batch; a batch size above
``n`` gives one step on all ``n`` examples). The data is moved to the device once and
minibatches are indexed there.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import random
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lsr1bench import records
from lsr1bench.execute import EventSink
from lsr1bench.execute import checkpoint as checkpoint_file
from lsr1bench.execute.data import (  # noqa: F401 - re-exported: the runner's public face
    VALIDATION_SEED,
    DeviceData,
    clear_data_cache,
    data_key,
    load_data,
    split_validation,
)
from lsr1bench.execute.interrupt import SIGNALS, STOP, STOP_AFTER_STEPS_ENV, Stopped, StopRequest, stop_after_steps
from lsr1bench.execute.objective import (  # noqa: F401 - re-exported: the runner's public face
    EVAL_BATCH,
    RunningStatsGuard,
    evaluate,
    minibatch_objective,
)
from lsr1bench.execute.objective import MeanLoss as _MeanLoss
from lsr1bench.execute.objective import batches as _batches
from lsr1bench.execute.objective import current_lr as _current_lr
from lsr1bench.execute.objective import initial_objective as _initial_objective
from lsr1bench.execute.objective import sync as _sync
from lsr1bench.execute.provenance import (  # noqa: F401
    describe_device,
    environment,
    git_commit,
    versions,
)
from lsr1bench.execute.provenance import parallel_record as _parallel_record
from lsr1bench.execute.provenance import process_group_of as _group_of
from lsr1bench.execute.provenance import update_parallel_record as _update_parallel_record
from lsr1bench.grid import RunSpec
from lsr1bench.parallel import SingleProcess
from lsr1bench.records import RunRecord
from lsr1bench.registry.models import build_model, build_plugin_model
from lsr1bench.registry.optimizers import build_optimizer

TRACEBACK_FILE = "traceback.txt"


class Diverged(Exception):
    """The training loss became NaN or infinite."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # every device's generator too


@contextlib.contextmanager
def _no_second_interrupt() -> Iterator[None]:
    """Ignore further signals while the final record is written (one must not lose it)."""
    previous: dict[int, Any] = {}
    try:
        for sig in SIGNALS:
            previous[sig] = signal.signal(sig, signal.SIG_IGN)
    except ValueError:  # not the main thread: signals go elsewhere anyway
        pass
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass
class _Loop:
    """The training loop's running totals, carried through a checkpoint."""

    train_seconds: float = 0.0
    samples: int = 0
    seconds_before: float = 0.0  # wall-clock of the earlier attempts (total_seconds goes on)


@dataclass
class _Training:
    """What one run trains with: built by :meth:`_Run.prepare`, restored by :meth:`_Run.resume`."""

    data: DeviceData
    validation: tuple[Tensor, Tensor] | None
    model: torch.nn.Module
    net: torch.nn.Module  # what the closure calls: DDP around the model, or the model
    optimizer: Any
    schedule: Any
    order: torch.Generator  # draws each epoch's minibatch permutation
    guard: RunningStatsGuard | None
    reduce_loss: Callable[[Tensor], Tensor]
    stop_after: int | None  # STOP_AFTER_STEPS_ENV, for tests of resuming
    loop: _Loop = field(default_factory=_Loop)
    started: float = 0.0  # perf_counter at the start of the epoch-0 evaluation (less earlier attempts)
    steps_here: int = 0  # optimizer steps taken by this attempt


class _Run:
    """The state of one run while it trains; writes records and checkpoints as it goes."""

    def __init__(
        self,
        spec: RunSpec,
        directory: Path,
        device: torch.device,
        on_event: EventSink | None,
        parallel: SingleProcess,
    ):
        self.spec = spec
        self.directory = directory
        self.device = device
        self.parallel = parallel
        self.sink = on_event if parallel.is_writer else None
        self.rows: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.record = RunRecord(
            suite=spec.suite,
            run_id=spec.run_id,
            spec=spec.to_dict(),
            status=records.RUNNING,
            device=describe_device(device),
            versions=versions(),
            git_commit=git_commit(),
            started_at=records.now_iso(),
            targets_reached={
                metric: {records.target_key(t): None for t in values} for metric, values in spec.targets.items()
            },
            extra={"environment": environment(device)},
        )

    def emit(self, event: dict[str, Any]) -> None:
        """Tell the display; a display that breaks must not fail the run (Ctrl-C still stops it)."""
        if self.sink is None:
            return
        try:
            self.sink(event)
        except Exception:  # noqa: BLE001
            self.sink = None

    def save(self) -> None:
        if not self.parallel.is_writer:
            return  # rank 0 writes the records of a data-parallel run
        records.write_epochs(self.directory, self.rows)
        records.write_run(self.directory, self.record)

    def add_row(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        epoch = row["epoch"]
        self.record.epochs_completed = epoch
        for metric, values in self.spec.targets.items():
            reached = self.record.targets_reached[metric]
            for target in values:
                key = records.target_key(target)
                if reached.get(key) is None and records.epochs_to_target([row], target, metric) is not None:
                    reached[key] = epoch
        self.save()
        self.emit(
            {
                "type": "epoch",
                "run_id": self.spec.run_id,
                "epoch": epoch,
                "epochs": self.spec.epochs,
                "train_loss": row["train_loss"],
                "test_loss": row["test_loss"],
                "test_error": row["test_error"],
            }
        )

    def targets_all_reached(self) -> bool:
        epochs = [epoch for reached in self.record.targets_reached.values() for epoch in reached.values()]
        return bool(epochs) and all(epoch is not None for epoch in epochs)

    def train(self, stop: StopRequest) -> None:
        """Train from the start, or from the checkpoint a stopped attempt left."""
        spec = self.spec
        t = self.prepare()
        resumed = self.resume(t)
        t.started = time.perf_counter() - t.loop.seconds_before
        if resumed is None:
            initial = _initial_objective(t.model, t.data, spec.batch_size, spec.weight_decay, self.parallel)
            self.add_row(self.row(t, 0, initial, _current_lr(t.optimizer.optimizer)))
            first_epoch, position, partial = 1, 0, None
        else:
            first_epoch, position, partial = resumed
        for epoch in range(first_epoch, spec.epochs + 1):
            lr = _current_lr(t.optimizer.optimizer)
            recorded = _MeanLoss(spec.loss_reduction, spec.weight_decay)
            if partial is not None:  # the sums of the epoch a checkpoint stopped in
                recorded.__dict__.update(partial)
                partial = None
            bad_loss = self.train_epoch(t, epoch, position, recorded, stop)
            position = 0
            if t.schedule is not None:
                with warnings.catch_warnings():
                    # resumed after an epoch's last step, this process has not stepped yet
                    warnings.filterwarnings("ignore", "Detected call of `lr_scheduler.step", UserWarning)
                    t.schedule.step()
            train_loss = bad_loss if bad_loss is not None else recorded.mean()
            current = self.row(t, epoch, train_loss, lr)
            self.add_row(current)
            if bad_loss is not None or not math.isfinite(current["test_loss"]):
                raise Diverged(
                    f"loss became {train_loss if bad_loss is not None else current['test_loss']} in epoch {epoch}"
                )
            if spec.stop_at_targets and self.targets_all_reached():
                self.record.extra["stopped_at_targets"] = True
                break
            every = spec.checkpoint_every
            saved = bool(every) and epoch % every == 0 and (epoch < spec.epochs or spec.keep_checkpoints)
            if saved:
                self.save_checkpoint(t, epoch, 0, None, None)
            if self.parallel.any_rank(stop.requested):
                if not saved:
                    self.save_checkpoint(t, epoch, 0, None, None)
                raise Stopped(stop.message())

    def prepare(self) -> _Training:
        """The data, model, optimizer and schedule of the run, as the seed makes them."""
        spec, device, parallel = self.spec, self.device, self.parallel
        data = load_data(spec, device)
        validation: tuple[Tensor, Tensor] | None = None
        if spec.validation_split:
            data, val_x, val_y = split_validation(data, spec.validation_split)
            validation = (val_x, val_y)
        n = len(data.train_y)
        self.record.extra["data"] = {
            "description": data.description,
            "train_examples": n,
            "test_examples": len(data.test_y),
            "steps_per_epoch": max(1, n // spec.batch_size),
            "validation_examples": spec.validation_split or 0,
        }
        seed_everything(spec.seed)
        model = _build_model(spec, data, device)
        model.train()
        net = parallel.wrap(model, device)  # what training calls: DDP around the model, or the model
        optimizer = build_optimizer(
            spec.optimizer, model.parameters(), spec.optimizer_params, process_group=_group_of(parallel)
        )
        self.record.extra["parallel"] = _parallel_record(parallel, optimizer, model, device)
        schedule = None
        if spec.lr_schedule:
            schedule = torch.optim.lr_scheduler.MultiStepLR(
                optimizer.optimizer,
                milestones=list(spec.lr_schedule["milestones"]),
                gamma=float(spec.lr_schedule.get("gamma", 0.1)),
            )
        return _Training(
            data=data,
            validation=validation,
            model=model,
            net=net,
            optimizer=optimizer,
            schedule=schedule,
            order=torch.Generator().manual_seed(spec.seed),
            guard=RunningStatsGuard(model) if optimizer.second_order else None,
            # the loss each step reports is the global one: LSR1 averages it over the ranks
            # itself; for every other method the closure does, so all ranks decide alike
            # (torch's L-BFGS line search reads the closure's loss)
            reduce_loss=(lambda loss: loss) if optimizer.reduces_loss else parallel.average,
            stop_after=stop_after_steps(),
        )

    def train_epoch(
        self, t: _Training, epoch: int, position: int, recorded: _MeanLoss, stop: StopRequest
    ) -> float | None:
        """One epoch's steps from step ``position`` on; the non-finite loss that ended it, if any.

        A stop request ends it after the step in progress: a checkpoint, then :class:`Stopped`."""
        spec, device, parallel, data, model = self.spec, self.device, self.parallel, t.data, t.model
        _sync(device)
        epoch_start = time.perf_counter()
        epoch_order = t.order.get_state()  # what draws this epoch's permutation
        for step, index in enumerate(_batches(len(data.train_y), spec.batch_size, t.order, device)):
            if step < position:
                continue  # done before the checkpoint
            rows = parallel.shard(index)  # this rank's rows of the global minibatch
            xb, yb = data.train_x[rows], data.train_y[rows]

            def closure(backward: bool = True, xb: Tensor = xb, yb: Tensor = yb) -> Tensor:
                if not backward:  # the loss only (registry/table.py PROTOCOLS): .grad untouched
                    with torch.no_grad():
                        return t.reduce_loss(minibatch_objective(t.net(xb), yb, model, spec, parallel.world_size))
                model.zero_grad()  # set_to_none: backward assigns the gradients, no extra pass
                loss = minibatch_objective(t.net(xb), yb, model, spec, parallel.world_size)
                # DDP averages the gradients over the ranks here; create_graph keeps the graph
                # for the Hessian-vector products of the create-graph protocol (AdaHessian)
                loss.backward(create_graph=t.optimizer.create_graph)
                return t.reduce_loss(loss)

            start_point = recorded.start(model)
            if t.guard is None:
                loss = t.optimizer.step(closure)
            else:
                loss = t.optimizer.step(t.guard.protect(closure))
                t.guard.update(xb)
            t.loop.samples += len(index)
            recorded.add(loss, len(index), start_point)
            if not math.isfinite(loss):
                _sync(device)
                t.loop.train_seconds += time.perf_counter() - epoch_start
                return loss
            t.steps_here += 1
            if t.stop_after is not None and t.steps_here == t.stop_after:
                stop.request(STOP_AFTER_STEPS_ENV)
            if parallel.any_rank(stop.requested):  # every rank stops after the same step
                _sync(device)
                t.loop.train_seconds += time.perf_counter() - epoch_start
                self.save_checkpoint(t, epoch - 1, step + 1, epoch_order, recorded)
                raise Stopped(stop.message())
        _sync(device)
        t.loop.train_seconds += time.perf_counter() - epoch_start
        return None

    def row(self, t: _Training, epoch: int, train_loss: float, lr: float | None) -> dict[str, Any]:
        """The ``epochs.csv`` row after ``epoch``: evaluations and the optimizer's statistics."""
        parallel, optimizer = self.parallel, t.optimizer
        test_loss, test_error = evaluate(t.model, t.data.test_x, t.data.test_y, parallel)
        stats = optimizer.statistics()
        _update_parallel_record(self.record.extra["parallel"], parallel, optimizer, stats)
        out: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": train_loss,
            "test_loss": test_loss,
            "test_error": test_error,
            "train_seconds": t.loop.train_seconds,
            "total_seconds": time.perf_counter() - t.started,
            "grad_evals": optimizer.closure_evaluations,
            "loss_evals": optimizer.loss_evaluations,
            "hvp_evals": optimizer.hvp_evaluations,
            "samples": t.loop.samples,
            "steps": stats.get("steps", optimizer.steps),
            "lr": lr,  # the rate this epoch trained with
        }
        if t.validation is not None:
            out["val_loss"], out["val_error"] = evaluate(t.model, *t.validation, parallel)
        stats.update(optimizer.epoch_curvature())
        for column in records.OPTIMIZER_COLUMNS:
            value = stats.get(column)
            out[column] = float(value) if column == "radius" and value is not None else value
        return out

    def resume(self, t: _Training) -> tuple[int, int, dict[str, Any] | None] | None:
        """Load the run's checkpoint, if any: ``(first epoch, steps done in it, partial sums)``."""
        content, problem = None, None
        if self.parallel.is_writer:
            try:
                content = checkpoint_file.load(self.directory, self.spec.comparable())
            except checkpoint_file.CheckpointError as exc:
                problem = str(exc)
        found = self.parallel.broadcast(content is not None)
        if problem is not None:
            self.record.extra.setdefault("checkpoint_problems", []).append(problem)
        if not found:
            return None
        if content is None:  # the other ranks read the file rank 0 checked
            content = torch.load(checkpoint_file.path(self.directory), map_location="cpu", weights_only=True)
        model, optimizer, schedule = t.model, t.optimizer, t.schedule
        model.load_state_dict(content["model"])
        mine = content["ranks"][self.parallel.rank]
        with torch.no_grad():
            for buffer, value in zip(model.buffers(), mine["buffers"]):
                buffer.copy_(value)
        optimizer.load_state_dict(_to_device(content["optimizer"], self.device))
        if schedule is not None:
            schedule.load_state_dict(content["schedule"])
        checkpoint_file.set_rng_state(mine["rng"], self.device)
        position = int(content["position"])
        t.order.set_state(content["order"] if position == 0 else content["epoch_order"])
        t.loop.__dict__.update(content["loop"])
        self.rows = list(content["rows"])
        record = RunRecord.from_dict(content["record"])
        resumes = [*record.extra.get("resumes", [])]
        resumes.append(
            {
                "epoch": int(content["epoch"]),
                "step": position,
                "at": records.now_iso(),
                "hostname": platform.node(),
                "device": describe_device(self.device),
            }
        )
        record.extra.update(
            {key: value for key, value in self.record.extra.items() if key in ("data", "parallel")}
        )
        record.extra["resumes"] = resumes
        record.status, record.error, record.finished_at = records.RUNNING, None, None
        self.record = record
        self.save()
        self.emit({"type": "resume", "run_id": self.spec.run_id, "epoch": int(content["epoch"]), "step": position})
        partial = content["recorded"] if position else None
        return int(content["epoch"]) + 1, position, partial

    def save_checkpoint(
        self, t: _Training, epoch: int, position: int, epoch_order: Tensor | None, recorded: _MeanLoss | None
    ) -> None:
        """Write the checkpoint (a collective for a data-parallel run: every rank calls it)."""
        parallel, model, optimizer, loop = self.parallel, t.model, t.optimizer, t.loop
        loop.seconds_before = time.perf_counter() - t.started
        optimizer_state = optimizer.state_dict(full=parallel.world_size > 1)  # every rank: may gather
        local = {
            "buffers": [b.detach().cpu().clone() for b in model.buffers()],
            "rng": checkpoint_file.rng_state(self.device),
        }
        ranks = parallel.gather(local)
        if not parallel.is_writer:
            return
        content = {
            "spec": self.spec.comparable(),
            "epoch": epoch,  # epochs finished
            "position": position,  # steps of epoch + 1 done (0: at the epoch boundary)
            "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            "ranks": ranks,
            "optimizer": _to_device(optimizer_state, torch.device("cpu")),
            "schedule": t.schedule.state_dict() if t.schedule is not None else None,
            "order": t.order.get_state(),
            "epoch_order": epoch_order,
            "recorded": dict(recorded.__dict__) if recorded is not None else None,
            "loop": dict(loop.__dict__),
            # plain JSON values (a float survives json exactly): loads with weights_only
            "rows": json.loads(json.dumps(self.rows)),
            "record": json.loads(json.dumps(self.record.to_dict())),
        }
        checkpoint_file.save(self.directory, content)
        self.record.extra["checkpoint"] = {
            "file": checkpoint_file.CHECKPOINT_FILE,
            "epoch": epoch,
            "step": position,
            "at": records.now_iso(),
        }
        self.save()

    def finish(self, status: str, error: str | None = None) -> None:
        self.record.status = status
        self.record.error = error
        self.record.finished_at = records.now_iso()
        if status in records.FINISHED and not self.spec.keep_checkpoints and self.parallel.is_writer:
            checkpoint_file.remove(self.directory)  # a finished run is never resumed
            self.record.extra.pop("checkpoint", None)
        self.save()
        last = self.rows[-1] if self.rows else {}
        self.emit(
            {
                "type": "end",
                "run_id": self.spec.run_id,
                "status": status,
                "error": error,
                "test_error": last.get("test_error"),
                "epochs_completed": self.record.epochs_completed,
                "train_seconds": last.get("train_seconds"),
                "seconds": time.perf_counter() - self.started,
            }
        )


def train(
    spec: RunSpec,
    output: str | Path,
    device: str | torch.device = "cpu",
    on_event: EventSink | None = None,
    parallel: SingleProcess | None = None,
    stop: StopRequest | None = None,
) -> RunRecord:
    """Train ``spec`` on ``device`` into ``output/<suite>/<run_id>/``; return the final record.

    A checkpoint the run left there (``checkpoint.pt``, for the same spec) is resumed
    from: the records continue as if the run had never stopped, and ``run.json``'s
    ``resumes`` says from which epoch and step. NaN/inf loss -> status ``diverged``; any
    exception -> ``failed`` with its message (the traceback goes to ``traceback.txt``);
    both return normally so a suite goes on. A stop requested through ``stop`` (the
    process's signal handler, :mod:`lsr1bench.execute.interrupt`) -> a checkpoint at the
    next step boundary, status ``interrupted``, then :class:`Stopped` (a
    ``KeyboardInterrupt``) propagates; so does a second signal, without the checkpoint.

    ``parallel``: this process's place in a data-parallel run of ``spec.ranks`` ranks (see
    :mod:`lsr1bench.parallel`); every rank calls ``train``, only rank 0 writes and reports.
    """
    device = torch.device(device)
    parallel = parallel or SingleProcess()
    stop = stop or STOP
    if parallel.world_size != spec.ranks:
        raise ValueError(
            f"run {spec.run_id} has ranks {spec.ranks} but is trained by {parallel.world_size} process(es)"
        )
    directory = records.run_dir(output, spec.suite, spec.run_id)
    if parallel.is_writer:
        directory.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(directory / TRACEBACK_FILE)
    run = _Run(spec, directory, device, on_event, parallel)
    if not checkpoint_file.path(directory).exists():
        run.save()  # a resumed run keeps its record until the checkpoint is read
    run.emit({"type": "start", "run_id": spec.run_id, "device": str(device), "epochs": spec.epochs})
    try:
        run.train(stop)
    except KeyboardInterrupt as exc:
        with _no_second_interrupt():
            run.finish(records.INTERRUPTED, str(exc) or "interrupted at once (a second signal)")
        raise
    except Diverged as exc:
        run.finish(records.DIVERGED, str(exc))
    except Exception as exc:  # noqa: BLE001 - one broken run must not stop the suite
        if parallel.is_writer:
            with contextlib.suppress(OSError):
                records.atomic_write_text(directory / TRACEBACK_FILE, traceback.format_exc())
        message = f"{type(exc).__name__}: {exc}".strip()
        run.finish(records.FAILED, message)
    else:
        run.finish(records.COMPLETED)
    return run.record


def _build_model(spec: RunSpec, data: DeviceData, device: torch.device) -> torch.nn.Module:
    if spec.model_path:
        model = build_plugin_model(
            spec.model_path,
            spec.model_params,
            batch_norm=spec.batch_norm,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
        )
    else:
        model = build_model(
            spec.model,
            batch_norm=spec.batch_norm,
            input_shape=data.input_shape,
            num_classes=data.num_classes,
            init=spec.model_init,
        )
    return model.to(device)


def _to_device(value: Any, device: torch.device) -> Any:
    """``value`` with every tensor in it (through dicts, lists, tuples) on ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {k: _to_device(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_device(v, device) for v in value)
    return value
