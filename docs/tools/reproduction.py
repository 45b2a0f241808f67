"""Generated regions of docs/REPRODUCTION.md, from the records committed beside it.

A Markdown file marks each generated region::

    <!-- lsr1bench:begin table1 -->
    ...replaced on every regeneration...
    <!-- lsr1bench:end table1 -->

and :func:`update_doc` rewrites every such region with the fragment of that name, built
from ``docs/reproduction/``:

* ``runs/<suite>/<run id>/{run.json, epochs.csv}``: the whole record of every run made
  for the CPU reproduction (the files ``lsr1bench run --output docs/reproduction/runs`` writes);
  the ``cpu-*``, ``skip-rate-runs``, ``frozen-run`` and ``provenance`` fragments read them
  the way ``lsr1bench report`` does;
* ``*_{targets,cells,runs}.csv``: the summaries ``lsr1bench report`` wrote for the older
  runs, whose per-run records were never committed; the other fragments read those.

The text between regions is left alone. A number the doc needs that these files do not
hold cannot be generated, and does not belong in the doc.

Regenerate from the repository's root with::

    python docs/tools/reproduction.py            # docs/REPRODUCTION.md from docs/reproduction/

This is documentation tooling, not part of the installed package: it reads records with
the package's public reporting API and serves this one document.

Never imports torch.
"""

from __future__ import annotations

import csv
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import doc_regions
import optimizer_provenance
from ablation import ablation_table
from doc_regions import BEGIN, END_TEMPLATE, render_regions, update_regions
from paper_table1 import PAPER_CELLS, PAPER_TABLE1, paper_row

from lsr1bench.records import SKIP_RATE_COLUMNS, SKIP_RATE_THRESHOLDS
from lsr1bench.reporting.cells import CellSummary, Stat, summarize_cells
from lsr1bench.reporting.runs import ReportError, RunSummary, Target, load_results, steps_weighted_mean
from lsr1bench.reporting.tables import fmt_count, fmt_percent, fmt_seconds, fmt_stat, markdown, target_text

__all__ = [
    "BEGIN", "DOC", "END_TEMPLATE", "FRAGMENTS", "PAPER_CELLS", "PAPER_TABLE1", "paper_row", "render_doc", "update_doc",
]

DOC = Path(__file__).resolve().parents[1] / "REPRODUCTION.md"

Row = dict[str, str]


TABLE1 = "table1_mnist_gpu"
LSR1_CPU = "table1_mnist_lsr1_cpu"
WALLCLOCK = "gpu_wallclock"
FIGURE1 = "figure1_mnist_cpu"

OPTIMIZER_NAMES = {
    "lsr1": "L-SR1",
    "adam": "Adam",
    "nag": "NAG",
    "sgd": "SGD",
    "momentum": "SGD with momentum",
    "adadelta": "AdaDelta",
    "lbfgs-forget5": "L-BFGS, forgetting every 5",
}
TABLE1_ORDER = ["lsr1", "adam", "nag"]
TARGETS = ["1.1", "1.2", "1.5"]
BATCHES = ["500", "1000", "10000"]

# --- reading the committed CSVs ---


def read_csv(folder: Path, stem: str, kind: str) -> list[Row]:
    return _rows(folder / f"{stem}_{kind}.csv", "the generated regions read it")


def _rows(path: Path, writer: str) -> list[Row]:
    """The rows of a committed CSV; a missing file is a ReportError saying ``writer``."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file ({writer})") from None


def pick(rows: list[Row], **match: str) -> Row | None:
    found = [r for r in rows if all(r.get(k) == v for k, v in match.items())]
    if len(found) > 1:
        raise ReportError(f"more than one row matches {match}")
    return found[0] if found else None


def stat(row: Row, name: str, fmt: Callable[[float], str]) -> str:
    """``median [min–max]`` from the CSV's three columns; the spread left out when it is nil."""
    head, low, high = (row[f"{name}_{part}"] for part in ("median", "min", "max"))
    if head == "":
        return "n/a"
    head, low, high = fmt(float(head)), fmt(float(low)), fmt(float(high))
    return head if low == high else f"{head} [{low}–{high}]"


def to_target_text(row: Row | None, metric: str, fmt: Callable[[float], str]) -> str:
    """One to-target cell: the statistic over the seeds that reached it, then (k/n, others)."""
    if row is None:
        return "not run"
    n, reached = int(row["n"]), int(row["reached"])
    head = stat(row, metric, fmt) if reached else "never reached"
    tail = [f"{reached}/{n}"]
    for outcome in ("diverged", "failed", "incomplete"):
        if int(row[outcome]):
            tail.append(f"{row[outcome]} {outcome}")
    return f"{head} ({', '.join(tail)})"


def percent(x: float) -> str:
    return f"{x:.1f}"


def radius(x: float) -> str:
    return f"{x:.2f}"


def plain_count(value: str) -> str:
    return fmt_count(float(value)) if value not in ("", "never reached", "incomplete") else value


# --- fragments: each returns Markdown built from the CSVs in ``folder`` ---


def table1(folder: Path) -> str:
    """The paper's three Table 1 cells: the paper's epochs beside ours."""
    targets = read_csv(folder, TABLE1, "targets")
    cells = read_csv(folder, TABLE1, "cells")
    headers = ["optimizer"]
    for target, batch in PAPER_CELLS:
        headers += [f"{target}% @ {batch}: paper", "ours"]
    rows = []
    for label in TABLE1_ORDER:
        row = [OPTIMIZER_NAMES[label]]
        for target, batch in PAPER_CELLS:
            paper = PAPER_TABLE1[label][batch]
            found = pick(targets, label=label, batch_size=batch, target=target)
            ours = to_target_text(found, "epochs", fmt_count)
            if found is not None and int(found["reached"]) == 0:
                cell = pick(cells, label=label, batch_size=batch)
                if cell is not None:
                    ours += f", final test error {stat(cell, 'final_test_error', fmt_percent)}%"
            row += ["unreadable" if paper is None else str(paper), ours]
        rows.append(row)
    return markdown(headers, rows)


