"""``lsr1bench report``: run records -> report.md, CSV tables, plots and a baseline file.

The tables follow the paper's Table 1 (epochs to surpass a target test error, a row per
optimizer, columns grouped by model / dataset / batch norm, then target, then batch
size), with targets on any recorded metric (test error, test loss, train loss), and add
the same layout for training wall-clock seconds and gradient evaluations
(second-order methods evaluate the closure twice per step), the final and best test error,
and the skip statistics of the quasi-Newton runs (section 4.1.4 of the paper reports
MNIST with batch norm skipping 7% to over 60% of the updates).

Never imports torch: records are read with :mod:`lsr1bench.records`.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lsr1bench.records import atomic_write_text
from lsr1bench.reporting import profiles as perf
from lsr1bench.reporting import tables
from lsr1bench.reporting.cells import (
    CellSummary,
    baseline_dict,
    cells_from_baseline,
    summarize_cells,
)
from lsr1bench.reporting.runs import ReportError, Results, load_results
from lsr1bench.reporting.tuned import TunedChoice, choose, tuned_cells

__all__ = [
    "Report",
    "ReportError",
    "WrittenReport",
    "build_report",
    "export_baseline",
    "load_cells",
    "main_table",
    "render_markdown",
    "write_report",
]

REPORT_FILE = "report.md"
TARGETS_CSV = "report_targets.csv"
CELLS_CSV = "report_cells.csv"
RUNS_CSV = "report_runs.csv"
PROFILES_CSV = "report_profiles.csv"
PLOTS_FOLDER = "plots"

SPREAD_NOTE = (
    "Over seeds: median [min–max] (the spread is left out when all seeds agree). "
    "In the to-target tables the median and spread are over the seeds that reached the "
    "target, and (k/n) says how many of the n seeds did; a setting no seed reached reads "
    "never reached / diverged / failed / not reached yet, never a number. "
    "Epoch 0 is the evaluation before training and never counts. "
    '"—": the target is not among these runs\' targets; "not run": no run of that setting.'
)


@dataclass
class Report:
    """The results of one folder, summarized per cell."""

    results: Results
    cells: list[CellSummary]
    tuned: list[TunedChoice] = field(default_factory=list)

    @property
    def multi_suite(self) -> bool:
        return len(self.results.suites) > 1


@dataclass
class WrittenReport:
    report_md: Path
    csv_files: list[Path]
    plot_files: list[Path] = field(default_factory=list)


def build_report(results_dir: str | Path, run_ids: Collection[str] | None = None) -> Report:
    """Read and summarize a suite's output folder, a folder of suites, or one run folder
    (only the runs named in ``run_ids``, if given)."""
    results = load_results(Path(results_dir), run_ids)
    cells = summarize_cells(results.runs)
    choices = choose(results.runs)
    return Report(results=results, cells=cells + tuned_cells(cells, choices), tuned=choices)


def tuned_section(report: Report) -> str:
    """What each sweep's tuned row is, and by which criterion; empty without sweeps."""
    if not report.tuned:
        return ""
    lines = ["Tuned baselines: each sweep's setting is chosen on the validation split, never the test set."]
    for criterion in dict.fromkeys(choice.criterion for choice in report.tuned):
        lines.append(f"Criterion: {criterion}.")
        lines.extend(choice.line() for choice in report.tuned if choice.criterion == criterion)
    lines.append("The tables show the chosen setting's test-set rows as '<label> (tuned)'.")
    return "\n".join(lines) + "\n"


def _grouped_tables(report: Report, render: Any) -> list[str]:
    parts: list[str] = []
    for group, cells in tables.groups(report.cells).items():
        headers, rows = render(cells)
        if not rows:
            continue
        parts.append(f"### {tables.group_title(group, report.multi_suite)}\n")
        parts.append(tables.markdown(headers, rows) + "\n")
    return parts


NO_TARGETS = "No run has targets (set `targets:` in the suite: test errors, or test_loss / train_loss).\n"


def _target_tables(report: Report, metric: str, fmt: Any) -> list[str]:
    parts = _grouped_tables(report, lambda cells: tables.target_table(cells, metric, fmt))
    return parts or [NO_TARGETS]


def main_table(report: Report) -> str:
    """The epochs-to-target tables (the paper's Table 1), as Markdown, for the terminal,
    followed by the tuned baselines' choices and criterion when there are sweeps."""
    text = "\n".join(_target_tables(report, "epochs", tables.fmt_count))
    tuned = tuned_section(report)
    return f"{text}\n{tuned}" if tuned else text


