"""Figures of what was measured: test error and train loss against epochs, seconds and
gradient evaluations, and the performance profiles.

One file per suite, metric and x-axis; inside it one panel per (model, dataset, batch
norm, batch size) and a line per optimizer label. A line's points are per-epoch medians
over the seeds that have the epoch: at epoch k, the median of the seeds' x (epoch k, their
cumulative training seconds or gradient evaluations at epoch k) and the median of their y,
drawn with a marker and joined by straight segments; nothing is interpolated or resampled.
The band spans the lowest to the highest seed at each epoch. Non-finite values (a
diverged run's last epoch) are left out and an ``x`` marks where a diverged run stopped.
The metric's targets are dotted horizontal lines. A panel none of whose runs has a
measured point says so in words.

Colours: one per optimizer (the ``optimizer`` of the runs' specs), the same in every panel
and figure of a report; labels of one optimizer (rank counts, sweep values, other
settings) are line styles of its colour; beyond the palette's ten colours the marker
changes. Tick labels are plain numbers (60, not 6x10^1).

Uses matplotlib's Agg canvas directly (no pyplot, so no global backend state). No torch.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter, ScalarFormatter

from lsr1bench.records import atomic_write_bytes
from lsr1bench.registry.names import OPTIMIZERS
from lsr1bench.reporting.runs import RunSummary

Panel = tuple[str, str, bool, int]  # model, dataset, batch norm, batch size

FORMATS = ("png", "pdf", "svg")
_PANEL_SIZE = (4.8, 3.4)  # inches
_MAX_COLUMNS = 3
_DPI = 110
_PALETTE = [f"C{i}" for i in range(10)]  # matplotlib's default cycle, colour-blind aware ("tab10")
_LINE_STYLES: list[str | tuple[int, tuple[int, ...]]] = [
    "-", "--", ":", "-.", (0, (5, 1, 1, 1, 1, 1)), (0, (8, 2)), (0, (1, 3)), (0, (3, 1, 1, 1, 1, 1, 1, 1)),
]  # fmt: skip
_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
# The registry's optimizers keep one colour in every report, whichever others it holds
# (Adam blue, L-SR1 orange, NAG green, L-BFGS red, ...); other names follow, sorted.
_COLOUR_ORDER = tuple(dict.fromkeys(("adam", "lsr1", "nag", "lbfgs", *OPTIMIZERS)))

# metric column -> axis label; x column -> axis label
METRICS = {"test_error": "test error (%)", "train_loss": "train loss"}
X_AXES = {"epoch": "epoch", "train_seconds": "training wall-clock (s)", "grad_evals": "gradient evaluations"}
_X_FILE = {"epoch": "epoch", "train_seconds": "seconds", "grad_evals": "grad-evals"}


@dataclass(frozen=True)
class LineStyle:
    color: str
    linestyle: str | tuple[int, tuple[int, ...]]
    marker: str
    hollow: bool = False  # a variant's markers are open, so its points show over identical ones

    def markers(self) -> dict[str, object]:
        face = "none" if self.hollow else self.color
        return {"marker": self.marker, "markerfacecolor": face, "markeredgecolor": self.color}


def optimizer_of(run: RunSummary) -> str:
    return str(run.spec.get("optimizer") or run.key.label)


def label_styles(runs: Iterable[RunSummary]) -> dict[str, LineStyle]:
    """One colour per optimizer, a line style per label of that optimizer, for every figure:
    the registry's optimizers in a fixed colour, other names after them.

    The optimizer whose label is its own name comes first in its colour (solid, filled
    markers); its other labels follow in sorted order (dashed, dotted, ...; open markers of
    other shapes, so a variant whose curve is identical still shows). Optimizers past the
    palette's ten colours reuse a colour with another marker, so no two optimizers look alike."""
    families: dict[str, set[str]] = defaultdict(set)
    for run in runs:
        families[optimizer_of(run)].add(run.key.label)
    styles: dict[str, LineStyle] = {}
    slots = _colour_slots(sorted(families))
    for optimizer in sorted(families):
        color_index, marker_index = slots[optimizer]
        color = _PALETTE[color_index]
        marker = _MARKERS[marker_index % len(_MARKERS)]
        labels = sorted(families[optimizer], key=lambda label: (label != optimizer, _natural(label)))
        first = _MARKERS.index(marker)
        for position, label in enumerate(labels):
            if label not in styles:  # a label shared by two optimizers keeps its first style
                variant_marker = _MARKERS[(first + position) % len(_MARKERS)]
                styles[label] = LineStyle(color, _LINE_STYLES[position % len(_LINE_STYLES)], variant_marker,
                                          hollow=position > 0)  # fmt: skip
    return styles


