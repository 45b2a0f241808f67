"""``lsr1bench export tensorboard RESULTS OUT``: each run's per-epoch scalars as TensorBoard events.

One event-file folder per run, ``OUT/<suite>/<run id>`` (the run id is built from the
run's settings: model, batch norm, dataset, label, batch size, ranks, seed), with a scalar
per recorded column of epochs.csv at step = epoch, grouped by tag prefix:

- ``error/``: test_error, val_error (%);
- ``loss/``: train_loss, test_loss, val_loss;
- ``cost/``: train_seconds, total_seconds, grad_evals, samples, steps (cumulative);
- ``quasi_newton/``: radius, stored pairs, the cumulative skipped / rejected / dropped
  counts, and each epoch's ``skipped_percent`` and ``rejected_percent`` of that epoch's steps;
- ``curvature/``: L-SR1's negative-curvature fraction and count, the smallest eigenvalue
  of B, the skip test's cosines and the share of pairs each threshold would skip
  (``skip_rate_r*``); any other numeric column (``lr``) goes under ``other/``.

The run's settings (its spec, hyperparameters as ``params.NAME``, device, versions,
commit, torch threads) are written as TensorBoard hparams, so the HParams tab lists the
runs side by side; the suite's folder holds the experiment's hparams and metrics list.

Uses tensorboard's own event writer and protos (the optional extra
``pip install -e ".[tensorboard]"``); no torch, no TensorFlow.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lsr1bench.reporting.cells import run_settings
from lsr1bench.reporting.runs import ReportError, RunSummary, load_results

GROUPS = {
    "error": ("test_error", "val_error"),
    "loss": ("train_loss", "test_loss", "val_loss"),
    "cost": ("train_seconds", "total_seconds", "grad_evals", "samples", "steps"),
    "quasi_newton": (
        "radius",
        "stored_pairs",
        "accepted_steps",
        "skipped_updates",
        "rejected_steps",
        "dropped_pairs",
        "skipped_percent",
        "rejected_percent",
    ),  # fmt: skip
    "curvature": (
        "negative_curvature_fraction",
        "negative_eigenvalues",
        "min_eigenvalue",
        "update_cosine_p10",
        "update_cosine_median",
    ),  # fmt: skip
}
_GROUP_OF = {column: group for group, columns in GROUPS.items() for column in columns}
# the metrics the HParams tab shows in its table (the last value of each run)
HPARAM_METRICS = ("error/test_error", "error/val_error", "loss/train_loss", "loss/test_loss", "cost/train_seconds",
                  "cost/grad_evals")  # fmt: skip
INSTALL_HINT = 'the TensorBoard export needs the tensorboard package: pip install -e ".[tensorboard]"'


def tag(column: str) -> str:
    """``test_error`` -> ``error/test_error``; an unknown column -> ``other/<column>``."""
    if column.startswith("skip_rate_r"):  # the share of pairs each skip threshold r would skip
        return f"curvature/{column}"
    return f"{_GROUP_OF.get(column, 'other')}/{column}"


def epoch_scalars(run: RunSummary) -> list[tuple[int, dict[str, float]]]:
    """Per recorded epoch, the finite numeric columns as ``tag -> value``, plus the epoch's
    skipped and rejected shares of its own steps (where the run counts steps)."""
    out = []
    previous: dict[str, float] = {}
    for row in run.rows:
        epoch = int(row["epoch"] or 0)
        values = {
            tag(name): float(value)
            for name, value in row.items()
            if name != "epoch" and isinstance(value, (int, float)) and math.isfinite(value)
        }
        steps = row.get("steps")
        if steps is not None and math.isfinite(steps):
            new_steps = steps - previous.get("steps", 0.0)
            for count, share in (("skipped_updates", "skipped_percent"), ("rejected_steps", "rejected_percent")):
                value = row.get(count)
                if value is not None and math.isfinite(value) and new_steps > 0:
                    values[tag(share)] = 100.0 * (value - previous.get(count, 0.0)) / new_steps
            previous = {name: float(row[name]) for name in ("steps", "skipped_updates", "rejected_steps")
                        if row.get(name) is not None and math.isfinite(row[name])}  # fmt: skip
        out.append((epoch, values))
    return out


def hparams(run: RunSummary) -> dict[str, Any]:
    """The run's settings as hparams: numbers and booleans as such, everything else as text."""
    out: dict[str, Any] = {"label": run.key.label, "model": run.key.model, "dataset": run.key.dataset,
                           "batch_norm": run.key.batch_norm, "batch_size": run.key.batch_size}  # fmt: skip
    if isinstance(run.seed, int):
        out["seed"] = run.seed
    for name, text in run_settings(run).items():
        out[name] = _typed(text)
    return out


def _typed(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "run"


def export_tensorboard(results: str | Path, out: str | Path) -> list[Path]:
    """Write every run under ``results`` as TensorBoard events under ``out``; the run folders.

    ReportError when the results cannot be read, ``out`` cannot be written, or tensorboard
    is not installed."""
    try:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.plugins.hparams import summary_v2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter
    except ImportError as exc:
        raise ReportError(f"{INSTALL_HINT} ({exc})") from exc
    loaded = load_results(Path(results))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ReportError(f"{out}: exists and is not a directory")
    written: list[Path] = []
    by_suite: dict[str, list[RunSummary]] = {}
    for run in loaded.runs:
        by_suite.setdefault(run.key.suite, []).append(run)
    try:
        for suite, runs in sorted(by_suite.items()):
            suite_dir = out / _safe(suite)
            all_hparams = [hparams(run) for run in runs]
            names = sorted({name for h in all_hparams for name in h})
            config = summary_v2.hparams_config_pb(
                hparams=[summary_v2.HParam(name) for name in names],
                metrics=[summary_v2.Metric(metric) for metric in HPARAM_METRICS],
            )
            _write(EventFileWriter, event_pb2, suite_dir, [(0, config)])
            for run, run_hparams in zip(runs, all_hparams, strict=True):
                events: list[tuple[int, Any]] = [(0, summary_v2.hparams_pb(run_hparams, trial_id=run.run_id))]
                for epoch, values in epoch_scalars(run):
                    summary = summary_pb2.Summary(
                        value=[
                            summary_pb2.Summary.Value(tag=name, simple_value=value) for name, value in values.items()
                        ]
                    )
                    events.append((epoch, summary))
                run_dir = suite_dir / _safe(run.run_id)
                _write(EventFileWriter, event_pb2, run_dir, events)
                written.append(run_dir)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write the TensorBoard events ({exc})") from exc
    return written


def _write(writer_class: Any, event_pb2: Any, folder: Path, summaries: Iterable[tuple[int, Any]]) -> None:
    """One event file in ``folder`` (any earlier export's files there are replaced)."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = writer_class(str(folder))
    try:
        for step, summary in summaries:
            writer.add_event(event_pb2.Event(step=step, wall_time=time.time(), summary=summary))
    finally:
        writer.close()