def _grid(folder: Path, metric: str, fmt: Callable[[float], str]) -> str:
    targets = read_csv(folder, TABLE1, "targets")
    headers = ["optimizer"] + [f"< {t}% · b{b}" for t in TARGETS for b in BATCHES]
    rows = []
    for label in TABLE1_ORDER:
        row = [OPTIMIZER_NAMES[label]]
        for target in TARGETS:
            for batch in BATCHES:
                row.append(to_target_text(pick(targets, label=label, batch_size=batch, target=target), metric, fmt))
        rows.append(row)
    return markdown(headers, rows)


def table1_epochs(folder: Path) -> str:
    return _grid(folder, "epochs", fmt_count)


def table1_grad_evals(folder: Path) -> str:
    return _grid(folder, "grad_evals", fmt_count)


def table1_seconds(folder: Path) -> str:
    return _grid(folder, "train_seconds", fmt_seconds)


def table1_seeds(folder: Path) -> str:
    """Which seeds each Table 1 cell holds, and how many of them completed."""
    cells = read_csv(folder, TABLE1, "cells")
    headers = ["optimizer", "batch", "seeds", "completed", "incomplete", "final test error (%)"]
    rows = []
    for label in TABLE1_ORDER:
        for batch in BATCHES:
            cell = pick(cells, label=label, batch_size=batch)
            if cell is None:
                continue
            rows.append([
                OPTIMIZER_NAMES[label], batch, cell["seeds"].replace(" ", ", "), cell["completed"],
                cell["incomplete"], stat(cell, "final_test_error", fmt_percent),
            ])
    return markdown(headers, rows)


def lsr1_cpu(folder: Path) -> str:
    """L-SR1's seed 0 rerun on the CPU, against the GPU run of the same seed."""
    cpu = read_csv(folder, LSR1_CPU, "runs")
    gpu = read_csv(folder, TABLE1, "runs")
    headers = ["batch", "status (CPU)", "epochs run (CPU)"] + [f"< {t}%: CPU (GPU)" for t in TARGETS]
    headers += ["best test error (%), CPU"]
    rows = []
    for batch in BATCHES:
        run = pick(cpu, label="lsr1", batch_size=batch, seed="0")
        if run is None:
            continue
        twin = pick(gpu, label="lsr1", batch_size=batch, seed="0")
        row = [batch, run["status"], run["epochs_present"]]
        for target in TARGETS:
            theirs = plain_count(twin[f"epochs_to_{target}"]) if twin else "not run"
            row.append(f"{plain_count(run[f'epochs_to_{target}'])} ({theirs})")
        row.append(fmt_percent(float(run["best_test_error"])))
        rows.append(row)
    return markdown(headers, rows)


def skips(folder: Path) -> str:
    """L-SR1's skipped updates, rejected steps, dropped pairs and final radius per batch size."""
    cells = read_csv(folder, TABLE1, "cells")
    headers = ["batch", "seeds (incomplete)", "steps", "skipped updates (%)", "rejected steps (%)",
               "dropped pairs", "final radius"]
    rows = []
    for batch in BATCHES:
        cell = pick(cells, label="lsr1", batch_size=batch)
        if cell is None:
            continue
        rows.append([
            batch, f"{cell['seeds'].replace(' ', ', ')} ({cell['incomplete']})", stat(cell, "steps", fmt_count),
            stat(cell, "skip_percent", percent), stat(cell, "rejected_percent", percent),
            stat(cell, "dropped_pairs", fmt_count), stat(cell, "radius", radius),
        ])
    return markdown(headers, rows)


def wallclock(folder: Path) -> str:
    """Training seconds of one run at a time on the GPU, and L-SR1's cost against Adam's."""
    cells = read_csv(folder, WALLCLOCK, "cells")
    headers = ["batch", "epochs", "L-SR1 (s)", "Adam (s)", "NAG (s)", "L-SR1 / Adam"]
    rows = []
    for batch in ("1000", "10000"):
        found = {label: pick(cells, label=label, batch_size=batch) for label in TABLE1_ORDER}
        if any(c is None for c in found.values()):
            continue
        seconds = {label: float(c["train_seconds_median"]) for label, c in found.items()}
        rows.append([
            batch, found["lsr1"]["epochs_present_median"],
            *(fmt_seconds(seconds[label]) for label in TABLE1_ORDER),
            f"{seconds['lsr1'] / seconds['adam']:.1f}x",
        ])
    return markdown(headers, rows)


def figure1(folder: Path) -> str:
    """Figure 1's MNIST runs (seed 0, first epochs): final and best test error, epochs to targets."""
    runs = read_csv(folder, FIGURE1, "runs")
    headers = ["optimizer", "batch", "batch norm", "epochs", "final test error (%)", "best test error (%)"]
    headers += [f"< {t}%" for t in TARGETS] + ["skipped updates (%)", "training (s)"]
    rows = []
    order = ["lsr1", "lbfgs-forget5", "nag", "sgd", "adadelta", "momentum"]
    for label in order:
        for batch_norm in ("False", "True"):
            run = pick(runs, label=label, batch_norm=batch_norm)
            if run is None:
                continue
            skip = run["skip_percent"]
            rows.append([
                OPTIMIZER_NAMES.get(label, label), run["batch_size"], "yes" if batch_norm == "True" else "no",
                run["epochs_present"], fmt_percent(float(run["final_test_error"])),
                fmt_percent(float(run["best_test_error"])),
                *(plain_count(run[f"epochs_to_{t}"]) for t in TARGETS),
                percent(float(skip)) if skip else "—", fmt_seconds(float(run["train_seconds"])),
            ])
    return markdown(headers, rows)


