"""The paper's Table 1 (MNIST with batch normalisation), as quoted numbers.

Ramamurthy & Duffy, Table 1: epochs to surpass a target test error, one (target %, batch
size) cell per column. Adam's value at batch 500 is unreadable in the OCR text we have,
hence None. These are the paper's numbers, not ours; the reproduction and the ablation
tables both read them from here.
"""

from __future__ import annotations

from lsr1bench.reporting.runs import RunSummary

# (target test error in %, batch size): the cells of Table 1's MNIST rows.
PAPER_CELLS = [("1.1", "500"), ("1.2", "1000"), ("1.5", "10000")]
PAPER_TABLE1 = {
    "lsr1": {"500": 5, "1000": 6, "10000": 8},
    "adam": {"500": None, "1000": 3, "10000": 10},
    "nag": {"500": 35, "1000": 37, "10000": 194},
}


def paper_row(runs: list[RunSummary], default: str | None = None) -> dict[str, int | None]:
    """The paper's Table 1 row (batch -> epochs) for the optimizer of ``runs``, or of
    ``default`` when there are none; empty for runs of two optimizers or one the paper
    does not have."""
    found = {str(run.spec.get("optimizer")) for run in runs} or {default}
    return PAPER_TABLE1.get(found.pop(), {}) if len(found) == 1 else {}
