"""Generated regions of docs/PEERS.md, from the run records committed beside it.

``docs/peers/runs/<suite>/<run id>/{run.json, epochs.csv}`` are the files ``lsr1bench run
--output docs/peers/runs`` wrote; every number in a generated region is read from them
(through the package's record API, as ``lsr1bench report`` reads them), and
:func:`doc_regions.update_regions` rewrites each ``<!-- lsr1bench:begin NAME -->`` region
of the document with the fragment of that name. Two suites have records there, and each
has its own set of regions:

* ``peers-*``: ``docs/peers/short-cpu.yaml`` (one epoch on the embedded subset);
* ``suite-*``: ``suites/peers.yaml`` (Table 1's setting, full MNIST, the CPU epoch cap).

The fragments of a suite:

* ``setup``: what was run (suite, model, data, epochs, batch sizes, seeds), and how many of
  the suite's runs have a completed record, naming the cells still pending;
* ``cost``: per batch size and entry, the step's own cost per epoch: steps, gradient
  evaluations, loss-only evaluations and Hessian-vector products per step, training seconds
  per epoch, and the test error after the last epoch (median over seeds, with the range);
* ``tuned``: for each learning-rate sweep, the setting picked on the validation split
  (``lsr1bench.reporting.tuned``, the rule ``lsr1bench report`` applies);
* ``targets``: epochs, training seconds and gradient evaluations to each target;
* ``profile``: Dolan-More performance profiles over the (batch size, seed) problems,
  of the final test error and of the training seconds;
* ``verdict``: per batch size, which entry leads on test error and on time, and who
  reached each target within the epochs run.

An entry is an optimizer of the suite without a sweep (``lsr1``), or, for a swept one, the
sweep's point at the package's default (``soap (default)``) and the point picked on the
validation split (``soap (tuned)``). A cell is reported only when every run it needs has a
completed record (every seed; for a tuned entry, every point of its sweep, since the pick
depends on all of them); batch sizes with a pending cell get no profile and no verdict, and
the document says which runs are missing. Records are never mixed across suites.

Regenerate from the repository's root with::

    python docs/tools/peers.py            # docs/PEERS.md from docs/peers/runs/

Documentation tooling, not part of the installed package. It reads the two suites' YAML to
know which runs each expects. Never imports torch.
"""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import doc_regions
from doc_regions import update_regions

from lsr1bench import records
from lsr1bench.grid import RunSpec, expand
from lsr1bench.registry.table import OPTIMIZER_TABLE
from lsr1bench.reporting.runs import ReportError, load_results
from lsr1bench.reporting.tuned import TunedChoice, choose
from lsr1bench.spec import load_suite

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "PEERS.md"
RECORDS = ROOT / "docs" / "peers" / "runs"
SHORT = "peers-short-cpu"  # docs/peers/short-cpu.yaml
FULL = "peers"  # suites/peers.yaml
SUITE_FILES = {SHORT: ROOT / "docs" / "peers" / "short-cpu.yaml", FULL: ROOT / "suites" / "peers.yaml"}
PAPER = "lsr1"  # the paper's L-SR1 (lsr1bench.optim.LSR1)
TAUS = (1.0, 1.1, 1.25, 1.5, 2.0, 4.0)
DEFAULT, TUNED = " (default)", " (tuned)"


class Run:
    """One run's record: its spec and epoch rows."""

    def __init__(self, record: records.RunRecord, rows: list[dict[str, Any]]) -> None:
        spec = record.spec
        self.id = record.run_id
        self.suite = record.suite
        self.status = record.status
        self.device = record.device
        self.torch = record.versions.get("torch", "?")
        self.spec = spec
        self.method = spec["optimizer"]
        self.label = spec.get("label", self.method)
        self.batch = int(spec["batch_size"])
        self.seed = int(spec["seed"])
        self.rows = [row for row in rows if (row.get("epoch") or 0) >= 1]
        self.last = self.rows[-1] if self.rows else {}


def load(folder: Path) -> list[Run]:
    """Every run recorded under ``folder`` (one suite folder or a folder of them)."""
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such folder")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir())
    suites = [folder] if any((p / records.RUN_FILE).is_file() for p in subdirs) else subdirs
    runs = []
    for suite in suites:
        for path, record in records.iter_runs(suite):
            runs.append(Run(record, records.read_epochs(path)))
    if not runs:
        raise ReportError(f"{folder}: no run records (run.json) found")
    return runs