# --- fragments from committed run records (run.json + epochs.csv) ---
#
# Runs made for the CPU reproduction commit their whole record under ``runs/<suite>/<run id>/``, so
# these fragments read the same files ``lsr1bench report`` does, not a summary of them.

RUNS = "runs"
CPU_SUITE = "repro-table1-mnist-cpu"
SKIP_SUITE = "repro-skip-rate-mnist-cpu"
CPU_ORDER = ["lsr1", "adam", "adam-defaults", "nag"]
CPU_NAMES = {
    **OPTIMIZER_NAMES,
    "adam": "Adam (lr 0.003)",
    "nag": "NAG (lr 0.003)",
    "adam-defaults": "Adam (defaults, lr 0.001)",
}
# the CPU Table 1's rows, in order: label -> row name
CPU_ROWS = {label: CPU_NAMES[label] for label in CPU_ORDER}


def suite_runs(folder: Path, suite: str) -> list[RunSummary]:
    """Every run record of ``suite`` under ``folder/runs``; ReportError if the folder is
    missing or holds a record that does not read (a committed record must)."""
    path = folder / RUNS / suite
    if not path.is_dir():
        raise ReportError(f"{path}: no such folder (a generated region reads its run records)")
    results = load_results(path)
    if results.unreadable:
        raise ReportError(f"{path}: unreadable run records: {'; '.join(results.unreadable)}")
    return results.runs


def _target(runs: list[RunSummary], value: str) -> Target:
    for run in runs:
        for target in run.targets:
            if target.metric == "test_error" and f"{target.value:g}" == value:
                return target
    raise ReportError(f"no run targets a test error of {value}%")


def _runs_of(runs: list[RunSummary], label: str, batch: str) -> list[RunSummary]:
    """The runs of one cell (optimizer label, batch size), by seed."""
    chosen = [r for r in runs if r.key.label == label and str(r.key.batch_size) == batch]
    return sorted(chosen, key=lambda r: r.seed or 0)


def _cell(runs: list[RunSummary], label: str, batch: str) -> CellSummary | None:
    chosen = _runs_of(runs, label, batch)
    return summarize_cells(chosen)[0] if chosen else None


def _seconds_per_epoch(run: RunSummary) -> float | None:
    if not (run.final_train_seconds and run.epochs_present):
        return None
    return run.final_train_seconds / run.epochs_present


def _threads(runs: list[RunSummary]) -> str:
    """The torch thread counts ``runs`` trained with ("1, 2" where they differ, "?" for a
    record that does not say): a run given fewer threads, two runs sharing the cores, takes
    more seconds per epoch, so the seconds columns are read next to this."""
    return ", ".join(sorted({str(r.environment.get("torch_threads", "?")) for r in runs}))


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}"


def _paper_cells(runs: list[RunSummary], names: dict[str, str], always: tuple[str, ...] = ()) -> str:
    """The paper's three Table 1 cells against ``runs``: a row for each label of ``names``
    (label -> row name, in order) that ran, and for those in ``always`` even if not (their
    paper figures are those of the optimizer the label starts with)."""
    labels = [label for label in names if label in always or any(r.key.label == label for r in runs)]
    headers = ["optimizer"]
    for target, batch in PAPER_CELLS:
        headers += [f"{target}% @ {batch}: paper", "ours (CPU)"]
    rows = []
    for label in labels:
        paper_figures = paper_row([r for r in runs if r.key.label == label], default=label.split("-")[0])
        if not paper_figures:
            raise ReportError(f"{label!r}: the paper's Table 1 has no row for its optimizer")
        row = [names[label]]
        for target, batch in PAPER_CELLS:
            paper = paper_figures.get(batch)
            cell = _cell(runs, label, batch)
            if cell is None:
                ours = "not run"
            else:
                summary = cell.targets[_target(runs, target)]
                ours = target_text(summary, "epochs", fmt_count)
                if not summary.reached and cell.final_test_error is not None:
                    ours += f", final test error {fmt_stat(cell.final_test_error, fmt_percent)}%"
            row += ["unreadable" if paper is None else str(paper), ours]
        rows.append(row)
    return markdown(headers, rows)


def cpu_table1(folder: Path) -> str:
    """The paper's three Table 1 cells against the CPU rerun with the current optimizer
    (NAG's row always: the paper has it)."""
    return _paper_cells(suite_runs(folder, CPU_SUITE), CPU_ROWS, always=("nag",))


def _outcome(run: RunSummary, target) -> str:
    """Why a run has no epoch for ``target``: not one of its targets (a run that stops at
    its own cell's target never aimed at the others), or the report's outcome."""
    return run.outcome(target) if target in run.targets else "not a target"


def cpu_runs(folder: Path) -> str:
    """Every CPU run: how far it went, its errors, and epochs / gradient evaluations /
    training seconds to each target."""
    runs = suite_runs(folder, CPU_SUITE)
    headers = ["optimizer", "batch", "seed", "status", "epochs run (cap)", "test error after epoch 1 (%)",
               "final test error (%)", "best test error (%)"]
    headers += [f"< {t}%: epochs · grad evals · s" for t in TARGETS]
    headers += ["s / epoch", "torch threads"]
    rows = []
    for label, name in CPU_ROWS.items():
        for batch in BATCHES:
            for run in _runs_of(runs, label, batch):
                row = [name, batch, str(run.seed), run.status,
                       f"{run.epochs_present} ({run.epochs_planned})", _fmt_or(_error_at(run, 1), fmt_percent),
                       _fmt_or(run.final_test_error, fmt_percent), _fmt_or(run.best_test_error, fmt_percent)]
                for value in TARGETS:
                    target = _target(runs, value)
                    hit = run.hits.get(target)
                    if hit is None:  # not reached, or the run did not get that far
                        row.append(_outcome(run, target))
                    else:
                        row.append(f"{hit.epoch} · {fmt_count(hit.grad_evals or 0)} · "
                                   f"{_fmt_or(hit.train_seconds, fmt_seconds)}")
                row += [_fmt_or(_seconds_per_epoch(run), fmt_seconds), _threads([run])]
                rows.append(row)
    return markdown(headers, rows)