def _colour_slots(optimizers: list[str]) -> dict[str, tuple[int, int]]:
    """(palette index, marker index) per optimizer. The first ten of the registry's order
    keep their colour in every report; any other optimizer takes the lowest colour that no
    optimizer of this report holds, and once the palette is used up colours repeat with
    another marker, so no two optimizers of one figure look alike."""
    fixed = {name: i for i, name in enumerate(_COLOUR_ORDER[: len(_PALETTE)])}
    used = {fixed[name] for name in optimizers if name in fixed}
    free = [i for i in range(len(_PALETTE)) if i not in used]
    order = {name: i for i, name in enumerate(_COLOUR_ORDER)}
    rest = sorted((name for name in optimizers if name not in fixed), key=lambda n: (order.get(n, len(order)), n))
    slots = {name: (fixed[name], 0) for name in optimizers if name in fixed}
    for k, name in enumerate(rest):
        if k < len(free):
            slots[name] = (free[k], 0)
        else:
            over = k - len(free)
            slots[name] = (over % len(_PALETTE), 1 + over // len(_PALETTE))
    return slots


def _natural(text: str) -> list[object]:
    """Sort key reading numbers as numbers: lsr1-p2 before lsr1-p10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _panel_title(panel: Panel) -> str:
    model, dataset, batch_norm, batch = panel
    return f"{model}{' + BN' if batch_norm else ''} · {dataset} · b{batch}"


def _value(row: dict[str, float | None], column: str) -> float | None:
    value = row.get(column)
    if value is None or not math.isfinite(value):
        return None
    return float(value)


def measured_points(run: RunSummary, metric: str, x: str) -> list[tuple[int, float, float]]:
    """(epoch, x, y) of each recorded epoch whose x and metric are finite numbers."""
    points = []
    for row in run.rows:
        epoch = int(row["epoch"] or 0)
        x_value = float(epoch) if x == "epoch" else _value(row, x)
        y_value = _value(row, metric)
        if x_value is not None and y_value is not None:
            points.append((epoch, x_value, y_value))
    return points


def per_epoch_medians(runs: Sequence[RunSummary], metric: str, x: str) -> tuple[np.ndarray, ...]:
    """Per recorded epoch over the seeds that have it: median x, median y, min y, max y."""
    by_epoch: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for run in runs:
        for epoch, x_value, y_value in measured_points(run, metric, x):
            by_epoch[epoch].append((x_value, y_value))
    epochs = sorted(by_epoch)
    xs = np.asarray([np.median([p[0] for p in by_epoch[e]]) for e in epochs], dtype=float)
    ys = [[p[1] for p in by_epoch[e]] for e in epochs]
    return (
        xs,
        np.asarray([np.median(v) for v in ys], dtype=float),
        np.asarray([min(v) for v in ys], dtype=float),
        np.asarray([max(v) for v in ys], dtype=float),
    )


def _safe_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text) or "suite"


def _plain(value: float, _position: object = None) -> str:
    return f"{value:g}"


def _plain_ticks(ax: object, log_y: bool, integer_x: bool) -> None:
    """Tick labels as plain numbers: 60, 0.5, 2000 (never 6x10^1 or an offset)."""
    x_formatter = ScalarFormatter(useOffset=False)
    x_formatter.set_scientific(False)
    ax.xaxis.set_major_formatter(x_formatter)  # type: ignore[attr-defined]
    if integer_x:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # type: ignore[attr-defined]
    if log_y:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))  # type: ignore[attr-defined]
        ax.yaxis.set_major_formatter(FuncFormatter(_plain))  # type: ignore[attr-defined]
        ax.yaxis.set_minor_formatter(NullFormatter())  # type: ignore[attr-defined]
    else:
        y_formatter = ScalarFormatter(useOffset=False)
        y_formatter.set_scientific(False)
        ax.yaxis.set_major_formatter(y_formatter)  # type: ignore[attr-defined]


def _empty_panel_text(runs: list[RunSummary]) -> str:
    states = Counter("diverged" if run.diverged else run.status for run in runs)
    told = ", ".join(f"{count} {state}" for state, count in sorted(states.items()))
    return f"no measured points\n({len(runs)} run{'s' if len(runs) != 1 else ''}: {told})"


def _grid_figure(count: int) -> tuple[Figure, np.ndarray]:
    columns = max(1, min(_MAX_COLUMNS, count))
    rows = max(1, math.ceil(count / columns))
    width, height = _PANEL_SIZE[0] * columns, _PANEL_SIZE[1] * rows
    figure = Figure(figsize=(width, height), dpi=_DPI)
    FigureCanvasAgg(figure)
    # fixed margins in inches rather than tight_layout, which measures every tick label and
    # takes most of a figure's time
    figure.subplots_adjust(left=0.75 / width, right=1 - 0.15 / width, bottom=0.5 / height, top=1 - 0.3 / height,
                           wspace=0.75 / (_PANEL_SIZE[0] - 0.9), hspace=0.8 / (_PANEL_SIZE[1] - 0.8))  # fmt: skip
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return figure, axes


def suite_figure(
    runs: list[RunSummary], metric: str = "test_error", x: str = "epoch", styles: dict[str, LineStyle] | None = None
) -> Figure:
    """One figure of ``metric`` against ``x`` for one suite's runs: a panel per (model,
    dataset, BN, batch), a line per label in the style ``styles`` gives it."""
    if metric not in METRICS or x not in X_AXES:
        raise ValueError(f"metric must be one of {sorted(METRICS)} and x one of {sorted(X_AXES)}")
    styles = styles or label_styles(runs)
    panels: dict[Panel, dict[str, list[RunSummary]]] = defaultdict(lambda: defaultdict(list))
    for run in runs:
        key = run.key
        panels[(key.model, key.dataset, key.batch_norm, key.batch_size)][key.label].append(run)
    figure, axes = _grid_figure(len(panels))
    # axes.flat has at least as many panels as needed; the spare ones are hidden.
    for ax, (panel, by_label) in zip(axes.flat, sorted(panels.items()), strict=False):
        _draw_panel(ax, by_label, metric, x, styles)
        ax.set_title(_panel_title(panel), fontsize=9)
    return figure


def _draw_panel(ax: object, by_label: dict[str, list[RunSummary]], metric: str, x: str,
                styles: dict[str, LineStyle]) -> None:  # fmt: skip
    lowest = math.inf
    drawn = False
    for label in sorted(by_label, key=_natural):
        label_runs = by_label[label]
        xs, median, low, high = per_epoch_medians(label_runs, metric, x)
        if len(xs) == 0:
            continue
        drawn = True
        lowest = min(lowest, float(np.min(low)))
        style = styles[label]
        seeds = len(label_runs)
        noun = "seed" if seeds == 1 else "seeds"
        ax.plot(xs, median, color=style.color, ls=style.linestyle, ms=5 if style.hollow else 3.5,  # type: ignore[attr-defined]
                lw=1.4, label=f"{label} ({seeds} {noun})", **style.markers())  # fmt: skip
        if seeds > 1:
            ax.fill_between(xs, low, high, color=style.color, alpha=0.15, lw=0)  # type: ignore[attr-defined]
        for run in label_runs:
            if run.diverged:  # an x where the run stopped: it diverged after this point
                points = measured_points(run, metric, x)
                if points:
                    ax.plot(points[-1][1], points[-1][2], "x", color=style.color, ms=7, mew=1.5)  # type: ignore[attr-defined]
    ax.set_xlabel(X_AXES[x], fontsize=8)  # type: ignore[attr-defined]
    ax.set_ylabel(METRICS[metric], fontsize=8)  # type: ignore[attr-defined]
    ax.tick_params(labelsize=7)  # type: ignore[attr-defined]
    if not drawn:
        runs = [run for label_runs in by_label.values() for run in label_runs]
        ax.text(0.5, 0.5, _empty_panel_text(runs), transform=ax.transAxes, ha="center", va="center",  # type: ignore[attr-defined]
                fontsize=9, color="0.3")  # fmt: skip
        ax.set_xticks([])  # type: ignore[attr-defined]
        ax.set_yticks([])  # type: ignore[attr-defined]
        return
    targets = sorted({t.value for runs in by_label.values() for run in runs for t in run.targets if t.metric == metric})
    for target in targets:
        ax.axhline(target, color="0.5", ls=":", lw=0.8)  # type: ignore[attr-defined]
    log_y = lowest > 0
    if log_y:
        ax.set_yscale("log")  # type: ignore[attr-defined]
    _plain_ticks(ax, log_y, integer_x=x != "train_seconds")
    ax.grid(True, which="major", alpha=0.3)  # type: ignore[attr-defined]
    ax.legend(fontsize=7)  # type: ignore[attr-defined]


def save_figure(figure: Figure, path: Path, fmt: str = "png") -> Path:
    """Write ``figure`` to ``path`` atomically in ``fmt`` (png, pdf or svg)."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    data = io.BytesIO()
    # no creation date in PDF/SVG: the same records give the same bytes
    metadata = {"CreationDate": None} if fmt == "pdf" else {"Date": None} if fmt == "svg" else None
    figure.savefig(data, format=fmt, metadata=metadata)
    atomic_write_bytes(path, data.getvalue())
    return path