def completed(runs: list[Run]) -> list[Run]:
    """The runs that ran to their end: completed, or stopped as diverged (an outcome of the
    method and its setting, not a run still to make), with at least one trained epoch."""
    return [run for run in runs if run.status in records.FINISHED and run.rows]


@cache
def expected_runs(suite: str) -> tuple[RunSpec, ...]:
    """The runs the suite's YAML expands to (the records are checked against them).

    Only the run list is needed, not the peers' packages, so the suite is read without
    checking that they import: the document regenerates (and its test runs) without the
    ``peers`` extra."""
    if suite not in SUITE_FILES:
        raise ReportError(f"records of suite {suite!r}: this document knows {', '.join(sorted(SUITE_FILES))}")
    return tuple(expand(load_suite(SUITE_FILES[suite], check_packages=False)))


def is_default(spec: RunSpec) -> bool:
    """Whether a sweep's point is the package's default for every swept setting."""
    settings = OPTIMIZER_TABLE[spec.optimizer].settings
    return all(key in settings and settings[key].default == value for key, value in spec.sweep.items())


@dataclass
class Cell:
    """One row of the tables: an entry at one batch size, and the runs behind it."""

    batch: int
    entry: str
    runs: list[Run] = field(default_factory=list)  # its seeds' records, once complete
    needs: list[str] = field(default_factory=list)  # the run ids it needs
    missing: list[str] = field(default_factory=list)  # of those, the ones without a completed record
    choice: TunedChoice | None = None  # tuned entries: the pick on the validation split

    @property
    def complete(self) -> bool:
        return not self.missing


@dataclass
class Suite:
    """One suite's records, as cells in the suite's order (the paper's L-SR1 first)."""

    name: str
    runs: list[Run]
    expected: tuple[RunSpec, ...]
    cells: list[Cell]

    @property
    def batches(self) -> list[int]:
        return sorted({cell.batch for cell in self.cells})

    @property
    def entries(self) -> list[str]:
        seen: list[str] = []
        for cell in self.cells:
            if cell.entry not in seen:
                seen.append(cell.entry)
        bases = [e.removesuffix(DEFAULT).removesuffix(TUNED) for e in seen]

        def order(entry: str) -> tuple:
            base = entry.removesuffix(DEFAULT).removesuffix(TUNED)
            return (entry != PAPER, bases.index(base), entry.endswith(TUNED))

        return sorted(seen, key=order)

    def complete_batches(self) -> list[int]:
        return [b for b in self.batches if all(c.complete for c in self.cells if c.batch == b)]

    def ready(self) -> list[Cell]:
        order = {e: i for i, e in enumerate(self.entries)}
        return sorted((c for c in self.cells if c.complete), key=lambda c: (c.batch, order[c.entry]))


def read_suite(folder: Path) -> Suite:
    """The records of one suite folder (``<records>/<suite name>``, maybe not there yet),
    checked against the runs its YAML expects."""
    name = folder.name
    runs = load(folder) if folder.is_dir() and any(records.iter_runs(folder)) else []
    others = sorted({run.suite for run in runs} - {name})
    if others:
        raise ReportError(f"{folder}: records of suite(s) {', '.join(others)} in the folder of suite {name!r}")
    expected = expected_runs(name)
    ids = {spec.run_id for spec in expected}
    strays = sorted(run.id for run in runs if run.id not in ids)
    if strays:
        raise ReportError(
            f"{folder}: records of runs that {SUITE_FILES[name].name} does not define: {', '.join(strays)}"
        )
    done = {run.id: run for run in completed(runs)}
    cells: dict[tuple[int, str], Cell] = {}

    def cell(batch: int, entry: str) -> Cell:
        return cells.setdefault((batch, entry), Cell(batch, entry))

    sweeps: dict[tuple[int, str], list[RunSpec]] = defaultdict(list)
    for spec in expected:
        if spec.sweep_of is None:
            entries = [spec.optimizer]
        else:
            sweeps[(spec.batch_size, spec.sweep_of)].append(spec)
            entries = [spec.optimizer + DEFAULT] if is_default(spec) else []
            cell(spec.batch_size, spec.optimizer + TUNED)  # filled below
        for entry in entries:
            c = cell(spec.batch_size, entry)
            c.needs.append(spec.run_id)
            if spec.run_id in done:
                c.runs.append(done[spec.run_id])
            else:
                c.missing.append(spec.run_id)
    for (batch, _), members in sweeps.items():
        c = cell(batch, members[0].optimizer + TUNED)
        c.needs = [spec.run_id for spec in members]
        c.missing = [rid for rid in c.needs if rid not in done]
        if c.missing:
            continue
        summaries = load_results(folder, run_ids=set(c.needs)).runs
        (c.choice,) = choose(summaries)
        if c.choice.chosen is not None:
            c.runs = [done[spec.run_id] for spec in members if spec.label == c.choice.chosen]
    return Suite(name, runs, expected, list(cells.values()))


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


