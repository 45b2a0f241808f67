"""Generated regions of docs/PEERS.md, from the run records committed beside it.

``docs/peers/runs/<suite>/<run id>/{run.json, epochs.csv}`` are the files ``lsr1bench run
--output docs/peers/runs`` wrote; every number in a generated region is read from them
(through the package's record API, as ``lsr1bench report`` reads them), and
:func:`doc_regions.update_regions` rewrites each ``<!-- lsr1bench:begin NAME -->`` region
of the document with the fragment of that name:

* ``peers-setup``: what was run (suite, model, data, epochs, batch sizes, seeds, runs);
* ``peers-cost``: per batch size and method, the step's own cost per epoch: steps, gradient
  evaluations, loss-only evaluations and Hessian-vector products per step, training seconds
  per epoch, and the test error after the last epoch (median over seeds, with the range);
* ``peers-targets``: epochs, training seconds and gradient evaluations to each target;
* ``peers-profile``: Dolan-More performance profiles over the (batch size, seed) problems,
  of the final test error and of the training seconds;
* ``peers-verdict``: per batch size, which method leads on test error and on time.

Regenerate from the repository's root with::

    python docs/tools/peers.py            # docs/PEERS.md from docs/peers/runs/

Documentation tooling, not part of the installed package. Never imports torch.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import doc_regions
from doc_regions import update_regions

from lsr1bench import records
from lsr1bench.reporting.runs import ReportError

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "PEERS.md"
RECORDS = ROOT / "docs" / "peers" / "runs"
PAPER = "lsr1"  # the paper's L-SR1 (lsr1bench.optim.LSR1)
TAUS = (1.0, 1.1, 1.25, 1.5, 2.0, 4.0)


class Run:
    """One run's record: its spec and last epoch row."""

    def __init__(self, record: records.RunRecord, rows: list[dict[str, Any]]) -> None:
        spec = record.spec
        self.id = record.run_id
        self.suite = record.suite
        self.status = record.status
        self.device = record.device
        self.torch = record.versions.get("torch", "?")
        self.spec = spec
        self.method = spec["optimizer"]
        self.batch = int(spec["batch_size"])
        self.seed = int(spec["seed"])
        self.rows = [row for row in rows if (row.get("epoch") or 0) >= 1]
        self.last = self.rows[-1] if self.rows else {}


def load(folder: Path) -> list[Run]:
    """Every completed run under ``folder`` (one suite folder or a folder of them)."""
    suites = [folder] if (folder / records.RUN_FILE).exists() else sorted(p for p in folder.iterdir() if p.is_dir())
    runs = []
    for suite in suites:
        for path, record in records.iter_runs(suite):
            runs.append(Run(record, records.read_epochs(path)))
    if not runs:
        raise ReportError(f"{folder}: no run records (run.json) found")
    return runs


def completed(runs: list[Run]) -> list[Run]:
    return [run for run in runs if run.status == "completed" and run.rows]


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _spread(values: list[float], fmt: Callable[[float], str]) -> str:
    if not values:
        return "n/a"
    text = fmt(statistics.median(values))
    return text if len(values) == 1 or min(values) == max(values) else f"{text} ({fmt(min(values))}-{fmt(max(values))})"


def _table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _methods(runs: list[Run]) -> list[str]:
    """The paper's L-SR1 first, then the others by name (the order of the run ids)."""
    seen: list[str] = []
    for run in runs:
        if run.method not in seen:
            seen.append(run.method)
    return sorted(seen, key=lambda m: (m != PAPER, seen.index(m)))


def _by_cell(runs: list[Run]) -> dict[tuple[int, str], list[Run]]:
    """The completed runs by (batch size, method); a failed or unfinished run is in no cell."""
    cells: dict[tuple[int, str], list[Run]] = defaultdict(list)
    for run in completed(runs):
        cells[(run.batch, run.method)].append(run)
    return cells


