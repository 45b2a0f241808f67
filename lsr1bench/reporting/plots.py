"""Test error against epochs and against training wall-clock, like the paper's Figures 1–6.

One PNG per suite and x-axis; inside it one panel per (model, dataset, batch norm, batch
size) and a line per optimizer label: the median over seeds, with a band from the lowest
to the highest seed. Against wall-clock, each seed's curve is interpolated onto a common
time grid and a seed counts only up to its own last recorded time. Non-finite values (a
diverged run's last epoch) are left out. The target test errors are dotted horizontal lines.
The legend gives each label's number of seeds ("1 seed", "3 seeds").

Uses matplotlib's Agg canvas directly (no pyplot, so no global backend state). No torch.
"""

from __future__ import annotations

import io
import math
import re
from collections import defaultdict
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from lsr1bench.records import atomic_write_bytes
from lsr1bench.reporting.runs import RunSummary

Panel = tuple[str, str, bool, int]  # model, dataset, batch norm, batch size

_TIME_GRID_POINTS = 200
_PANEL_SIZE = (4.8, 3.4)  # inches
_MAX_COLUMNS = 3
_DPI = 110


def _panel_title(panel: Panel) -> str:
    model, dataset, batch_norm, batch = panel
    return f"{model}{' + BN' if batch_norm else ''} · {dataset} · b{batch}"


def _finite_points(run: RunSummary, use_time: bool) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for epoch, seconds, error in run.curve:
        x = seconds if use_time else float(epoch)
        if x is None or error is None or not (math.isfinite(x) and math.isfinite(error)):
            continue
        xs.append(x)
        ys.append(error)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


def band_by_epoch(runs: list[RunSummary]) -> tuple[np.ndarray, ...]:
    """Epochs and the median, min and max test error over the seeds that have each epoch."""
    by_epoch: dict[float, list[float]] = defaultdict(list)
    for run in runs:
        for x, y in zip(*_finite_points(run, use_time=False), strict=True):
            by_epoch[float(x)].append(float(y))
    xs = np.asarray(sorted(by_epoch), dtype=float)
    values = [by_epoch[x] for x in xs]
    return (
        xs,
        np.asarray([np.median(v) for v in values]),
        np.asarray([min(v) for v in values]),
        np.asarray([max(v) for v in values]),
    )


def band_by_time(runs: list[RunSummary]) -> tuple[np.ndarray, ...]:
    """A common time grid and the median, min and max interpolated test error over seeds."""
    curves = []
    for run in runs:
        xs, ys = _finite_points(run, use_time=True)
        order = np.argsort(xs, kind="stable")
        if len(xs) >= 2:
            curves.append((xs[order], ys[order]))
    if not curves:
        empty = np.asarray([], dtype=float)
        return empty, empty, empty, empty
    start = min(xs[0] for xs, _ in curves)
    end = max(xs[-1] for xs, _ in curves)
    grid = np.linspace(start, end, _TIME_GRID_POINTS)
    stack = np.full((len(curves), len(grid)), np.nan)
    for i, (xs, ys) in enumerate(curves):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        stack[i, inside] = np.interp(grid[inside], xs, ys)
    keep = ~np.all(np.isnan(stack), axis=0)
    stack, grid = stack[:, keep], grid[keep]
    return grid, np.nanmedian(stack, axis=0), np.nanmin(stack, axis=0), np.nanmax(stack, axis=0)


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "suite"


def plot_suite(runs: list[RunSummary], path: Path, use_time: bool) -> Path:
    """One PNG of test error against epochs (or training seconds) for one suite's runs."""
    figure = suite_figure(runs, use_time)
    png = io.BytesIO()
    figure.savefig(png, format="png")
    atomic_write_bytes(path, png.getvalue())
    return path


def suite_figure(runs: list[RunSummary], use_time: bool) -> Figure:
    """The figure :func:`plot_suite` saves: a panel per (model, dataset, BN, batch)."""
    panels: dict[Panel, dict[str, list[RunSummary]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = run.key
        panels[(key.model, key.dataset, key.batch_norm, key.batch_size)][key.label].append(run)
    labels = sorted({run.key.label for run in runs})
    palette = [f"C{i % 10}" for i in range(len(labels))]
    colors = dict(zip(labels, palette, strict=True))
    columns = min(_MAX_COLUMNS, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure = Figure(figsize=(_PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows), dpi=_DPI)
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    # axes.flat has at least as many panels as needed; the spare ones are hidden above.
    for ax, (panel, by_label) in zip(axes.flat, sorted(panels.items()), strict=False):
        all_positive = True
        for label in sorted(by_label):
            band = band_by_time if use_time else band_by_epoch
            xs, median, low, high = band(by_label[label])
            if len(xs) == 0:
                continue
            all_positive = all_positive and bool(np.all(low > 0))
            seeds = len(by_label[label])
            noun = "seed" if seeds == 1 else "seeds"
            ax.plot(xs, median, color=colors[label], label=f"{label} ({seeds} {noun})", lw=1.4)
            if seeds > 1:
                ax.fill_between(xs, low, high, color=colors[label], alpha=0.2, lw=0)
            for run in by_label[label]:
                if run.diverged:  # an x where the curve stops: the run diverged there
                    run_xs, run_ys = _finite_points(run, use_time)
                    if len(run_xs):
                        ax.plot(run_xs[-1], run_ys[-1], "x", color=colors[label], ms=6)
        # the y axis is test error: only its targets are drawn (loss targets are in the tables)
        targets = sorted({t.value for runs_ in by_label.values() for run in runs_ for t in run.targets
                          if t.metric == "test_error"})  # fmt: skip
        for target in targets:
            ax.axhline(target, color="0.5", ls=":", lw=0.8)
        if all_positive and ax.has_data():
            ax.set_yscale("log")
        ax.set_title(_panel_title(panel), fontsize=9)
        ax.set_xlabel("training wall-clock (s)" if use_time else "epoch", fontsize=8)
        ax.set_ylabel("test error (%)", fontsize=8)
        ax.tick_params(labelsize=7)
        if not use_time:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, which="both", alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=7)
    figure.tight_layout()
    return figure


def plot_results(runs: list[RunSummary], folder: Path) -> list[Path]:
    """Both plots (vs epoch, vs wall-clock) for every suite in ``runs``; the files written."""
    by_suite: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_suite[run.key.suite].append(run)
    written = []
    for suite, suite_runs in sorted(by_suite.items()):
        name = _safe_name(suite)
        written.append(plot_suite(suite_runs, folder / f"{name}-test-error-vs-epoch.png", False))
        written.append(plot_suite(suite_runs, folder / f"{name}-test-error-vs-seconds.png", True))
    return written