def _paper_cells_cost(runs: list[RunSummary], names: dict[str, str]) -> str:
    """Each Table 1 cell of ``runs`` over its seeds (median [min–max]), a row per label of
    ``names`` (label -> row name) and batch size that ran: epochs to the cell's target (with
    how many seeds reached it), the gradient evaluations and training seconds of the seeds
    that reached it, the seconds per epoch with the torch threads the seeds had, and the
    test error after the first epoch."""
    headers = ["optimizer", "batch", "target", "seeds (completed)", "epochs", "grad evals", "training s",
               "s / epoch", "torch threads", "test error after epoch 1 (%)"]
    rows = []
    for label, name in names.items():
        for target_text_value, batch in PAPER_CELLS:
            chosen = _runs_of(runs, label, batch)
            if not chosen:
                continue
            summary = summarize_cells(chosen)[0].targets[_target(runs, target_text_value)]
            per_epoch = Stat.of(_seconds_per_epoch(r) for r in chosen)
            rows.append([
                name, batch, f"{target_text_value}%",
                f"{len(chosen)} ({sum(r.status == 'completed' for r in chosen)})",
                target_text(summary, "epochs", fmt_count), fmt_stat(summary.grad_evals, fmt_count, "—"),
                fmt_stat(summary.train_seconds, fmt_seconds, "—"), fmt_stat(per_epoch, fmt_seconds),
                _threads(chosen), fmt_stat(Stat.of(_error_at(r, 1) for r in chosen), fmt_percent),
            ])
    return markdown(headers, rows)


def cpu_table1_cost(folder: Path) -> str:
    """What reaching each CPU Table 1 cell's target cost (see :func:`_paper_cells_cost`)."""
    return _paper_cells_cost(suite_runs(folder, CPU_SUITE), CPU_ROWS)


def _error_at(run: RunSummary, epoch: int) -> float | None:
    return next((row["test_error"] for row in run.rows if row["epoch"] == epoch), None)


def _fmt_or(value: float | None, fmt: Callable[[float], str]) -> str:
    return "n/a" if value is None else fmt(value)


def _lsr1_runs(folder: Path) -> list[RunSummary]:
    runs = [r for r in suite_runs(folder, CPU_SUITE) if r.key.label == "lsr1"]
    return sorted(runs, key=lambda r: (r.key.batch_size, r.seed or 0))


def cpu_skip_study(folder: Path) -> str:
    """L-SR1 on the CPU runs: what its skip test skipped at r = 1e-8, the steps it rejected,
    the pairs it dropped, and how often its model B had negative curvature."""
    headers = ["batch", "seed", "steps", "steps with no trial point", "skipped updates (%)", "rejected steps (%)",
               "dropped pairs", "steps with B indefinite (%)", "min eigenvalue of B (epoch ends)",
               "cosine p10 / median (last epoch)"]
    rows = []
    for run in _lsr1_runs(folder):
        cosines = "n/a"
        if run.update_cosine_p10 is not None and run.update_cosine_median is not None:
            cosines = f"{run.update_cosine_p10:.3g} / {run.update_cosine_median:.3g}"
        rows.append([
            str(run.key.batch_size), str(run.seed), fmt_count(run.steps or 0), fmt_count(_no_trial(run.rows[-1])),
            _fmt_or(run.skip_percent, percent), _fmt_or(run.rejected_percent, percent),
            fmt_count(run.dropped_pairs or 0),
            _fmt_or(run.negative_curvature_percent, percent), _fmt_or(run.min_eigenvalue, lambda x: f"{x:.3g}"),
            cosines,
        ])
    return markdown(headers, rows)


def _no_trial(row: dict) -> float:
    """Steps that ended with no trial point (the model predicted no decrease, or the point
    was not finite): steps - accepted - rejected."""
    return (row.get("steps") or 0) - (row.get("accepted_steps") or 0) - (row.get("rejected_steps") or 0)


FROZEN_SUITE = "repro-table1-mnist-cpu-frozen"


def frozen_run(folder: Path) -> str:
    """The batch-10000 L-SR1 run that froze before the fix (kept as its own record), epoch by epoch."""
    runs = suite_runs(folder, FROZEN_SUITE)
    headers = ["epoch", "train loss", "test error (%)", "steps", "accepted", "rejected", "no trial point",
               "dropped pairs", "stored pairs", "radius"]
    rows = []
    for run in runs:
        for row in run.rows:
            if (row["epoch"] or 0) < 1:
                continue
            rows.append([
                str(row["epoch"]), f"{row['train_loss']:.4f}", fmt_percent(row["test_error"]), fmt_count(row["steps"]),
                fmt_count(row["accepted_steps"]), fmt_count(row["rejected_steps"]), fmt_count(_no_trial(row)),
                fmt_count(row["dropped_pairs"]), fmt_count(row["stored_pairs"]), radius(row["radius"]),
            ])
    return markdown(headers, rows)


def cpu_skip_rates(folder: Path) -> str:
    """The skip rate each threshold r would have given on the same trajectories: of every
    skip test, the % whose cosine |s^T(y - Bs)| / (||s|| ||y - Bs||) is below r."""
    headers = ["batch", "seed"] + [f"r = {r:g}" for r in SKIP_RATE_THRESHOLDS]
    rows = [
        [str(run.key.batch_size), str(run.seed), *(_pct(steps_weighted_mean(run.rows, c)) for c in SKIP_RATE_COLUMNS)]
        for run in _lsr1_runs(folder)
    ]
    return markdown(headers, rows)


