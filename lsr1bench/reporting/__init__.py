"""The reporting stage: run records -> tables, plots and the regression gate.

One public face for everything downstream of the records on disk::

    from lsr1bench.reporting import build_report, write_report, main_table, export_baseline
    from lsr1bench.reporting import compare_paths, to_markdown, Tolerances
    from lsr1bench.reporting import plot_results            # loads matplotlib on first use

Inside the package, ``runs`` reads records into per-run summaries, ``cells`` aggregates
them over seeds (and reads / writes baseline files), ``tables`` lays cells out as Markdown
and CSV, ``report`` writes report.md, ``plots`` draws the figures and ``compare`` is the
gate. Nothing here imports torch, and matplotlib is imported only when a plot is drawn.
"""

from __future__ import annotations

from typing import Any

from lsr1bench.reporting.compare import CellDiff, Comparison, Tolerances, compare, compare_paths, to_markdown
from lsr1bench.reporting.report import (
    Report,
    WrittenReport,
    build_report,
    export_baseline,
    load_cells,
    main_table,
    missing_lines,
    render_markdown,
    write_report,
)
from lsr1bench.reporting.runs import ReportError

__all__ = [
    "CellDiff",
    "Comparison",
    "Report",
    "ReportError",
    "Tolerances",
    "WrittenReport",
    "build_report",
    "compare",
    "compare_paths",
    "export_baseline",
    "load_cells",
    "main_table",
    "missing_lines",
    "plot_results",
    "render_markdown",
    "to_markdown",
    "write_report",
]


def __getattr__(name: str) -> Any:
    # matplotlib takes a second to import: load the plots module only when asked for it
    if name == "plot_results":
        from lsr1bench.reporting.plots import plot_results

        return plot_results
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
