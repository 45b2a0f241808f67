"""Generated regions of docs/REPRODUCTION.md, from the summary CSVs committed beside it.

A Markdown file marks each generated region::

    <!-- lsr1bench:begin table1 -->
    ...replaced on every regeneration...
    <!-- lsr1bench:end table1 -->

and :func:`update_doc` rewrites every such region with the fragment of that name, built
from the CSVs in ``docs/reproduction/`` (the ``report_{targets,cells,runs}.csv`` files that
``lsr1bench report`` wrote for each reproduction run, renamed). The text between regions
is left alone. The per-run records (run.json, epochs.csv) of those runs were never
committed, so these CSVs are the whole record; a number the doc needs that they do not
hold cannot be generated, and does not belong in the doc.

Regenerate with either of::

    lsr1bench report docs/reproduction --update-doc docs/REPRODUCTION.md
    python -m lsr1bench.reporting.reproduction docs/REPRODUCTION.md

Never imports torch.
"""

from __future__ import annotations

import csv
import re
import sys
from collections.abc import Callable
from pathlib import Path

from lsr1bench.records import atomic_write_text
from lsr1bench.reporting.runs import ReportError
from lsr1bench.reporting.tables import fmt_count, fmt_percent, fmt_seconds, markdown

__all__ = ["FRAGMENTS", "render_doc", "update_doc"]

Row = dict[str, str]

BEGIN = re.compile(r"<!-- lsr1bench:begin ([A-Za-z0-9_.-]+) -->")
END_TEMPLATE = "<!-- lsr1bench:end {name} -->"

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

# Ramamurthy & Duffy, Table 1, MNIST with batch norm: epochs to surpass the target test
# error, one (target %, batch size) per column. Adam's value at batch 500 is unreadable
# in the text we have, hence None. These are the paper's numbers, quoted, not ours.
PAPER_CELLS = [("1.1", "500"), ("1.2", "1000"), ("1.5", "10000")]
PAPER_TABLE1 = {
    "lsr1": {"500": 5, "1000": 6, "10000": 8},
    "adam": {"500": None, "1000": 3, "10000": 10},
    "nag": {"500": 35, "1000": 37, "10000": 194},
}


# --- reading the committed CSVs ---


def read_csv(folder: Path, stem: str, kind: str) -> list[Row]:
    path = folder / f"{stem}_{kind}.csv"
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file (the generated regions read it)") from None


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


FRAGMENTS: dict[str, Callable[[Path], str]] = {
    "table1": table1,
    "table1-seeds": table1_seeds,
    "table1-epochs": table1_epochs,
    "table1-grad-evals": table1_grad_evals,
    "table1-seconds": table1_seconds,
    "table1-lsr1-cpu": lsr1_cpu,
    "skips": skips,
    "gpu-wallclock": wallclock,
    "figure1": figure1,
}


# --- the doc ---


def render_doc(text: str, folder: Path, source: str = "the doc") -> str:
    """``text`` with every marked region replaced by its fragment; raises ReportError on a
    region with no end marker or a name with no fragment."""
    out: list[str] = []
    position = 0
    found = False
    for match in BEGIN.finditer(text):
        if match.start() < position:
            continue  # a begin marker inside a region already replaced
        name = match.group(1)
        line = text.count("\n", 0, match.start()) + 1
        if name not in FRAGMENTS:
            known = ", ".join(sorted(FRAGMENTS))
            raise ReportError(f"{source}:{line}: unknown fragment {name!r} (known: {known})")
        end_marker = END_TEMPLATE.format(name=name)
        end = text.find(end_marker, match.end())
        if end < 0:
            raise ReportError(f"{source}:{line}: {match.group(0)} has no {end_marker} after it")
        out.append(text[position : match.end()])
        out.append("\n" + FRAGMENTS[name](folder).rstrip("\n") + "\n")
        position = end
        found = True
    if not found:
        raise ReportError(f"{source}: no <!-- lsr1bench:begin NAME --> marker")
    out.append(text[position:])
    return "".join(out)


def update_doc(doc: Path, folder: Path | None = None) -> bool:
    """Rewrite ``doc``'s generated regions from the CSVs in ``folder`` (default: the
    ``reproduction`` folder beside it), atomically; returns whether anything changed."""
    folder = doc.parent / "reproduction" if folder is None else folder
    try:
        text = doc.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{doc}: no such file") from None
    new = render_doc(text, folder, str(doc))
    if new == text:
        return False
    atomic_write_text(doc, new)
    return True


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (1, 2):
        print("usage: python -m lsr1bench.reporting.reproduction DOC.md [CSV_FOLDER]", file=sys.stderr)
        return 2
    try:
        changed = update_doc(Path(args[0]), Path(args[1]) if len(args) == 2 else None)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args[0]}: {'updated' if changed else 'already up to date'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
