"""Cells -> table rows (Markdown via tabulate, CSV), laid out like the paper's Table 1.

One table per column group (suite, model, dataset, batch norm); inside it a row per
optimizer label and a column per (target, batch size), targets first (test error, then
test loss, then train loss targets, each ascending). A cell of an
"to target" table reads ``median [min–max] (k/n)``: the median and spread over the seeds
that reached the target and how many of the n seeds did. A cell no seed reached reads
"never reached", "diverged", "failed" or "not reached yet" (runs still incomplete), never
a number.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from tabulate import tabulate

from lsr1bench.reporting.cells import OUTCOME_ORDER, CellSummary, Stat, TargetSummary
from lsr1bench.reporting.runs import (
    DIVERGED,
    FAILED,
    INCOMPLETE,
    NEVER_REACHED,
    REACHED,
    CellKey,
    RunSummary,
)

Group = tuple[str, str, str, bool]
Formatter = Callable[[float], str]

NOT_RUN = "not run"
NO_TARGET = "—"
UNREACHED_WORDS = {
    NEVER_REACHED: "never reached",
    DIVERGED: "diverged",
    FAILED: "failed",
    INCOMPLETE: "not reached yet",
}
# How the "others" are named after k/n: the count of never-reached seeds is n - k - others.
TAIL_WORDS = {DIVERGED: "diverged", FAILED: "failed", INCOMPLETE: "incomplete"}


def fmt_count(x: float) -> str:
    """Epochs and gradient evaluations: whole numbers, a half where a median falls between."""
    return str(int(x)) if float(x).is_integer() else f"{x:.1f}"


def fmt_seconds(x: float) -> str:
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}" if abs(x) >= 10 else f"{x:.2f}"


def fmt_percent(x: float) -> str:
    return f"{x:.2f}"


def fmt_loss(x: float) -> str:
    return f"{x:.4f}"


def fmt_radius(x: float) -> str:
    return f"{x:.3g}"


def fmt_stat(stat: Stat | None, fmt: Formatter, missing: str = "n/a") -> str:
    """``median [min–max]``; the spread is left out when every seed has the same value."""
    if stat is None:
        return missing
    head = fmt(stat.median)
    low, high = fmt(stat.min), fmt(stat.max)
    return head if low == high else f"{head} [{low}–{high}]"


def target_text(summary: TargetSummary | None, metric: str, fmt: Formatter) -> str:
    """One cell of a "to target" table; ``metric`` is epochs, train_seconds or grad_evals."""
    if summary is None:
        return NO_TARGET
    k, n = summary.reached, summary.n
    others = {o: c for o, c in summary.outcomes.items() if o != REACHED and c}
    if k:
        head = fmt_stat(getattr(summary, metric), fmt)
        shown_in_head = None
    else:
        shown_in_head = next(iter(others)) if len(others) == 1 else NEVER_REACHED
        head = UNREACHED_WORDS[shown_in_head]
    tail = [f"{k}/{n}"]
    tail += [
        f"{others[o]} {TAIL_WORDS[o]}" for o in OUTCOME_ORDER if o in others and o in TAIL_WORDS and o != shown_in_head
    ]
    return f"{head} ({', '.join(tail)})"


def group_of(key: CellKey) -> Group:
    return key.group


def group_title(group: Group, with_suite: bool) -> str:
    suite, model, dataset, batch_norm = group
    bn = " with batch norm" if batch_norm else ""
    title = f"{model}{bn} on {dataset}"
    return f"{suite}: {title}" if with_suite else title


def groups(cells: Iterable[CellSummary]) -> dict[Group, list[CellSummary]]:
    out: dict[Group, list[CellSummary]] = {}
    for cell in cells:
        out.setdefault(cell.key.group, []).append(cell)
    return out


def target_table(cells: list[CellSummary], metric: str, fmt: Formatter) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of one group's "to target" table (rows: labels; columns: target x batch)."""
    labels = sorted({c.key.label for c in cells})
    batches = sorted({c.key.batch_size for c in cells})
    targets = sorted({t for c in cells for t in c.targets})
    by_key = {(c.key.label, c.key.batch_size): c for c in cells}
    headers = ["optimizer"] + [f"{t.text()} · b{b}" for t in targets for b in batches]
    rows: list[list[str]] = []
    if not targets:
        return headers, rows
    for label in labels:
        row = [label]
        for target in targets:
            for batch in batches:
                cell = by_key.get((label, batch))
                if cell is None:
                    row.append(NOT_RUN)
                else:
                    row.append(target_text(cell.targets.get(target), metric, fmt))
        rows.append(row)
    return headers, rows


