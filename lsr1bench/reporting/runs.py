"""Read the run records under a results folder and reduce each run to the numbers a report needs.

Layout (docs/ARCHITECTURE.md, "Records"): ``<suite>/<run_id>/run.json`` + ``epochs.csv``, one
row per epoch, epoch 0 being the evaluation before any training. A results folder is a
suite's folder (run folders inside), a folder of suites, or a single run folder.

A target is a (metric, threshold) pair on a recorded metric: ``test_error`` (%),
``test_loss`` or ``train_loss``. "Epochs to target" is the smallest epoch >= 1 whose value
of the metric is below the threshold; the training seconds and gradient evaluations "to
target" are the cumulative ``train_seconds`` and ``grad_evals`` on that same row.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsr1bench.records import (
    EPOCHS_FILE,
    RUN_FILE,
    RecordError,
    epochs_to_target,
    read_epochs,
    read_run,
)
from lsr1bench.registry.names import DEFAULT_TARGET_METRIC, TARGET_METRICS

# Folders the report stage itself writes next to the results; never run folders.
OWN_FOLDERS = frozenset({"plots"})

UNFINISHED_STATUSES = frozenset({"running", "interrupted"})

# Per-target outcome of one run.
REACHED = "reached"
NEVER_REACHED = "never reached"
DIVERGED = "diverged"
FAILED = "failed"
INCOMPLETE = "incomplete"


class ReportError(Exception):
    """Bad input to the report stage (missing or empty folder, unreadable baseline)."""


@dataclass(frozen=True)
class CellKey:
    """The runs that differ only by seed: one cell of a report table."""

    suite: str
    model: str
    dataset: str
    batch_norm: bool
    label: str
    batch_size: int

    @property
    def group(self) -> tuple[str, str, str, bool]:
        """The column group of the paper's Table 1: (suite, model, dataset, batch norm)."""
        return (self.suite, self.model, self.dataset, self.batch_norm)

    def describe(self, with_suite: bool = True) -> str:
        bn = " + BN" if self.batch_norm else ""
        head = f"{self.suite} · " if with_suite else ""
        return f"{head}{self.model}{bn} · {self.dataset} · {self.label} · b{self.batch_size}"


@dataclass(frozen=True, order=True)
class Target:
    """A threshold on one recorded metric, reached when the metric falls below it."""

    metric: str
    value: float

    def text(self) -> str:
        """``< 1.5%`` for test error (the paper's Table 1), ``train loss < 0.3`` for a loss."""
        if self.metric == "test_error":
            return f"< {self.value:g}%"
        return f"{self.metric.replace('_', ' ')} < {self.value:g}"

    @property
    def column(self) -> str:
        """A CSV-safe name: ``test_error_1.5``."""
        return f"{self.metric}_{self.value:g}"


def spec_targets(spec: dict[str, Any]) -> tuple[Target, ...]:
    """The targets of a recorded spec: ``{metric: [..]}``, or a list (test error; schema 1)."""
    raw = spec.get("targets") or {}
    if not isinstance(raw, dict):
        raw = {DEFAULT_TARGET_METRIC: raw}
    targets = []
    for metric, values in raw.items():
        if metric not in TARGET_METRICS:
            raise ValueError(f"unknown target metric {metric!r}")
        targets.extend(Target(str(metric), float(v)) for v in values)
    return tuple(sorted(set(targets)))


@dataclass(frozen=True)
class TargetHit:
    epoch: int
    train_seconds: float | None
    grad_evals: float | None


@dataclass
class RunSummary:
    """One run reduced to what the tables need; ``problems`` says why it is incomplete."""

    path: Path
    run_id: str
    key: CellKey
    seed: int | None
    spec: dict[str, Any]
    status: str
    error: str | None
    device: str | None
    git_commit: str | None
    versions: dict[str, Any]
    environment: dict[str, Any]
    started_at: str | None
    epochs_planned: int | None
    epochs_present: int
    targets: tuple[Target, ...]
    hits: dict[Target, TargetHit]
    diverged: bool
    incomplete: bool
    problems: list[str] = field(default_factory=list)
    final_test_error: float | None = None
    best_test_error: float | None = None
    final_train_loss: float | None = None
    # the mean of the train loss over the trained epochs (1..last): the area under the
    # train-loss curve per epoch, which a slower start raises even when the end catches up
    mean_train_loss: float | None = None
    final_train_seconds: float | None = None
    final_grad_evals: float | None = None
    # Quasi-Newton statistics at the last epoch; None for optimizers without them.
    steps: float | None = None
    skipped_updates: float | None = None
    rejected_steps: float | None = None
    dropped_pairs: float | None = None
    radius: float | None = None
    # L-SR1's model: % of steps whose B had a negative eigenvalue, the smallest
    # eigenvalue of B over the epoch ends, and the last epoch's skip-test cosines.
    negative_curvature_percent: float | None = None
    min_eigenvalue: float | None = None
    update_cosine_p10: float | None = None
    update_cosine_median: float | None = None
    # (epoch, train_seconds, test_error) for the plots.
    curve: list[tuple[int, float | None, float | None]] = field(default_factory=list)
    # the epochs' rows as read (epochs.csv), for criteria on other columns (validation)
    rows: list[dict[str, float | None]] = field(default_factory=list)

    def outcome(self, target: Target) -> str:
        if target in self.hits:
            return REACHED
        if self.diverged:
            return DIVERGED
        if self.status == "failed":
            return FAILED
        if self.incomplete:
            return INCOMPLETE
        return NEVER_REACHED

    @property
    def skip_percent(self) -> float | None:
        """% of steps whose SR1 update was skipped (skipped_updates / steps)."""
        if self.skipped_updates is None or not self.steps:
            return None
        return 100.0 * self.skipped_updates / self.steps

    @property
    def rejected_percent(self) -> float | None:
        if self.rejected_steps is None or not self.steps:
            return None
        return 100.0 * self.rejected_steps / self.steps