def skip_rate_runs(folder: Path) -> str:
    """L-SR1 at a larger skip threshold against the default r = 1e-8 run of the same cell and seed."""
    base = {(r.key.batch_size, r.seed or 0): r for r in suite_runs(folder, CPU_SUITE) if r.key.label == "lsr1"}
    runs = suite_runs(folder, SKIP_SUITE)
    headers = ["batch", "seed", "r", "status", "epochs run (cap)", "skipped updates (%)", "rejected steps (%)",
               "final test error (%)"]
    headers += [f"< {t}% (epochs)" for t in TARGETS]
    rows = []
    for batch, seed in sorted({(r.key.batch_size, r.seed or 0) for r in runs}):
        pair = [base.get((batch, seed))] + [r for r in runs if r.key.batch_size == batch and (r.seed or 0) == seed]
        for run in pair:
            if run is None:
                continue
            r = run.spec.get("optimizer_params", {}).get("skip_tol", 1e-8)
            row = [str(batch), str(seed), f"{r:g}", run.status, f"{run.epochs_present} ({run.epochs_planned})",
                   _fmt_or(run.skip_percent, percent), _fmt_or(run.rejected_percent, percent),
                   _fmt_or(run.final_test_error, fmt_percent)]
            for value in TARGETS:
                target = _target(runs, value)
                hit = run.hits.get(target)
                row.append(str(hit.epoch) if hit else _outcome(run, target))
            rows.append(row)
    return markdown(headers, rows)


def provenance(folder: Path) -> str:
    """Where and with what each committed suite of run records was made, from its run.json
    files, and how many of its L-SR1 runs were made with the final optimizer (a clean
    commit containing the last change under ``lsr1bench/optim/``, see
    ``optimizer_provenance.py``)."""
    base = folder / RUNS
    if not base.is_dir():
        raise ReportError(f"{base}: no such folder (a generated region reads its run records)")
    try:
        final = optimizer_provenance.final_optimizer_commit()
    except optimizer_provenance.NotAGitCheckout:
        final = None
    lsr1_column = f"L-SR1 runs at the final optimizer ({final[:7]})" if final else "L-SR1 runs at the final optimizer"
    headers = ["suite", "runs (completed)", "seeds", "device", "torch threads", "torch", "commit", "made",
               lsr1_column]
    rows = []
    for suite_dir in sorted(p for p in base.iterdir() if p.is_dir()):
        runs = suite_runs(folder, suite_dir.name)
        lsr1 = [r for r in runs if r.spec.get("optimizer") == "lsr1"]
        if not lsr1:
            at_final = "no L-SR1 runs"
        elif suite_dir.name in optimizer_provenance.KEPT_AS_HISTORY:
            at_final = "kept as the old optimizer's record"
        elif final is None:
            at_final = "unknown (not a git checkout)"
        else:
            good = sum(optimizer_provenance.verdict(r.git_commit, final) is None for r in lsr1)
            at_final = "all" if good == len(lsr1) else f"**{good} of {len(lsr1)}**"
        completed = sum(r.status == "completed" for r in runs)
        seeds = sorted({r.seed for r in runs if r.seed is not None})
        commits = sorted({(r.git_commit or "unknown")[:7] for r in runs})
        days = sorted({(r.started_at or "")[:10] for r in runs} - {""})
        rows.append([
            f"`{suite_dir.name}`", f"{len(runs)} ({completed})", ", ".join(map(str, seeds)),
            ", ".join(sorted({r.device or "unknown" for r in runs})),
            _threads(runs),
            ", ".join(sorted({str(r.versions.get("torch", "?")) for r in runs})),
            ", ".join(commits), ", ".join(days), at_final,
        ])
    return markdown(headers, rows)


ABLATION_CPU_SUITE = "repro-ablation-first-order-cpu"
# The CPU Table 1's labels for the appendix setting, as the ablation's variant names.
ABLATION_REFERENCE = {
    "lsr1": "lsr1 (Table 1)",
    "adam": "adam-lr0.003 (Table 1)",
    "nag": "nag-lr0.003 (Table 1)",
}


def cpu_ablation(folder: Path) -> str:
    """The first-order ablation's cells that were run on the CPU (ablation.py), after the
    appendix setting's rows from the CPU Table 1 (those that ran)."""

    table1 = suite_runs(folder, CPU_SUITE)
    reference: dict[str, list[RunSummary]] = {}
    for label, name in ABLATION_REFERENCE.items():
        runs = [run for run in table1 if run.key.label == label]
        if runs:
            reference[name] = runs
    return ablation_table(folder, ABLATION_CPU_SUITE, reference)


# Table 1 under the reading the paper suites adopted (init: fc-torch), from the ablation's
# CPU runs: their labels, and the row names of the CPU Table 1.
FC_TORCH_NAMES = {
    "lsr1-init_fc-torch": CPU_NAMES["lsr1"],
    "adam-lr0.003-init_fc-torch": CPU_NAMES["adam"],
    "nag-lr0.003-init_fc-torch": CPU_NAMES["nag"],
}


def cpu_table1_fc_torch(folder: Path) -> str:
    """The paper's Table 1 cells against the ablation's ``-init_fc-torch`` runs."""
    return _paper_cells(suite_runs(folder, ABLATION_CPU_SUITE), FC_TORCH_NAMES, always=tuple(FC_TORCH_NAMES))


def cpu_table1_fc_torch_cost(folder: Path) -> str:
    """What reaching each cell's target cost under ``init: fc-torch``."""
    return _paper_cells_cost(suite_runs(folder, ABLATION_CPU_SUITE), FC_TORCH_NAMES)


INIT_SATURATION = "init_saturation.csv"
INIT_NAMES = {
    "appendix": "N(0, 0.1) (Table 1's rows)",
    "fc-torch": "PyTorch's default for FC-500 (fc-torch)",
    "torch": "PyTorch's default everywhere (torch)",
}