def plot_results(runs: list[RunSummary], folder: Path, fmt: str = "png") -> list[Path]:
    """Test error and train loss against epochs, seconds and gradient evaluations, and the
    performance profiles, for every suite in ``runs``, in one set of colours; the files written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    styles = label_styles(runs)
    written = []
    for suite, suite_runs in _by_suite(runs):
        name = _safe_name(suite)
        for metric in METRICS:
            if not any(measured_points(run, metric, "epoch") for run in suite_runs) and metric != "test_error":
                continue  # records without this metric at all (older schema): no figure of nothing
            for x in X_AXES:
                figure = suite_figure(suite_runs, metric, x, styles)
                stem = f"{name}-{metric.replace('_', '-')}-vs-{_X_FILE[x]}"
                written.append(save_figure(figure, folder / f"{stem}.{fmt}", fmt))
    return written + plot_profiles(runs, folder, fmt)


def profile_figure(found: Sequence[object], styles: dict[str, LineStyle]) -> Figure:
    """The performance profiles (lsr1bench.reporting.profiles), a panel per cost: rho_s(tau)
    as a step function of tau from 1 to the largest finite ratio (at least AlgoPerf's 4)."""
    from lsr1bench.reporting.profiles import COSTS, TAU_MAX, Profile

    figure, axes = _grid_figure(len(found))
    for ax, profile in zip(axes.flat, found, strict=False):
        assert isinstance(profile, Profile)
        ax.set_title(f"{COSTS[profile.cost]} to target · {len(profile.problems)} problems", fontsize=9)
        ax.set_xlabel("tau: ratio to the best label in the cell (log scale)", fontsize=8)
        ax.set_ylabel("share of problems within tau", fontsize=8)
        ax.tick_params(labelsize=7)
        if not profile.problems:
            why = (f"{len(profile.unsolved)} reached by no label, "
                   f"{len(profile.incomplete)} without runs of every label")  # fmt: skip
            ax.text(0.5, 0.5, f"no problem to profile\n({why})", transform=ax.transAxes, ha="center",
                    va="center", fontsize=9, color="0.3")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        largest = max([TAU_MAX] + [r for ratios in profile.ratios.values() for r in ratios if math.isfinite(r)])
        right = largest * 1.1
        for label in sorted(profile.labels, key=_natural):
            taus, rhos = profile.steps(label)
            style = styles.get(label, LineStyle("C0", "-", "o"))
            xs, ys = [1.0] + taus + [right], [0.0] + rhos + [rhos[-1] if rhos else 0.0]
            ax.step(xs, ys, where="post", color=style.color, ls=style.linestyle, lw=1.4,
                    label=f"{label} (score {profile.score(label):.2f})")  # fmt: skip
            ax.plot(taus, rhos, ls="none", ms=5 if style.hollow else 3.5, color=style.color, **style.markers())
        ax.axvline(TAU_MAX, color="0.5", ls=":", lw=0.8)
        ax.set_xscale("log", base=2)
        ax.set_xlim(1.0, right)
        ax.set_ylim(-0.02, 1.02)
        formatter = FuncFormatter(_plain)
        ax.xaxis.set_major_formatter(formatter)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    return figure


def _by_suite(runs: list[RunSummary]) -> list[tuple[str, list[RunSummary]]]:
    """The runs grouped by suite, suites in name order."""
    by_suite: dict[str, list[RunSummary]] = defaultdict(list)
    for run in runs:
        by_suite[run.key.suite].append(run)
    return sorted(by_suite.items())


def plot_profiles(runs: list[RunSummary], folder: Path, fmt: str = "png") -> list[Path]:
    """The performance-profile figure of each suite with at least one problem; the files written."""
    from lsr1bench.reporting.profiles import profiles

    styles = label_styles(runs)
    written = []
    for suite, suite_runs in _by_suite(runs):
        found = profiles(suite_runs)
        if not any(profile.problems or profile.unsolved or profile.incomplete for profile in found):
            continue  # no targets: nothing to profile
        path = folder / f"{_safe_name(suite)}-performance-profile.{fmt}"
        written.append(save_figure(profile_figure(found, styles), path, fmt))
    return written