def _per_step(run: Run, column: str) -> float | None:
    steps, value = run.last.get("steps"), run.last.get(column)
    return value / steps if steps and value is not None else None


def _per_epoch(run: Run, column: str) -> float | None:
    epochs, value = run.last.get("epoch"), run.last.get(column)
    return value / epochs if epochs and value is not None else None


def _values(cell: list[Run], get: Callable[[Run], float | None]) -> list[float]:
    return [v for v in (get(run) for run in cell) if v is not None]


def fragment_setup(folder: Path) -> str:
    runs = load(folder)
    spec = runs[0].spec
    completed = sum(run.status == "completed" for run in runs)
    targets = ", ".join(f"{t:g} %" for t in spec["targets"].get("test_error", []))
    return "\n".join(
        [
            f"- Suite `{runs[0].suite}`: {spec['model']}"
            f"{' with batch norm' if spec['batch_norm'] else ''} (init {spec['model_init']}) on `{spec['dataset']}`,"
            f" {spec['epochs']} epoch(s), validation split {spec['validation_split']}, L2 {spec['weight_decay']:g}.",
            f"- Batch sizes {', '.join(str(b) for b in sorted({r.batch for r in runs}))};"
            f" seeds {', '.join(str(s) for s in sorted({r.seed for r in runs}))};"
            f" methods {', '.join(f'`{m}`' for m in _methods(runs))}; targets (test error) {targets}.",
            f"- {len(runs)} runs, {completed} completed, on `{runs[0].device}` (torch {runs[0].torch}).",
        ]
    )


def fragment_cost(folder: Path) -> str:
    runs = load(folder)
    cells = _by_cell(runs)
    headers = [
        "batch", "method", "steps/epoch", "gradient evals/step", "loss-only evals/step", "HVPs/step",
        "train s/epoch", "test error % (last epoch)", "seeds",
    ]  # fmt: skip
    rows = []
    for batch in sorted({r.batch for r in runs}):
        for method in _methods(runs):
            cell = cells.get((batch, method), [])
            if not cell:
                continue
            rows.append(
                [
                    str(batch),
                    f"`{method}`",
                    _spread(_values(cell, lambda r: _per_epoch(r, "steps")), lambda x: f"{x:g}"),
                    _spread(_values(cell, lambda r: _per_step(r, "grad_evals")), lambda x: f"{x:.2f}"),
                    _spread(_values(cell, lambda r: _per_step(r, "loss_evals")), lambda x: f"{x:.2f}"),
                    _spread(_values(cell, lambda r: _per_step(r, "hvp_evals")), lambda x: f"{x:.2f}"),
                    _spread(_values(cell, lambda r: _per_epoch(r, "train_seconds")), lambda x: f"{x:.1f}"),
                    _spread(_values(cell, lambda r: r.last.get("test_error")), lambda x: f"{x:.2f}"),
                    str(len(cell)),
                ]
            )
    return _table(headers, rows)


def _hit(run: Run, target: float) -> dict[str, Any] | None:
    for row in run.rows:
        if row.get("test_error") is not None and row["test_error"] < target:
            return row
    return None


def fragment_targets(folder: Path) -> str:
    runs = load(folder)
    cells = _by_cell(runs)
    targets = runs[0].spec["targets"].get("test_error", [])
    headers = ["batch", "method"] + [f"< {t:g} %: epochs / train s / gradient evals" for t in targets]
    rows = []
    for batch in sorted({r.batch for r in runs}):
        for method in _methods(runs):
            cell = cells.get((batch, method), [])
            if not cell:
                continue
            texts = []
            for target in targets:
                hits = [h for h in (_hit(run, target) for run in cell) if h is not None]
                if not hits:
                    texts.append(f"not reached (0/{len(cell)})")
                    continue
                texts.append(
                    f"{_median([h['epoch'] for h in hits]):g} / {_median([h['train_seconds'] for h in hits]):.1f} / "
                    f"{_median([h['grad_evals'] for h in hits]):g} ({len(hits)}/{len(cell)})"
                )
            rows.append([str(batch), f"`{method}`", *texts])
    return _table(headers, rows)