def _counts_line(report: Report) -> str:
    runs = report.results.runs
    statuses: dict[str, int] = defaultdict(int)
    for run in runs:
        statuses["diverged" if run.diverged else run.status] += 1
    missing_epochs = sum(run.incomplete and run.status == "completed" for run in runs)
    parts = [f"{count} {status}" for status, count in sorted(statuses.items())]
    if missing_epochs:
        parts.append(f"{missing_epochs} with epochs missing")
    if report.results.unreadable:
        parts.append(f"{len(report.results.unreadable)} unreadable")
    return f"{len(runs)} runs in {len(report.cells)} cells ({', '.join(parts)})"


def missing_lines(report: Report) -> list[str]:
    """What is missing or incomplete: runs still going, epochs or seeds missing, bad files."""
    lines = [f"- unreadable: {reason}" for reason in report.results.unreadable]
    for run in report.results.runs:
        if run.problems:
            lines.append(f"- `{run.run_id}`: {'; '.join(run.problems)}")
    seeds_by_suite: dict[str, set[int]] = defaultdict(set)
    for cell in report.cells:
        seeds_by_suite[cell.key.suite].update(cell.seeds)
    for cell in report.cells:
        absent = sorted(seeds_by_suite[cell.key.suite] - set(cell.seeds))
        if absent:
            seeds = ", ".join(str(s) for s in absent)
            lines.append(f"- {cell.key.describe()}: no run for seed {seeds} (other cells of the suite have it)")
    return lines


def _warning_lines(report: Report) -> list[str]:
    lines = []
    for cell in report.cells:
        if cell.mixed_fields:
            lines.append(
                f"- {cell.key.describe()}: its runs differ in {', '.join(cell.mixed_fields)}, "
                "not only in the seed; give the settings distinct labels"
            )
    return lines


def render_markdown(report: Report, plot_files: list[Path] | None = None, base: Path | None = None) -> str:
    """The whole report.md; plot paths are written relative to ``base``."""
    results = report.results
    devices = sorted({run.device for run in results.runs if run.device})
    commits = sorted({run.git_commit[:12] for run in results.runs if run.git_commit})
    out = [
        f"# lsr1bench report: {', '.join(results.suites)}\n",
        f"{_counts_line(report)}. Devices: {', '.join(devices) or 'unknown'}. "
        f"Commits: {', '.join(commits) or 'unknown'}.\n",
        f"{SPREAD_NOTE}\n",
        *(["## Tuned baselines\n", tuned_section(report)] if report.tuned else []),
        "## Epochs to target\n",
        "The first epoch whose test error (or loss) is below the target.\n",
        *_target_tables(report, "epochs", tables.fmt_count),
        "## Training wall-clock seconds to target\n",
        "Cumulative training time (evaluation excluded) at the epoch that surpassed the target; "
        "it depends on the machine.\n",
        *_target_tables(report, "train_seconds", tables.fmt_seconds),
        "## Gradient evaluations to target\n",
        "Cumulative forward+backward passes; L-SR1 and L-BFGS evaluate the closure twice or "
        "more per step, so this is the fair cost comparison with first-order methods.\n",
        *_target_tables(report, "grad_evals", tables.fmt_count),
        "## Final and best test error, final train loss\n",
        "Final values are at the last recorded epoch of each run; a diverged run has none "
        "(it is counted in runs). Best test error is the lowest over epochs >= 1.\n",
        *_grouped_tables(report, tables.final_table),
    ]
    skips = _grouped_tables(report, tables.skip_table)
    out.append("## Skipped updates (quasi-Newton runs)\n")
    if skips:
        out.append(
            "Skipped updates % = skipped_updates / steps at the last epoch (the SR1 "
            "denominator was too small, so the pair was not used); rejected % = rejected "
            "trust-region steps / steps; dropped pairs and the final radius at the last epoch. "
            "L-SR1's model: the % of steps whose B had a negative eigenvalue (the paper's case "
            "for SR1), the smallest eigenvalue of B at any epoch's end, and the 10th percentile "
            "and median of the skip test's |s^T(y - Bs)| / (||s|| ||y - Bs||) in the last epoch "
            "(the test skips a pair when this is below r = skip_tol).\n"
        )
        out.extend(skips)
    else:
        out.append("No run records skip statistics.\n")
    out.extend(_profile_sections(report))
    if plot_files:
        out.append("## Plots\n")
        for path in plot_files:
            shown = path.relative_to(base) if base is not None else path
            # Markdown viewers show PNG and SVG inline; a PDF is a link
            image = "" if path.suffix == ".pdf" else "!"
            out.append(f"{image}[{path.stem}]({shown.as_posix()})\n")
    missing = missing_lines(report)
    out.append("## Missing or incomplete\n")
    out.append("\n".join(missing) + "\n" if missing else "Nothing: every run finished.\n")
    warnings = _warning_lines(report)
    if warnings:
        out.append("## Warnings\n")
        out.append("\n".join(warnings) + "\n")
    return "\n".join(out)