def _per_step(run: Run, column: str) -> float | None:
    steps, value = run.last.get("steps"), run.last.get(column)
    return value / steps if steps and value is not None else None


def _per_epoch(run: Run, column: str) -> float | None:
    epochs, value = run.last.get("epoch"), run.last.get(column)
    return value / epochs if epochs and value is not None else None


def _values(cell: list[Run], get: Callable[[Run], float | None]) -> list[float]:
    return [v for v in (get(run) for run in cell) if v is not None]


def _pending(suite: Suite) -> str:
    """A paragraph naming the cells not reported yet, or '' when none is."""
    parts = []
    for batch in suite.batches:
        cells = [c for c in suite.cells if c.batch == batch]
        waiting = [c for c in cells if not c.complete]
        if not waiting:
            continue
        needs = {rid for c in cells for rid in c.needs}
        have = len(needs - {rid for c in cells for rid in c.missing})
        if len(waiting) == len(cells):
            parts.append(f"batch {batch}: every entry ({have} of its {len(needs)} runs recorded)")
        else:
            items = ", ".join(f"`{c.entry}` ({len(c.needs) - len(c.missing)}/{len(c.needs)} runs)" for c in waiting)
            parts.append(f"batch {batch}: {items}")
    return "\n\nNot reported until every run they need is recorded: " + "; ".join(parts) + "." if parts else ""


def fragment_setup(folder: Path) -> str:
    suite = read_suite(folder)
    spec = suite.expected[0]
    done = {run.id for run in completed(suite.runs)}
    targets = ", ".join(f"{t:g} %" for t in spec.targets.get("test_error", ()))
    batches = sorted({s.batch_size for s in suite.expected})
    where = f", on `{suite.runs[0].device}` (torch {suite.runs[0].torch})" if suite.runs else ""
    lines = [
        f"- Suite `{suite.name}` (`{SUITE_FILES[suite.name].relative_to(ROOT)}`): {spec.model}"
        f"{' with batch norm' if spec.batch_norm else ''} (init {spec.model_init}) on `{spec.dataset}`,"
        f" {spec.epochs} epoch(s), validation split {spec.validation_split}, L2 {spec.weight_decay:g}.",
        f"- Batch sizes {', '.join(str(b) for b in batches)};"
        f" seeds {', '.join(str(s) for s in sorted({s.seed for s in suite.expected}))};"
        f" entries {', '.join(f'`{e}`' for e in suite.entries)}; targets (test error) {targets}.",
        f"- {len(done)} of the suite's {len(suite.expected)} runs finished (completed or diverged){where}.",
    ]
    counts = [
        f"batch {b}: {sum(s.run_id in done for s in suite.expected if s.batch_size == b)}"
        f" of {sum(s.batch_size == b for s in suite.expected)}"
        for b in batches
        if any(s.run_id not in done for s in suite.expected if s.batch_size == b)
    ]
    if counts:
        lines.append(f"- Still to run; recorded so far: {'; '.join(counts)}.")
    return "\n".join(lines)


def fragment_cost(folder: Path) -> str:
    suite = read_suite(folder)
    headers = [
        "batch", "entry", "steps/epoch", "gradient evals/step", "loss-only evals/step", "HVPs/step",
        "train s/epoch", "test error % (last epoch)", "seeds",
    ]  # fmt: skip
    rows = []
    for cell in suite.ready():
        runs = cell.runs
        rows.append(
            [
                str(cell.batch),
                f"`{cell.entry}`",
                _spread(_values(runs, lambda r: _per_epoch(r, "steps")), lambda x: f"{x:g}"),
                _spread(_values(runs, lambda r: _per_step(r, "grad_evals")), lambda x: f"{x:.2f}"),
                _spread(_values(runs, lambda r: _per_step(r, "loss_evals")), lambda x: f"{x:.2f}"),
                _spread(_values(runs, lambda r: _per_step(r, "hvp_evals")), lambda x: f"{x:.2f}"),
                _spread(_values(runs, lambda r: _per_epoch(r, "train_seconds")), lambda x: f"{x:.1f}"),
                _spread(_values(runs, lambda r: r.last.get("test_error")), lambda x: f"{x:.2f}"),
                str(len(runs)),
            ]
        )
    return (_table(headers, rows) if rows else "No cell has all its runs recorded yet.") + _pending(suite)


