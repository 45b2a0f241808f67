"""The first-order ablation (suites/repro/ablation_first_order.yaml) as one table.

One row per variant (the runs' label). For each of Table 1's MNIST cells (1.1% test error
at minibatch 500, 1.2% at 1000, 1.5% at 10000): our epochs to that cell's target, median
[min–max] over the seeds that reached it with (k/n); the paper's epochs for the variant's
optimizer (L-SR1, Adam or NAG); and a verdict:

* ``faster than the paper``: every seed reached the target in fewer epochs than the
  paper's (a setting that overshoots the paper's speed does not explain it either);
* ``matches the paper``: otherwise, the median over *all* seeds, a seed that never reached
  the target counting as slower than any number, is at most the paper's epochs;
* ``slower``: it is above, though some seed reached the target;
* ``never reached``: no seed did; ``diverged``: no seed did because every one diverged
  (NaN or inf loss); ``not finished``: not decided while runs are incomplete;
* ``no paper number`` (Adam at 500 is unreadable in the text we have), ``not run``.

The results are read from ``FOLDER/runs/repro-ablation-first-order/``, where
``lsr1bench run suites/repro/ablation_first_order.yaml --output FOLDER/runs`` puts them.
``reference`` rows, named by the caller, come first: runs of another suite (the CPU Table 1's
appendix setting, for one) shown for comparison under the same verdicts::

    python docs/tools/ablation.py FOLDER

Never imports torch.
"""

from __future__ import annotations

import math
import statistics
import sys
from pathlib import Path

from paper_table1 import PAPER_CELLS, paper_row

from lsr1bench.reporting.cells import CellSummary, TargetSummary, summarize_cells
from lsr1bench.reporting.runs import DIVERGED, INCOMPLETE, ReportError, RunSummary, Target, load_results
from lsr1bench.reporting.tables import NO_TARGET, NOT_RUN, fmt_count, markdown, target_text

__all__ = ["SUITE", "ablation_table"]

SUITE = "repro-ablation-first-order"

FASTER = "faster than the paper"
MATCHES = "matches the paper"
SLOWER = "slower"
NEVER_REACHED = "never reached"
ALL_DIVERGED = "diverged"
NOT_FINISHED = "not finished"
NO_PAPER_NUMBER = "no paper number"


def verdict(summary: TargetSummary | None, paper: int | None) -> str:
    """Our epochs to one cell's target against the paper's (see the module docstring)."""
    if summary is None:
        return NO_TARGET
    if paper is None:
        return NO_PAPER_NUMBER
    every_seed = [math.inf if epochs is None else epochs for epochs in summary.epochs_by_seed]
    if every_seed and max(every_seed) < paper:
        return FASTER
    if every_seed and statistics.median(every_seed) <= paper:
        return MATCHES
    if summary.outcomes.get(INCOMPLETE):
        return NOT_FINISHED
    if summary.reached:
        return SLOWER
    return ALL_DIVERGED if summary.outcomes.get(DIVERGED, 0) == summary.n else NEVER_REACHED


def ablation_table(
    folder: Path, suite: str = SUITE, reference: dict[str, list[RunSummary]] | None = None
) -> str:
    """The Markdown table of the ablation's runs under ``folder / "runs" / suite`` (the
    whole suite's, or a subset suite's such as the CPU one), after the ``reference`` rows
    (row name -> that row's runs, of one optimizer and label) in their given order."""
    results_dir = Path(folder) / "runs" / suite
    if not results_dir.is_dir():
        raise ReportError(
            f"{results_dir}: no such folder; the ablation's results go there with "
            f"lsr1bench run suites/repro/ablation_first_order.yaml --output {Path(folder) / 'runs'}"
        )
    results = load_results(results_dir)
    by_label: dict[str, list[RunSummary]] = {}
    for run in results.runs:
        by_label.setdefault(run.key.label, []).append(run)
    named = {**(reference or {}), **{label: by_label[label] for label in sorted(by_label)}}

    headers = ["variant"]
    for target, batch in PAPER_CELLS:
        headers += [f"< {target}% · b{batch}", f"paper · b{batch}", f"verdict · b{batch}"]
    return markdown(headers, [_row(name, runs) for name, runs in named.items()])


def _row(name: str, runs: list[RunSummary]) -> list[str]:
    """One variant's row: its epochs to each Table 1 cell's target against the paper's."""
    cells: dict[int, CellSummary] = {}
    for cell in summarize_cells(runs):
        if cell.key.batch_size in cells:
            raise ReportError(f"ablation row {name!r}: two cells at batch {cell.key.batch_size}")
        cells[cell.key.batch_size] = cell
    paper_figures = paper_row(runs)
    row = [name]
    for target, batch in PAPER_CELLS:
        cell = cells.get(int(batch))
        paper = paper_figures.get(batch)
        if cell is None:
            row += [NOT_RUN, _paper_text(paper), NOT_RUN]
            continue
        summary = cell.targets.get(Target("test_error", float(target)))
        row += [target_text(summary, "epochs", fmt_count), _paper_text(paper), verdict(summary, paper)]
    return row


def _paper_text(paper: int | None) -> str:
    return NO_TARGET if paper is None else str(paper)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python docs/tools/ablation.py FOLDER  (reads FOLDER/runs/" + SUITE + ")")
        return 2
    try:
        print(ablation_table(Path(args[0])))
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