def runs_text(cell: CellSummary) -> str:
    """``3 (2 completed, 1 running)``; finished runs with epochs missing are counted apart."""
    parts = [f"{count} {status}" for status, count in sorted(cell.statuses.items())]
    unfinished = cell.statuses.get("running", 0) + cell.statuses.get("interrupted", 0)
    if cell.incomplete > unfinished:
        parts.append(f"{cell.incomplete - unfinished} with epochs missing")
    return f"{cell.n} ({', '.join(parts)})"


def final_table(cells: list[CellSummary]) -> tuple[list[str], list[list[str]]]:
    headers = [
        "optimizer",
        "batch",
        "runs",
        "epochs run",
        "final test error %",
        "best test error %",
        "final train loss",
        "train seconds",
    ]
    rows = []
    for cell in sorted(cells, key=lambda c: (c.key.label, c.key.batch_size)):
        all_diverged = cell.diverged == cell.n
        rows.append(
            [
                cell.key.label,
                str(cell.key.batch_size),
                runs_text(cell),
                fmt_stat(cell.epochs_present, fmt_count),
                "diverged" if all_diverged else fmt_stat(cell.final_test_error, fmt_percent),
                fmt_stat(cell.best_test_error, fmt_percent),
                "diverged" if all_diverged else fmt_stat(cell.final_train_loss, fmt_loss),
                fmt_stat(cell.train_seconds, fmt_seconds),
            ]
        )
    return headers, rows


def skip_table(cells: list[CellSummary]) -> tuple[list[str], list[list[str]]]:
    """Skip statistics of the cells whose runs record them (the quasi-Newton methods)."""
    headers = [
        "optimizer",
        "batch",
        "runs",
        "steps",
        "skipped updates %",
        "rejected steps",
        "rejected %",
        "dropped pairs",
        "final radius",
        "negative curvature % of steps",
        "smallest eigenvalue of B",
        "update cosine p10 / median (last epoch)",
    ]
    rows = []
    for cell in sorted(cells, key=lambda c: (c.key.label, c.key.batch_size)):
        if not cell.has_skip_statistics:
            continue
        rows.append(
            [
                cell.key.label,
                str(cell.key.batch_size),
                runs_text(cell),
                fmt_stat(cell.steps, fmt_count),
                fmt_stat(cell.skip_percent, fmt_percent),
                fmt_stat(cell.rejected_steps, fmt_count),
                fmt_stat(cell.rejected_percent, fmt_percent),
                fmt_stat(cell.dropped_pairs, fmt_count),
                fmt_stat(cell.radius, fmt_radius),
                fmt_stat(cell.negative_curvature_percent, fmt_percent),
                fmt_stat(cell.min_eigenvalue, fmt_radius),
                _cosines(cell),
            ]
        )
    return headers, rows


def _cosines(cell: CellSummary) -> str:
    if cell.update_cosine_p10 is None or cell.update_cosine_median is None:
        return "n/a"
    return f"{cell.update_cosine_p10.median:.3g} / {cell.update_cosine_median.median:.3g}"


def markdown(headers: list[str], rows: list[list[str]]) -> str:
    return tabulate(rows, headers=headers, tablefmt="github", disable_numparse=True)


# --- CSV rows: long format, one row per (cell, target) and per cell, plain numbers ---