def init_saturation(folder: Path) -> str:
    """What each initialisation reading does to the tanh after FC-500 at the start, from
    ``init_saturation.csv`` (written by ``docs/tools/measure_init.py``): per reading, the
    median over the measured seeds, with the range, of the layer's weight std, the share
    of pre-activations beyond |z| > 2 and the mean tanh'."""
    rows = _rows(folder / INIT_SATURATION, "python docs/tools/measure_init.py writes it")

    def spread(values: list[float], fmt: Callable[[float], str]) -> str:
        low, middle, high = fmt(min(values)), fmt(statistics.median(values)), fmt(max(values))
        return middle if low == high else f"{middle} [{low}–{high}]"

    headers = ["FC-500 init", "seeds", "images", "weight std", "share saturated (abs z > 2)", "mean tanh'(z)"]
    table = []
    for init, name in INIT_NAMES.items():
        mine = [row for row in rows if row["init"] == init]
        if not mine:
            continue
        table.append([
            name, str(len(mine)), mine[0]["images"],
            spread([float(r["fc_weight_std"]) for r in mine], lambda x: f"{x:.3f}"),
            spread([100 * float(r["saturated_share"]) for r in mine], lambda x: f"{x:.1f}%"),
            spread([float(r["mean_tanh_derivative"]) for r in mine], lambda x: f"{x:.2f}"),
        ])
    return markdown(headers, table)



# --- curvature: the smallest end-of-epoch eigenvalue of B ---


def _eigenvalue_snapshots(folder: Path) -> list[tuple[float, RunSummary, int]]:
    """Every end-of-epoch snapshot of L-SR1's smallest eigenvalue of B in the CPU Table 1's
    runs: (value, run, epoch), smallest first."""
    found = []
    for run in _lsr1_runs(folder):
        for row in run.rows:
            value = row.get("min_eigenvalue")
            if value is not None and math.isfinite(value) and (row["epoch"] or 0) >= 1:
                found.append((float(value), run, int(row["epoch"] or 0)))
    return sorted(found, key=lambda item: item[0])


def curvature_outlier(folder: Path) -> str:
    """The smallest end-of-epoch eigenvalue over the L-SR1 records of the CPU Table 1, where
    it was taken, and how it compares with the smallest of every other snapshot."""
    snapshots = _eigenvalue_snapshots(folder)
    if len(snapshots) < 2:
        return "Fewer than two end-of-epoch eigenvalue snapshots in the records: nothing to compare."
    (low, run, epoch), (second, other, other_epoch) = snapshots[0], snapshots[1]
    ratio = low / second if second < 0 else math.inf
    return (
        f"The smallest eigenvalue of B over every end-of-epoch snapshot of these runs is {low:.4g} "
        f"(batch {run.key.batch_size}, seed {run.seed}, end of epoch {epoch}); the next smallest of the "
        f"{len(snapshots)} snapshots is {second:.3g} (batch {other.key.batch_size}, seed {other.seed}, end of "
        f"epoch {other_epoch}), so the smallest is {ratio:.0f} times the next."
    )


CURVATURE_PROBE = "curvature_probe.csv"


def curvature_probe(folder: Path) -> str:
    """The per-step probe of the outlier's run (``curvature_probe.csv``, written by
    ``docs/tools/probe_curvature.py``): a table of its steps, then where B's smallest
    eigenvalue was lowest, set against the skip test's cosine of that step's pair and the
    smallest cosine and most negative rank-one term of the SR1 recursion over the pairs
    B then held."""
    path = folder / CURVATURE_PROBE
    rows = _rows(path, "python docs/tools/probe_curvature.py writes it")
    if not rows:
        raise ReportError(f"{path}: no steps")
    headers = ["step", "pair stored", "pairs held", "min eigenvalue of B", "skip test's cosine",
               "its SR1 term", "window's smallest cosine", "window's most negative term (pair)",
               "recursion vs compact B"]
    table = [[r["step"], "yes" if r["stored"] == "1" else "no", r["k"], f"{float(r['min_eigenvalue']):.4g}",
              r["skip_test_cosine"], r["sr1_term"] or "—", r["window_min_cosine"],
              f"{r['window_min_term']} ({r['window_min_term_pair']})", r["recursion_vs_compact"]] for r in rows]
    low = min(rows, key=lambda r: float(r["min_eigenvalue"]))
    held = int(low["k"])
    if low["stored"] == "1":
        pair = (f"The pair that step stored passed the skip test with cosine {low['skip_test_cosine']} (its "
                f"rank-one term {low['sr1_term']})")
    else:
        pair = "That step stored no pair"
    sentence = (
        f"B's smallest eigenvalue is lowest after step {low['step']} ({float(low['min_eigenvalue']):.4g}). "
        f"{pair}; in the SR1 recursion over the {held} pairs B then held, pair "
        f"{low['window_min_term_pair']} of {held} has cosine {low['window_min_cosine']} and a rank-one term of "
        f"{low['window_min_term']}."
    )
    return markdown(headers, table) + "\n\n" + sentence


# --- the claims of section 4.1.4: the evidence each verdict rests on ---


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def _evidence(runs: list[RunSummary], label: str, batch: str, target_value: str) -> str:
    """One cell's evidence: epochs to the target over the seeds that reached it, or, when
    none did, the final test error and how far the runs went."""
    chosen = _runs_of(runs, label, batch)
    if not chosen:
        return "not run"
    level = float(target_value)
    reached = [e for e in (_first_epoch_below(r, level) for r in chosen) if e is not None]
    missed = [r for r in chosen if _first_epoch_below(r, level) is None]
    n = len(chosen)
    if reached:
        text = f"{fmt_stat(Stat.of(reached), fmt_count)} epochs, {len(reached)} of {_seeds(n)}"
        if missed:
            text += (f"; the other {len(missed)} ended at "
                     f"{fmt_stat(Stat.of(r.final_test_error for r in missed), fmt_percent)}% after "
                     f"{fmt_stat(Stat.of(r.epochs_present for r in missed), fmt_count)} epochs")
        return text
    final = fmt_stat(Stat.of(r.final_test_error for r in chosen), fmt_percent)
    epochs = fmt_stat(Stat.of(r.epochs_present for r in chosen), fmt_count)
    return f"not reached, 0 of {_seeds(n)}: final test error {final}% after {epochs} epochs"