PROFILE_NOTE = (
    "Dolan-Moré performance profiles over the cells: a problem is a (model, dataset, batch norm, "
    "batch size, target) and its cost for a label the median over seeds of the epochs, training "
    "seconds or gradient evaluations to the target, a seed that never reached it counting as +inf. "
    "rho(tau) is the share of problems a label solves within tau times the best label's cost; the "
    "score is AlgoPerf's, the area under rho from tau = 1 to 4 divided by 3 (1: best on every "
    "problem; 0: never within 4x of the best). Each entry: score (rho at tau = 1, 2 and 4). "
    'README, "Performance profiles".'
)


def _profile_sections(report: Report) -> list[str]:
    """A profile table per suite with at least one problem some label reached."""
    parts: list[str] = []
    for suite in report.results.suites:
        runs = [run for run in report.results.runs if run.key.suite == suite]
        found = perf.profiles(runs)
        if not any(p.problems or p.unsolved or p.incomplete for p in found):
            continue
        headers, rows = perf.profile_table(found)
        counts = "; ".join(
            f"{perf.COSTS[p.cost]}: {len(p.problems)} problems"
            + (f", {len(p.unsolved)} reached by no label" if p.unsolved else "")
            + (f", {len(p.incomplete)} without runs of every label" if p.incomplete else "")
            for p in found
        )
        if report.multi_suite:
            parts.append(f"### {suite}\n")
        parts += [tables.markdown(headers, rows) + "\n", f"Problems: {counts}.\n"]
    if not parts:
        return []
    return ["## Performance profiles\n", f"{PROFILE_NOTE}\n", *parts]


def profiles_csv(report: Report) -> tuple[list[str], list[list[Any]]]:
    """Every label's ratio on every problem, per cost (inf: never reached), for other tools."""
    headers = ["suite", "model", "dataset", "batch_norm", "batch_size", "target_metric", "target", "cost", "label",
               "ratio_to_best"]  # fmt: skip
    rows: list[list[Any]] = []
    for suite in report.results.suites:
        runs = [run for run in report.results.runs if run.key.suite == suite]
        for profile in perf.profiles(runs):
            for index, problem in enumerate(profile.problems):
                _, model, dataset, batch_norm, batch_size, target = problem
                for label in profile.labels:
                    rows.append([suite, model, dataset, batch_norm, batch_size, target.metric, target.value,
                                 profile.cost, label, profile.ratios[label][index]])  # fmt: skip
    return headers, rows


def _write_csv(path: Path, headers: list[str], rows: list[list[Any]]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(headers)
    writer.writerows(rows)
    atomic_write_text(path, text.getvalue())


def write_report(
    report: Report, out_dir: str | Path | None = None, plots: bool = True, fmt: str = "png"
) -> WrittenReport:
    """Write report.md, the CSV tables and (unless ``plots`` is false) the plots, in ``fmt``
    (png, pdf or svg).

    ``out_dir`` defaults to the results folder itself ("next to the results").
    """
    out = Path(out_dir) if out_dir is not None else report.results.source
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"{out}: cannot create the output folder ({exc})") from exc
    csv_files = []
    for name, (headers, rows) in (
        (TARGETS_CSV, tables.targets_csv(report.cells)),
        (CELLS_CSV, tables.cells_csv(report.cells)),
        (RUNS_CSV, tables.runs_csv(report.results.runs)),
        (PROFILES_CSV, profiles_csv(report)),
    ):
        _write_csv(out / name, headers, rows)
        csv_files.append(out / name)
    plot_files: list[Path] = []
    if plots:
        from lsr1bench.reporting.plots import plot_results  # matplotlib is slow to import; only here

        plot_files = plot_results(report.results.runs, out / PLOTS_FOLDER, fmt)
    report_md = out / REPORT_FILE
    atomic_write_text(report_md, render_markdown(report, plot_files, base=out))
    return WrittenReport(report_md=report_md, csv_files=csv_files, plot_files=plot_files)


def export_baseline(report: Report, path: str | Path) -> Path:
    """Write the cells' summaries as a baseline file for ``lsr1bench compare``."""
    path = Path(path)
    data = baseline_dict(report.cells, source=str(report.results.source))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(data, indent=1) + "\n")  # a killed export keeps the old baseline
    except OSError as exc:
        raise ReportError(f"{path}: cannot write the baseline ({exc})") from exc
    return path


def load_cells(source: str | Path) -> tuple[list[CellSummary], Report | None]:
    """Cells from a results folder (summarized now) or a baseline JSON file.

    Returns the cells and, for a folder, its Report (for what is missing there).
    """
    source = Path(source)
    if source.is_file():
        try:
            data = json.loads(source.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{source}: not a readable baseline JSON file ({exc})") from exc
        return cells_from_baseline(data, str(source)), None
    report = build_report(source)
    return report.cells, report