def find_run_dirs(results: Path) -> list[Path]:
    """The run folders under ``results``: itself, its children, or its grandchildren.

    A run folder is one holding run.json or epochs.csv (a run whose run.json is not written
    yet is still listed, as incomplete). Raises ReportError when there is none.
    """
    results = Path(results)
    if not results.exists():
        raise ReportError(f"{results}: no such file or directory")
    if not results.is_dir():
        raise ReportError(f"{results}: not a directory (expected a results folder)")
    if _is_run_dir(results):
        return [results]
    found: list[Path] = []
    for child in _subdirs(results):
        if _is_run_dir(child):
            found.append(child)
        else:
            found.extend(grand for grand in _subdirs(child) if _is_run_dir(grand))
    if not found:
        raise ReportError(
            f"{results}: no run records found; expected <suite>/<run_id>/{RUN_FILE} "
            f"(a suite's output folder or a folder of suites)"
        )
    return found


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and p.name not in OWN_FOLDERS)


def _is_run_dir(folder: Path) -> bool:
    return (folder / RUN_FILE).is_file() or (folder / EPOCHS_FILE).is_file()


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def summarize_run(run_dir: Path) -> RunSummary | str:
    """Reduce one run folder to a RunSummary, or return why it cannot be read at all."""
    try:
        record = read_run(run_dir)
    except RecordError as exc:
        return str(exc)
    spec = record.spec
    try:
        key = CellKey(
            suite=record.suite,
            model=str(spec["model"]),
            dataset=str(spec["dataset"]),
            batch_norm=bool(spec.get("batch_norm", False)),
            # a data-parallel run is its own cell: P ranks are not one more seed of the 1-rank run
            label=str(spec.get("label") or spec["optimizer"])
            + (f"-p{spec['ranks']}" if spec.get("ranks", 1) > 1 else ""),
            batch_size=int(spec["batch_size"]),
        )
        targets = spec_targets(spec)
    except (KeyError, TypeError, ValueError) as exc:
        return f"{run_dir / RUN_FILE}: spec lacks a usable field ({exc!r})"

    problems: list[str] = []
    try:
        rows = read_epochs(run_dir)
    except RecordError as exc:
        rows = []
        problems.append(str(exc))
    rows.sort(key=lambda r: r["epoch"] or 0)
    epochs_planned = spec.get("epochs")
    run = RunSummary(
        path=run_dir,
        run_id=record.run_id,
        key=key,
        seed=spec.get("seed"),
        spec=spec,
        status=record.status,
        error=record.error,
        device=record.device,
        git_commit=record.git_commit,
        versions=dict(record.versions or {}),
        environment=dict(record.extra.get("environment") or {}),
        started_at=record.started_at,
        epochs_planned=int(epochs_planned) if epochs_planned is not None else None,
        epochs_present=int(rows[-1]["epoch"] or 0) if rows else 0,
        targets=targets,
        hits={},
        diverged=record.status == "diverged",
        incomplete=False,
        problems=problems,
    )
    _scan_rows(run, rows)
    _check_completeness(run, rows, record.epochs_completed)
    return run