def _first_epoch_below(run: RunSummary, level: float, or_equal: bool = False) -> int | None:
    """The first epoch (from 1) whose end-of-epoch test error is below ``level`` (or at it)."""
    for row in run.rows:
        error = row.get("test_error")
        if (row["epoch"] or 0) >= 1 and error is not None and (error < level or (or_equal and error == level)):
            return int(row["epoch"] or 0)
    return None


READINGS = {
    "N(0, 0.1)": (CPU_SUITE, {"lsr1": "lsr1", "adam": "adam", "nag": "nag"}),
    "fc-torch": (ABLATION_CPU_SUITE, {"lsr1": "lsr1-init_fc-torch", "adam": "adam-lr0.003-init_fc-torch",
                                      "nag": "nag-lr0.003-init_fc-torch"}),
}


def claims_evidence(folder: Path) -> str:
    """Per optimizer, reading and Table 1 cell: the evidence the section 4.1.4 verdicts rest
    on (epochs to the cell's target with the seeds that reached it, or the final test error
    where no seed did), and the test error after the first epoch (Adam's initial progress)."""
    headers = ["optimizer", "reading"]
    for target, batch in PAPER_CELLS:
        headers.append(f"{target}% @ {batch}: epochs")
    headers.append("test error after epoch 1 (%), b500 / b1000 / b10000")
    rows = []
    for optimizer in TABLE1_ORDER:
        for reading, (suite, labels) in READINGS.items():
            runs = suite_runs(folder, suite)
            label = labels[optimizer]
            row = [CPU_NAMES[optimizer], reading]
            for target, batch in PAPER_CELLS:
                paper = PAPER_TABLE1[optimizer][batch]
                row.append(f"paper {'unreadable' if paper is None else paper}; ours "
                           f"{_evidence(runs, label, batch, target)}")
            first = [fmt_stat(Stat.of(_error_at(r, 1) for r in _runs_of(runs, label, b)), fmt_percent, "—")
                     for _, b in PAPER_CELLS]
            row.append(" / ".join(first))
            rows.append(row)
    return markdown(headers, rows)


def nag_minibatch(folder: Path) -> str:
    """The paper's "a 20 fold increase in minibatch size did not decrease the speed of
    convergence by the same or higher order of magnitude", for NAG, from the records: per
    reading and seed, the epochs at batch 500 and 10000 to Table 1's loosest target (1.5%),
    and to the lowest test error the batch-10000 run reached within its cap (a level both
    runs reach), with the ratio of the two."""
    headers = ["reading", "seed", "epochs run (cap) b500 / b10000", "< 1.5%: b500", "< 1.5%: b10000",
               "b10000's best test error (%)", "epochs to it: b500", "epochs to it: b10000", "ratio"]
    rows = []
    for reading, (suite, labels) in READINGS.items():
        runs = suite_runs(folder, suite)
        small = {r.seed: r for r in _runs_of(runs, labels["nag"], "500")}
        large = {r.seed: r for r in _runs_of(runs, labels["nag"], "10000")}
        for seed in sorted(set(small) & set(large)):
            a, b = small[seed], large[seed]
            level = b.best_test_error
            ea = _first_epoch_below(a, level, or_equal=True) if level is not None else None
            eb = _first_epoch_below(b, level, or_equal=True) if level is not None else None
            hit_a, hit_b = _first_epoch_below(a, 1.5), _first_epoch_below(b, 1.5)
            rows.append([
                reading, str(seed),
                f"{a.epochs_present} ({a.epochs_planned}) / {b.epochs_present} ({b.epochs_planned})",
                str(hit_a) if hit_a else f"not within {a.epochs_present}",
                str(hit_b) if hit_b else f"not within {b.epochs_present}",
                _fmt_or(level, fmt_percent), str(ea) if ea else "n/a", str(eb) if eb else "n/a",
                f"{eb / ea:.1f}x" if ea and eb else "n/a",
            ])
    return markdown(headers, rows)


# --- Figure 1 on the embedded MNIST subset, the final optimizer ---

FIGURE1_SUITE = "repro-figure1-mnist-embedded-cpu"
FIGURE1_EPOCHS = (1, 5, 10, 20)
FIGURE1_ORDER = ["lsr1", "lbfgs-forget5", "nag", "sgd", "adadelta", "momentum"]


def figure1_embedded(folder: Path) -> str:
    """Figure 1's rerun on the embedded MNIST subset: per method and batch norm, test error
    median [min–max] over the seeds at epochs 1, 5, 10 and 20 (the seeds that got there)."""
    runs = suite_runs(folder, FIGURE1_SUITE)
    headers = ["optimizer", "batch", "batch norm", "seeds (completed)"]
    headers += [f"test error (%), epoch {e}" for e in FIGURE1_EPOCHS]
    rows = []
    labels = sorted({r.key.label for r in runs}, key=lambda x: next(
        (i for i, name in enumerate(FIGURE1_ORDER) if x.startswith(name)), len(FIGURE1_ORDER)))
    for label in labels:
        for batch_norm in (True, False):
            chosen = sorted((r for r in runs if r.key.label == label and r.key.batch_norm == batch_norm),
                            key=lambda r: r.seed or 0)
            if not chosen:
                continue
            name = next((OPTIMIZER_NAMES[k] for k in FIGURE1_ORDER if label.startswith(k)), label)
            row = [name, str(chosen[0].key.batch_size), "yes" if batch_norm else "no",
                   f"{len(chosen)} ({sum(r.status == 'completed' for r in chosen)})"]
            for epoch in FIGURE1_EPOCHS:
                stat_ = Stat.of(_error_at(r, epoch) for r in chosen)
                text = fmt_stat(stat_, fmt_percent, "—")
                if stat_ is not None and stat_.count < len(chosen):
                    text += f" ({stat_.count} of {len(chosen)})"
                row.append(text)
            rows.append(row)
    return markdown(headers, rows)


