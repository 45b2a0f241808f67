"""Aggregate runs over seeds into cells, and (de)serialize cells as a baseline file.

Over the seeds of a cell every number is summarized as its median with the min–max spread.
A target is a threshold on one metric (test error, test loss or train loss).
Per target, the epochs / seconds / gradient evaluations are summarized over the seeds that
reached the target, and ``reached`` of ``n`` says how many did; the others are counted by
why (never reached, diverged, failed, still incomplete), so a table never shows a number
for a seed that has none.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lsr1bench.reporting.runs import (
    DIVERGED,
    FAILED,
    INCOMPLETE,
    NEVER_REACHED,
    REACHED,
    CellKey,
    ReportError,
    RunSummary,
    Target,
)

BASELINE_FORMAT = "lsr1bench-baseline"
# 2: targets carry their metric and each seed's epochs to it; cells carry their settings.
# (Cells may also carry each seed's final and mean train loss, ``by_seed``; a version 2 file
# without them is still read; compare then notes that it cannot pair seeds.)
BASELINE_VERSION = 2
# The per-seed values a cell keeps (``by_seed``), for comparisons of the same seed on both sides.
PER_SEED_VALUES = ("final_train_loss", "mean_train_loss")

# Spec fields that may differ between the runs of one cell (everything else should not).
_PER_SEED_FIELDS = frozenset({"seed", "run_id", "data_root"})


@dataclass(frozen=True)
class Stat:
    """Median and min–max of one quantity over the seeds that have it."""

    median: float
    min: float
    max: float
    count: int

    @classmethod
    def of(cls, values: Iterable[float | None]) -> Stat | None:
        kept = [v for v in values if v is not None and math.isfinite(v)]
        if not kept:
            return None
        return cls(statistics.median(kept), min(kept), max(kept), len(kept))

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "count": self.count}

    @classmethod
    def from_dict(cls, data: Any) -> Stat | None:
        if data is None:
            return None
        return cls(float(data["median"]), float(data["min"]), float(data["max"]), int(data["count"]))


@dataclass
class TargetSummary:
    target: Target
    n: int
    outcomes: dict[str, int]
    epochs: Stat | None
    train_seconds: Stat | None
    grad_evals: Stat | None
    # every seed's epochs to the target, ascending, None (not reached) last: the gate's input
    epochs_by_seed: list[int | None] = field(default_factory=list)
    # the last epoch the runs were planned to reach (a seed not reaching the target got this far)
    horizon: int | None = None

    @property
    def reached(self) -> int:
        return self.outcomes.get(REACHED, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "metric": self.target.metric,
            "target": self.target.value,
            "n": self.n,
            "outcomes": dict(self.outcomes),
            "epochs": _stat_dict(self.epochs),
            "train_seconds": _stat_dict(self.train_seconds),
            "grad_evals": _stat_dict(self.grad_evals),
            "epochs_by_seed": list(self.epochs_by_seed),
            "horizon": self.horizon,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TargetSummary:
        return cls(
            target=Target(str(data["metric"]), float(data["target"])),
            n=int(data["n"]),
            outcomes={str(k): int(v) for k, v in data["outcomes"].items()},
            epochs=Stat.from_dict(data.get("epochs")),
            train_seconds=Stat.from_dict(data.get("train_seconds")),
            grad_evals=Stat.from_dict(data.get("grad_evals")),
            epochs_by_seed=[None if e is None else int(e) for e in data["epochs_by_seed"]],
            horizon=None if data.get("horizon") is None else int(data["horizon"]),
        )


@dataclass
class CellSummary:
    """One cell: the runs of one (suite, model, dataset, batch norm, label, batch size)."""

    key: CellKey
    n: int
    seeds: list[int]
    statuses: dict[str, int]
    incomplete: int
    targets: dict[Target, TargetSummary]
    final_test_error: Stat | None
    best_test_error: Stat | None
    final_train_loss: Stat | None
    train_seconds: Stat | None
    grad_evals: Stat | None
    epochs_present: Stat | None
    # Quasi-Newton statistics; None when no run of the cell records them.
    steps: Stat | None = None
    skip_percent: Stat | None = None
    rejected_steps: Stat | None = None
    rejected_percent: Stat | None = None
    dropped_pairs: Stat | None = None
    radius: Stat | None = None
    negative_curvature_percent: Stat | None = None
    min_eigenvalue: Stat | None = None
    update_cosine_p10: Stat | None = None
    update_cosine_median: Stat | None = None
    # the mean of each seed's train loss over its trained epochs (RunSummary.mean_train_loss)
    mean_train_loss: Stat | None = None
    # seed -> {name in PER_SEED_VALUES: value} for the seeds that have them (not diverged)
    by_seed: dict[int, dict[str, float]] = field(default_factory=dict)
    mixed_fields: list[str] = field(default_factory=list)
    # what the runs were made with (hyperparameters, epochs, data, device, versions,
    # commit, threads), as text; a setting that differs between seeds reads "mixed: ..."
    settings: dict[str, str] = field(default_factory=dict)

    @property
    def diverged(self) -> int:
        return self.statuses.get("diverged", 0)

    @property
    def failed(self) -> int:
        return self.statuses.get("failed", 0)

    @property
    def has_skip_statistics(self) -> bool:
        return self.skip_percent is not None

    def to_dict(self) -> dict[str, Any]:
        stats = {name: _stat_dict(getattr(self, name)) for name in _CELL_STATS}
        return {
            "suite": self.key.suite,
            "model": self.key.model,
            "dataset": self.key.dataset,
            "batch_norm": self.key.batch_norm,
            "label": self.key.label,
            "batch_size": self.key.batch_size,
            "n": self.n,
            "seeds": list(self.seeds),
            "statuses": dict(self.statuses),
            "incomplete": self.incomplete,
            "targets": [t.to_dict() for t in self.targets.values()],
            **stats,
            "by_seed": {str(seed): dict(values) for seed, values in sorted(self.by_seed.items())},
            "settings": dict(self.settings),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CellSummary:
        key = CellKey(
            suite=str(data["suite"]),
            model=str(data["model"]),
            dataset=str(data["dataset"]),
            batch_norm=bool(data["batch_norm"]),
            label=str(data["label"]),
            batch_size=int(data["batch_size"]),
        )
        targets = [TargetSummary.from_dict(t) for t in data["targets"]]
        return cls(
            key=key,
            n=int(data["n"]),
            seeds=[int(s) for s in data.get("seeds", [])],
            statuses={str(k): int(v) for k, v in data["statuses"].items()},
            incomplete=int(data.get("incomplete", 0)),
            targets={t.target: t for t in targets},
            **{name: Stat.from_dict(data.get(name)) for name in _CELL_STATS},
            by_seed={
                int(seed): {str(k): float(v) for k, v in values.items()}
                for seed, values in (data.get("by_seed") or {}).items()
            },
            settings={str(k): str(v) for k, v in (data.get("settings") or {}).items()},
        )


_CELL_STATS = (
    "final_test_error",
    "best_test_error",
    "final_train_loss",
    "train_seconds",
    "grad_evals",
    "epochs_present",
    "steps",
    "skip_percent",
    "rejected_steps",
    "rejected_percent",
    "dropped_pairs",
    "radius",
    "mean_train_loss",
)


def _stat_dict(stat: Stat | None) -> dict[str, float] | None:
    return stat.to_dict() if stat is not None else None


def summarize_cell(key: CellKey, runs: list[RunSummary]) -> CellSummary:
    """Aggregate the runs of one cell (they should differ only by seed)."""
    all_targets = sorted({t for run in runs for t in run.targets})
    targets: dict[Target, TargetSummary] = {}
    for target in all_targets:
        having = [run for run in runs if target in run.targets]
        hits = [run.hits[target] for run in having if target in run.hits]
        targets[target] = TargetSummary(
            target=target,
            n=len(having),
            outcomes=dict(Counter(run.outcome(target) for run in having)),
            epochs=Stat.of(h.epoch for h in hits),
            train_seconds=Stat.of(h.train_seconds for h in hits),
            grad_evals=Stat.of(h.grad_evals for h in hits),
            epochs_by_seed=sorted(h.epoch for h in hits) + [None] * (len(having) - len(hits)),
            horizon=max((run.epochs_planned or run.epochs_present for run in having), default=None),
        )
    # A diverged run has no final error or loss; its divergence is counted in ``statuses``.
    alive = [run for run in runs if not run.diverged]
    return CellSummary(
        key=key,
        n=len(runs),
        seeds=sorted(run.seed for run in runs if isinstance(run.seed, int)),
        statuses=dict(Counter(DIVERGED if run.diverged else run.status for run in runs)),
        incomplete=sum(run.incomplete for run in runs),
        targets=targets,
        final_test_error=Stat.of(run.final_test_error for run in alive),
        best_test_error=Stat.of(run.best_test_error for run in runs),
        final_train_loss=Stat.of(run.final_train_loss for run in alive),
        train_seconds=Stat.of(run.final_train_seconds for run in runs),
        grad_evals=Stat.of(run.final_grad_evals for run in runs),
        epochs_present=Stat.of(run.epochs_present for run in runs),
        steps=Stat.of(run.steps for run in runs),
        skip_percent=Stat.of(run.skip_percent for run in runs),
        rejected_steps=Stat.of(run.rejected_steps for run in runs),
        rejected_percent=Stat.of(run.rejected_percent for run in runs),
        dropped_pairs=Stat.of(run.dropped_pairs for run in runs),
        radius=Stat.of(run.radius for run in runs),
        negative_curvature_percent=Stat.of(run.negative_curvature_percent for run in runs),
        min_eigenvalue=Stat.of(run.min_eigenvalue for run in runs),
        update_cosine_p10=Stat.of(run.update_cosine_p10 for run in runs),
        update_cosine_median=Stat.of(run.update_cosine_median for run in runs),
        mean_train_loss=Stat.of(run.mean_train_loss for run in alive),
        by_seed=_by_seed(alive),
        mixed_fields=_mixed_fields(runs),
        settings=cell_settings(runs),
    )


def _by_seed(runs: list[RunSummary]) -> dict[int, dict[str, float]]:
    """Each seed's PER_SEED_VALUES that are finite; a seed with two runs in the cell is left out
    (which of them would pair with the other side's is not known)."""
    seeds = Counter(run.seed for run in runs)
    out = {}
    for run in runs:
        if not isinstance(run.seed, int) or seeds[run.seed] > 1:
            continue
        values = {name: getattr(run, name) for name in PER_SEED_VALUES}
        kept = {name: float(v) for name, v in values.items() if v is not None and math.isfinite(v)}
        if kept:
            out[run.seed] = kept
    return out


def _mixed_fields(runs: list[RunSummary]) -> list[str]:
    """Spec fields other than the seed that differ between runs of one cell."""
    names = sorted({name for run in runs for name in run.spec} - _PER_SEED_FIELDS)
    return [name for name in names if len({repr(run.spec.get(name)) for run in runs}) > 1]


# Spec fields that name the cell or the seed: never "settings that differ" within a match.
_KEY_FIELDS = frozenset(
    {"suite", "run_id", "seed", "data_root", "model", "dataset", "batch_norm", "label", "batch_size"}
)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _short_commit(commit: str | None) -> str:
    if not commit:
        return "unknown"
    head, _, tail = commit.partition("+")
    return head[:12] + (f"+{tail}" if tail else "")


def run_settings(run: RunSummary) -> dict[str, str]:
    """What one run was made with, as ``name -> text`` (hyperparameters as ``params.NAME``)."""
    out: dict[str, str] = {}
    for name, value in run.spec.items():
        if name in _KEY_FIELDS:
            continue
        if name == "optimizer_params" and isinstance(value, dict):
            out.update({f"params.{k}": _text(v) for k, v in value.items()})
        elif name == "targets":
            out[name] = ", ".join(t.text() for t in run.targets) or "none"
        else:
            out[name] = _text(value)
    out["device"] = run.device or "unknown"
    for package in ("torch", "lsr1bench"):
        out[package] = str(run.versions.get(package, "unknown"))
    out["commit"] = _short_commit(run.git_commit)
    threads = run.environment.get("torch_threads")
    if threads is not None:
        out["torch threads"] = str(threads)
    return out


def cell_settings(runs: list[RunSummary]) -> dict[str, str]:
    """The settings of a cell's runs; one that differs between seeds reads ``mixed: a | b``."""
    per_run = [run_settings(run) for run in runs]
    by_name: dict[str, set[str]] = defaultdict(set)
    for settings in per_run:
        for name, text in settings.items():
            by_name[name].add(text)
    out = {}
    for name in sorted(by_name):
        values = by_name[name] | ({"(absent)"} if any(name not in s for s in per_run) else set())
        out[name] = next(iter(values)) if len(values) == 1 else "mixed: " + " | ".join(sorted(values))
    return out


def summarize_cells(runs: list[RunSummary]) -> list[CellSummary]:
    by_key: dict[CellKey, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_key[run.key].append(run)
    return [summarize_cell(key, by_key[key]) for key in sorted(by_key, key=cell_sort_key)]


def cell_sort_key(key: CellKey) -> tuple[Any, ...]:
    return (key.suite, key.model, key.dataset, key.batch_norm, key.label, key.batch_size)


def baseline_dict(cells: list[CellSummary], source: str) -> dict[str, Any]:
    """The baseline file's content: the cells' summaries, nothing per run."""
    return {
        "format": BASELINE_FORMAT,
        "version": BASELINE_VERSION,
        "source": source,
        "spread": "median, min and max over seeds",
        "cells": [cell.to_dict() for cell in cells],
    }


def cells_from_baseline(data: Any, origin: str) -> list[CellSummary]:
    """Cells from a parsed baseline file; ReportError naming the problem when malformed."""
    if not isinstance(data, dict) or data.get("format") != BASELINE_FORMAT:
        raise ReportError(f'{origin}: not an lsr1bench baseline (no "format": "{BASELINE_FORMAT}")')
    if data.get("version") != BASELINE_VERSION:
        raise ReportError(
            f"{origin}: baseline version {data.get('version')!r}, this lsr1bench reads version "
            f"{BASELINE_VERSION}; export it again from its results: lsr1bench report RESULTS_DIR "
            "--no-plots --export-baseline FILE"
        )
    raw_cells = data.get("cells")
    if not isinstance(raw_cells, list) or not raw_cells:
        raise ReportError(f"{origin}: baseline has no cells")
    cells = []
    for index, raw in enumerate(raw_cells):
        try:
            cells.append(CellSummary.from_dict(raw))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ReportError(f"{origin}: cells[{index}] is malformed ({exc!r})") from exc
    return cells


OUTCOME_ORDER = (REACHED, NEVER_REACHED, DIVERGED, FAILED, INCOMPLETE)