_KEY_COLUMNS = ["suite", "model", "dataset", "batch_norm", "label", "batch_size"]


def _key_values(key: CellKey) -> list[Any]:
    return [key.suite, key.model, key.dataset, key.batch_norm, key.label, key.batch_size]


def _stat_values(stat: Stat | None) -> list[Any]:
    return ["", "", ""] if stat is None else [stat.median, stat.min, stat.max]


def _stat_columns(name: str) -> list[str]:
    return [f"{name}_median", f"{name}_min", f"{name}_max"]


def targets_csv(cells: list[CellSummary]) -> tuple[list[str], list[list[Any]]]:
    headers = _KEY_COLUMNS + [
        "metric",
        "target",
        "n",
        "reached",
        "never_reached",
        "diverged",
        "failed",
        "incomplete",
    ]
    for name in ("epochs", "train_seconds", "grad_evals"):
        headers += _stat_columns(name)
    rows = []
    for cell in cells:
        for target, summary in sorted(cell.targets.items()):
            outcomes = [summary.outcomes.get(o, 0) for o in OUTCOME_ORDER]
            rows.append(
                _key_values(cell.key)
                + [target.metric, target.value, summary.n, *outcomes]
                + _stat_values(summary.epochs)
                + _stat_values(summary.train_seconds)
                + _stat_values(summary.grad_evals)
            )
    return headers, rows


_CELL_CSV_STATS = (
    "epochs_present",
    "final_test_error",
    "best_test_error",
    "final_train_loss",
    "train_seconds",
    "grad_evals",
    "steps",
    "skip_percent",
    "rejected_steps",
    "rejected_percent",
    "dropped_pairs",
    "radius",
)


def cells_csv(cells: list[CellSummary]) -> tuple[list[str], list[list[Any]]]:
    headers = _KEY_COLUMNS + ["n", "seeds", "completed", "diverged", "failed", "incomplete"]
    for name in _CELL_CSV_STATS:
        headers += _stat_columns(name)
    rows = []
    for cell in cells:
        row = _key_values(cell.key) + [
            cell.n,
            " ".join(str(s) for s in cell.seeds),
            cell.statuses.get("completed", 0),
            cell.diverged,
            cell.failed,
            cell.incomplete,
        ]
        for name in _CELL_CSV_STATS:
            row += _stat_values(getattr(cell, name))
        rows.append(row)
    return headers, rows


def runs_csv(runs: list[RunSummary]) -> tuple[list[str], list[list[Any]]]:
    targets = sorted({t for run in runs for t in run.targets})
    headers = [
        "run_id",
        *_KEY_COLUMNS,
        "seed",
        "status",
        "diverged",
        "incomplete",
        "epochs_present",
        "epochs_planned",
    ]
    headers += [f"epochs_to_{t.column}" for t in targets]
    headers += [
        "final_test_error",
        "best_test_error",
        "final_train_loss",
        "train_seconds",
        "grad_evals",
        "steps",
        "skipped_updates",
        "skip_percent",
        "rejected_steps",
        "dropped_pairs",
        "radius",
        "problems",
    ]
    rows = []
    for run in runs:
        row: list[Any] = [
            run.run_id,
            *_key_values(run.key),
            run.seed,
            run.status,
            run.diverged,
            run.incomplete,
            run.epochs_present,
            run.epochs_planned,
        ]
        for target in targets:
            if target not in run.targets:
                row.append("")
            elif target in run.hits:
                row.append(run.hits[target].epoch)
            else:
                row.append(run.outcome(target))
        row += [
            run.final_test_error,
            run.best_test_error,
            run.final_train_loss,
            run.final_train_seconds,
            run.final_grad_evals,
            run.steps,
            run.skipped_updates,
            run.skip_percent,
            run.rejected_steps,
            run.dropped_pairs,
            run.radius,
            "; ".join(run.problems),
        ]
        rows.append(["" if v is None else v for v in row])
    return headers, rows