def _setting(sweep: dict[str, Any]) -> str:
    """A sweep point by its values (``lr 0.01``), not by its run label."""
    return ", ".join(
        f"{key} {value:g}" if isinstance(value, float) else f"{key} {value}" for key, value in sweep.items()
    )


def fragment_tuned(folder: Path) -> str:
    suite = read_suite(folder)
    lines = []
    for cell in sorted((c for c in suite.cells if c.entry.endswith(TUNED)), key=lambda c: (c.batch, c.entry)):
        head = f"- `{cell.entry}` at batch {cell.batch}:"
        if cell.choice is None:
            lines.append(
                f"{head} pending, {len(cell.needs) - len(cell.missing)} of the sweep's {len(cell.needs)} runs recorded."
            )
            continue
        choice = cell.choice
        if choice.chosen is None:
            lines.append(f"{head} no setting picked: {choice.reason}")
            continue
        points = {spec.label: _setting(spec.sweep) for spec in suite.expected if spec.run_id in cell.needs}
        order = list(points)  # the suite's order of the sweep, not the labels' string order
        scores = sorted(choice.scores, key=lambda score: order.index(score[0]))
        seen = "; ".join(f"{points[label]}: {text}" for label, text in scores)
        warnings = "".join(f"\n  - warning: {edge}" for edge in choice.edges)
        lines.append(f"{head} **{points[choice.chosen]}** ({seen}){warnings}")
    if not lines:
        return "This suite sweeps no setting: every entry runs at its defaults."
    criterion = next((c.choice.criterion for c in suite.cells if c.choice is not None), None)
    head = f"Picked by {criterion}.\n\n" if criterion else ""
    return head + "\n".join(lines)


def _hit(run: Run, target: float) -> dict[str, Any] | None:
    for row in run.rows:
        if row.get("test_error") is not None and row["test_error"] < target:
            return row
    return None


def _targets(suite: Suite) -> list[float]:
    return list(suite.expected[0].targets.get("test_error", ()))


def fragment_targets(folder: Path) -> str:
    suite = read_suite(folder)
    targets = _targets(suite)
    headers = ["batch", "entry"] + [f"< {t:g} %: epochs / train s / gradient evals" for t in targets]
    rows = []
    for cell in suite.ready():
        texts = []
        for target in targets:
            hits = [h for h in (_hit(run, target) for run in cell.runs) if h is not None]
            if not hits:
                texts.append(f"not reached (0/{len(cell.runs)})")
                continue
            texts.append(
                f"{_median([h['epoch'] for h in hits]):g} / {_median([h['train_seconds'] for h in hits]):.1f} / "
                f"{_median([h['grad_evals'] for h in hits]):g} ({len(hits)}/{len(cell.runs)})"
            )
        rows.append([str(cell.batch), f"`{cell.entry}`", *texts])
    return (_table(headers, rows) if rows else "No cell has all its runs recorded yet.") + _pending(suite)


def profile(entries: list[tuple[str, Any]], get: Callable[[Any], float | None]) -> dict[str, list[float]]:
    """Dolan & More (2002): for each entry the fraction of problems (batch size, seed) on
    which its value is within a factor tau of the best entry's, for each tau in TAUS.
    ``entries``: (entry name, run) pairs. An entry without a value on a problem counts as
    never within."""
    problems: dict[tuple[int, int], dict[str, float]] = defaultdict(dict)
    names: list[str] = []
    for name, run in entries:
        if name not in names:
            names.append(name)
        value = get(run)
        if value is not None and value > 0:
            problems[(run.batch, run.seed)][name] = value
    out = {}
    for name in names:
        fractions = []
        for tau in TAUS:
            within = sum(
                1 for values in problems.values() if name in values and values[name] <= tau * min(values.values())
            )
            fractions.append(within / len(problems) if problems else 0.0)
        out[name] = fractions
    return out