def profile(runs: list[Run], get: Callable[[Run], float | None]) -> dict[str, list[float]]:
    """Dolan & More (2002): for each method the fraction of problems (batch size, seed) on
    which its value is within a factor tau of the best method's, for each tau in TAUS. A
    method without a value on a problem counts as never within."""
    problems: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    for run in completed(runs):
        value = get(run)
        if value is not None and value > 0:
            problems[(run.batch, run.seed)][run.method] = value
    out = {}
    for method in _methods(runs):
        fractions = []
        for tau in TAUS:
            within = sum(
                1 for values in problems.values() if method in values and values[method] <= tau * min(values.values())
            )
            fractions.append(within / len(problems) if problems else 0.0)
        out[method] = fractions
    return out


def fragment_profile(folder: Path) -> str:
    runs = load(folder)
    n = len({(r.batch, r.seed) for r in completed(runs)})
    parts = []
    for title, get in (
        ("test error after the last epoch", lambda r: r.last.get("test_error")),
        ("training seconds per epoch", lambda r: _per_epoch(r, "train_seconds")),
    ):
        table = profile(runs, get)
        headers = ["method"] + [f"tau = {t:g}" for t in TAUS]
        rows = [[f"`{m}`"] + [f"{f:.2f}" for f in fractions] for m, fractions in table.items()]
        parts.append(
            f"Fraction of the {n} problems (batch size x seed) within tau of the best, {title}:\n\n"
            + _table(headers, rows)
        )
    return "\n\n".join(parts)


def fragment_verdict(folder: Path) -> str:
    runs = load(folder)
    cells = _by_cell(runs)
    lines = []
    for batch in sorted({r.batch for r in runs}):
        errors = {
            m: _median(_values(cells[(batch, m)], lambda r: r.last.get("test_error")))
            for m in _methods(runs)
            if (batch, m) in cells
        }
        seconds = {
            m: _median(_values(cells[(batch, m)], lambda r: _per_epoch(r, "train_seconds")))
            for m in _methods(runs)
            if (batch, m) in cells
        }
        ranked = sorted((e, m) for m, e in errors.items() if e is not None)
        fastest = min((s, m) for m, s in seconds.items() if s is not None)
        rank = [m for _, m in ranked].index(PAPER) + 1 if PAPER in errors else None
        leader = ranked[0][1]
        who = "the paper's L-SR1 leads" if leader == PAPER else f"`{leader}` leads"
        lines.append(
            f"- Batch {batch}: on test error after the last epoch {who} ({ranked[0][0]:.2f} %, median over seeds); "
            f"the paper's L-SR1 is {_ordinal(rank)} of {len(ranked)} at {errors[PAPER]:.2f} %. "
            f"Cheapest epoch: `{fastest[1]}` ({fastest[0]:.1f} s); the paper's L-SR1 takes {seconds[PAPER]:.1f} s."
        )
    return "\n".join(lines)


def _ordinal(n: int | None) -> str:
    if n is None:
        return "absent"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


FRAGMENTS: dict[str, Callable[[Path], str]] = {
    "peers-setup": fragment_setup,
    "peers-cost": fragment_cost,
    "peers-targets": fragment_targets,
    "peers-profile": fragment_profile,
    "peers-verdict": fragment_verdict,
}


def update_doc(doc: Path = DOC, folder: Path | None = None) -> bool:
    return update_regions(doc, FRAGMENTS, folder or RECORDS)


def main(argv: list[str] | None = None) -> int:
    return doc_regions.main(sys.argv[1:] if argv is None else argv, "docs/tools/peers.py", DOC, update_doc)


if __name__ == "__main__":
    sys.exit(main())