def _figure1_errors(runs: list[RunSummary], prefix: str, batch_norm: bool, epoch: int) -> list[float]:
    chosen = [r for r in runs if r.key.label.startswith(prefix) and r.key.batch_norm == batch_norm]
    return [e for e in (_error_at(r, epoch) for r in chosen) if e is not None]


def _epochs_text(epochs: list[int]) -> str:
    words = [str(e) for e in epochs]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _compare(runs: list[RunSummary], a: tuple[str, bool], b: tuple[str, bool]) -> tuple[list[int], str]:
    """The epochs of FIGURE1_EPOCHS at which ``a``'s median test error is below ``b``'s, and
    a sentence on the last epoch both have: the seeds of each, and whether every seed of
    ``a`` is below every seed of ``b`` there."""
    below, last = [], None
    for epoch in FIGURE1_EPOCHS:
        ea, eb = _figure1_errors(runs, *a, epoch), _figure1_errors(runs, *b, epoch)
        if not ea or not eb:
            continue
        last = (epoch, ea, eb)
        if statistics.median(ea) < statistics.median(eb):
            below.append(epoch)
    if last is None:
        return below, "no epoch both have"
    epoch, ea, eb = last
    order = "every seed of the first below every seed of the second" if max(ea) < min(eb) else (
        "every seed of the second below every seed of the first" if max(eb) < min(ea) else "their seeds overlapping")
    return below, (f"at epoch {epoch}, {fmt_percent(statistics.median(ea))}% against "
                   f"{fmt_percent(statistics.median(eb))}% (medians of {_seeds(len(ea))} and {_seeds(len(eb))}), "
                   f"{order}")


def figure1_claims(folder: Path) -> str:
    """The paper's reading of Figure 1 (section 4.1.4) against the rerun's records: at which
    of the table's epochs one median test error is below the other, and the last epoch's
    seeds. Verdict words are the prose's; these are the facts they rest on."""
    runs = suite_runs(folder, FIGURE1_SUITE)
    lines = []
    pairs = [(f"L-SR1 against L-BFGS, {'with' if bn else 'without'} batch norm", "L-SR1's median test error",
              ("lsr1", bn), ("lbfgs", bn)) for bn in (True, False)]
    pairs += [(f"{name} with batch norm against without", "the median with batch norm", (prefix, True), (prefix, False))
              for prefix, name in (("lsr1", "L-SR1"), ("lbfgs", "L-BFGS"))]
    for title, subject, a, b in pairs:
        below, last = _compare(runs, a, b)
        if last == "no epoch both have":
            lines.append(f"- {title}: no epoch of the table has records of both.")
            continue
        common = [e for e in FIGURE1_EPOCHS if _figure1_errors(runs, *a, e) and _figure1_errors(runs, *b, e)]
        if below == common:
            shown = f"at every epoch both have ({_epochs_text(common)})"
        else:
            shown = f"at epochs {_epochs_text(below)} of {_epochs_text(common)}" if below else (
                f"at none of epochs {_epochs_text(common)}")
        lines.append(f"- {title}: {subject} is the lower {shown}; {last}.")
    return "\n".join(lines)

FRAGMENTS: dict[str, Callable[[Path], str]] = {
    "init-saturation": init_saturation,
    "provenance": provenance,
    "cpu-table1": cpu_table1,
    "cpu-runs": cpu_runs,
    "cpu-table1-cost": cpu_table1_cost,
    "cpu-skip-study": cpu_skip_study,
    "cpu-skip-rates": cpu_skip_rates,
    "frozen-run": frozen_run,
    "skip-rate-runs": skip_rate_runs,
    "cpu-ablation": cpu_ablation,
    "cpu-table1-fc-torch": cpu_table1_fc_torch,
    "cpu-table1-fc-torch-cost": cpu_table1_fc_torch_cost,
    "table1": table1,
    "table1-seeds": table1_seeds,
    "table1-epochs": table1_epochs,
    "table1-grad-evals": table1_grad_evals,
    "table1-seconds": table1_seconds,
    "table1-lsr1-cpu": lsr1_cpu,
    "skips": skips,
    "gpu-wallclock": wallclock,
    "figure1": figure1,
    "figure1-embedded": figure1_embedded,
    "figure1-claims": figure1_claims,
    "curvature-outlier": curvature_outlier,
    "curvature-probe": curvature_probe,
    "claims-evidence": claims_evidence,
    "nag-minibatch": nag_minibatch,
}


# --- the doc ---


def render_doc(text: str, folder: Path, source: str = "the doc") -> str:
    """``text`` with every marked region replaced by its fragment (see doc_regions)."""
    return render_regions(text, FRAGMENTS, folder, source)


def update_doc(doc: Path = DOC, folder: Path | None = None) -> bool:
    """Rewrite ``doc``'s generated regions from the records in ``folder`` (default: the
    ``reproduction`` folder beside it), atomically; returns whether anything changed."""
    return update_regions(doc, FRAGMENTS, doc.parent / "reproduction" if folder is None else folder)


def main(argv: list[str] | None = None) -> int:
    return doc_regions.main(sys.argv[1:] if argv is None else argv, "docs/tools/reproduction.py", DOC, update_doc)


if __name__ == "__main__":
    sys.exit(main())
