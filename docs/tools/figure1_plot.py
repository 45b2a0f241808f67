"""Figure 1's rerun on the embedded MNIST subset, drawn from its committed records.

Writes ``docs/reproduction/figure1_mnist_embedded_test_error_vs_epoch.png``: test error
against epochs, a panel per (batch norm, batch size), a line per method (median over the
seeds, the band their min–max), read from
``docs/reproduction/runs/repro-figure1-mnist-embedded-cpu/``::

    python docs/tools/figure1_plot.py [RECORDS_FOLDER]     # default: docs/reproduction

The table beside it in docs/REPRODUCTION.md is the ``figure1-embedded`` fragment of
``reproduction.py``, from the same records.
"""

from __future__ import annotations

import sys
from pathlib import Path

from reproduction import FIGURE1_SUITE, suite_runs

from lsr1bench.reporting.plots import save_figure, suite_figure

FOLDER = Path(__file__).resolve().parents[1] / "reproduction"
PNG = FOLDER / "figure1_mnist_embedded_test_error_vs_epoch.png"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    runs = suite_runs(Path(argv[0]) if argv else FOLDER, FIGURE1_SUITE)
    save_figure(suite_figure(runs, "test_error", "epoch"), PNG)
    print(f"{PNG.relative_to(FOLDER.parent.parent)}: {len(runs)} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