def _scan_rows(run: RunSummary, rows: list[dict[str, float | None]]) -> None:
    run.rows = rows
    trained = [r for r in rows if (r["epoch"] or 0) >= 1]
    for row in rows:
        run.curve.append((int(row["epoch"] or 0), row.get("train_seconds"), row.get("test_error")))
        for name in ("train_loss", "test_loss", "test_error"):
            value = row.get(name)
            if value is not None and not math.isfinite(value):
                run.diverged = True
    by_epoch = {int(row["epoch"] or 0): row for row in rows}
    for target in run.targets:
        epoch = epochs_to_target(rows, target.value, target.metric)
        if epoch is not None:
            row = by_epoch[epoch]
            run.hits[target] = TargetHit(epoch, row.get("train_seconds"), row.get("grad_evals"))
    errors = [r["test_error"] for r in trained if _finite(r.get("test_error"))]
    run.best_test_error = min(errors) if errors else None
    if not trained:
        return
    last = trained[-1]
    if _finite(last.get("test_error")):
        run.final_test_error = last["test_error"]
    if _finite(last.get("train_loss")):
        run.final_train_loss = last["train_loss"]
    losses = [r.get("train_loss") for r in trained]
    if all(_finite(loss) for loss in losses):
        run.mean_train_loss = math.fsum(losses) / len(losses)  # type: ignore[arg-type]
    run.final_train_seconds = last.get("train_seconds")
    run.final_grad_evals = last.get("grad_evals")
    run.steps = last.get("steps")
    run.skipped_updates = last.get("skipped_updates")
    run.rejected_steps = last.get("rejected_steps")
    run.dropped_pairs = last.get("dropped_pairs")
    run.radius = last.get("radius")
    fraction = steps_weighted_mean(rows, "negative_curvature_fraction")
    if fraction is not None:
        run.negative_curvature_percent = 100.0 * fraction
    eigenvalues = [r["min_eigenvalue"] for r in trained if _finite(r.get("min_eigenvalue"))]
    run.min_eigenvalue = min(eigenvalues) if eigenvalues else None
    run.update_cosine_p10 = last.get("update_cosine_p10")
    run.update_cosine_median = last.get("update_cosine_median")


def steps_weighted_mean(rows: list[dict[str, float | None]], column: str) -> float | None:
    """The mean over the trained epochs of a per-epoch fraction (``column``), each epoch
    weighted by its steps (the difference of the cumulative ``steps``); None if none has it."""
    weighted = counted = 0.0
    previous_steps = 0.0
    for row in rows:
        steps = row.get("steps") or 0.0
        value = row.get(column)
        if (row["epoch"] or 0) >= 1 and value is not None and steps > previous_steps:
            weighted += value * (steps - previous_steps)
            counted += steps - previous_steps
        previous_steps = steps
    return weighted / counted if counted else None


def _check_completeness(run: RunSummary, rows: list[dict[str, float | None]], epochs_completed: int) -> None:
    """Mark the run incomplete and say why: still running, interrupted, or epochs missing."""
    problems = run.problems
    if run.status in UNFINISHED_STATUSES:
        problems.append(f"status {run.status}")
    if run.status == "failed":
        problems.append(f"failed: {run.error}" if run.error else "failed")
    if not rows:
        problems.append(f"{EPOCHS_FILE} missing or empty")
    epochs = [int(r["epoch"] or 0) for r in rows]
    gaps = sorted(set(range(epochs[-1] + 1)) - set(epochs)) if epochs else []
    if gaps:
        problems.append(f"epochs {_ranges(gaps)} missing from {EPOCHS_FILE}")
    if epochs_completed > run.epochs_present:
        problems.append(f"run.json says {epochs_completed} epochs, {EPOCHS_FILE} has {run.epochs_present}")
    stopped_early = bool(run.spec.get("stop_at_targets")) and len(run.hits) == len(run.targets)
    if (
        run.status == "completed"
        and run.epochs_planned is not None
        and run.epochs_present < run.epochs_planned
        and not stopped_early
    ):
        problems.append(f"{run.epochs_present} of {run.epochs_planned} epochs recorded")
    # A diverged or failed run ends early by design; its missing epochs are not "incomplete".
    run.incomplete = bool(problems) and run.status not in {"diverged", "failed"}


def _ranges(numbers: list[int]) -> str:
    parts: list[str] = []
    start = prev = numbers[0]
    for n in numbers[1:] + [None]:  # type: ignore[list-item]
        if n is not None and n == prev + 1:
            prev = n
            continue
        parts.append(str(start) if start == prev else f"{start}–{prev}")
        if n is not None:
            start = prev = n
    return ", ".join(parts)


@dataclass
class Results:
    """Everything read from one results folder."""

    source: Path
    runs: list[RunSummary]
    unreadable: list[str]

    @property
    def suites(self) -> list[str]:
        return sorted({run.key.suite for run in self.runs})


def load_results(results: Path, run_ids: Collection[str] | None = None) -> Results:
    """Read every run under ``results`` (only ``run_ids``, if given); ReportError when none is usable."""
    results = Path(results)
    runs: list[RunSummary] = []
    unreadable: list[str] = []
    run_dirs = find_run_dirs(results)
    if run_ids is not None:
        run_dirs = [d for d in run_dirs if d.name in run_ids]
    for run_dir in run_dirs:
        summary = summarize_run(run_dir)
        if isinstance(summary, str):
            unreadable.append(summary)
        else:
            runs.append(summary)
    if not runs:
        detail = "; ".join(unreadable[:5])
        raise ReportError(f"{results}: no readable run records ({detail})")
    runs.sort(key=lambda r: (r.key.suite, r.run_id))
    return Results(source=results, runs=runs, unreadable=unreadable)