def fragment_profile(folder: Path) -> str:
    suite = read_suite(folder)
    batches = suite.complete_batches()
    if not batches:
        return "No batch size has all its runs recorded yet; the profile waits for one."
    pairs = [(c.entry, run) for c in suite.ready() if c.batch in batches for run in c.runs]
    n = len({(run.batch, run.seed) for _, run in pairs})
    parts = []
    for title, get in (
        ("test error after the last epoch", lambda r: r.last.get("test_error")),
        ("training seconds per epoch", lambda r: _per_epoch(r, "train_seconds")),
    ):
        table = profile(pairs, get)
        headers = ["entry"] + [f"tau = {t:g}" for t in TAUS]
        rows = [[f"`{m}`"] + [f"{f:.2f}" for f in fractions] for m, fractions in table.items()]
        parts.append(
            f"Fraction of the {n} problems (batch size x seed) within tau of the best, {title}"
            f" (batch sizes {', '.join(str(b) for b in batches)}):\n\n" + _table(headers, rows)
        )
    return "\n\n".join(parts)


def fragment_verdict(folder: Path) -> str:
    suite = read_suite(folder)
    complete = suite.complete_batches()
    lines = []
    for batch in suite.batches:
        if batch not in complete:
            cells = [c for c in suite.cells if c.batch == batch]
            have = len({rid for c in cells for rid in c.needs} - {rid for c in cells for rid in c.missing})
            need = len({rid for c in cells for rid in c.needs})
            lines.append(f"- Batch {batch}: no verdict; {have} of its {need} runs are recorded.")
            continue
        cells = {c.entry: c for c in suite.ready() if c.batch == batch}
        errors = {e: _median(_values(c.runs, lambda r: r.last.get("test_error"))) for e, c in cells.items()}
        seconds = {e: _median(_values(c.runs, lambda r: _per_epoch(r, "train_seconds"))) for e, c in cells.items()}
        ranked = sorted((e, m) for m, e in errors.items() if e is not None)
        fastest = min((s, m) for m, s in seconds.items() if s is not None)
        rank = [m for _, m in ranked].index(PAPER) + 1 if PAPER in errors else None
        leader = ranked[0][1]
        who = "the paper's L-SR1 leads" if leader == PAPER else f"`{leader}` leads"
        reached = []
        for target in _targets(suite):
            everyone = []
            for entry, cell in cells.items():
                hits = [_hit(run, target) for run in cell.runs]
                if cell.runs and all(h is not None for h in hits):
                    everyone.append(
                        (_median([h["train_seconds"] for h in hits]), entry, _median([h["epoch"] for h in hits]))
                    )
            if everyone:
                names = ", ".join(f"`{e}` ({ep:g} epoch(s), {s:.0f} s)" for s, e, ep in sorted(everyone))
                reached.append(f"{target:g} % in every seed: {names}")
            else:
                reached.append(f"no entry reached {target:g} % in every seed")
        lines.append(
            f"- Batch {batch}: on test error after the last epoch {who} ({ranked[0][0]:.2f} %, median over seeds); "
            f"the paper's L-SR1 is {_ordinal(rank)} of {len(ranked)} at {errors[PAPER]:.2f} %. "
            f"Cheapest epoch: `{fastest[1]}` ({fastest[0]:.1f} s); the paper's L-SR1 takes {seconds[PAPER]:.1f} s. "
            f"Reached within the epochs run (fastest first, median training seconds): {'; '.join(reached)}."
        )
    return "\n".join(lines)


def _ordinal(n: int | None) -> str:
    if n is None:
        return "absent"
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _of(suite: str, fragment: Callable[[Path], str]) -> Callable[[Path], str]:
    return lambda folder: fragment(folder / suite)


_PER_SUITE: dict[str, Callable[[Path], str]] = {
    "setup": fragment_setup,
    "cost": fragment_cost,
    "targets": fragment_targets,
    "profile": fragment_profile,
    "verdict": fragment_verdict,
}
FRAGMENTS: dict[str, Callable[[Path], str]] = {
    **{f"peers-{name}": _of(SHORT, fn) for name, fn in _PER_SUITE.items()},
    **{f"suite-{name}": _of(FULL, fn) for name, fn in _PER_SUITE.items()},
    "suite-tuned": _of(FULL, fragment_tuned),
}


def update_doc(doc: Path = DOC, folder: Path | None = None) -> bool:
    return update_regions(doc, FRAGMENTS, folder or RECORDS)


def main(argv: list[str] | None = None) -> int:
    return doc_regions.main(sys.argv[1:] if argv is None else argv, "docs/tools/peers.py", DOC, update_doc)


if __name__ == "__main__":
    sys.exit(main())
