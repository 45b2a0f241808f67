"""``lsr1bench compare BASE CURRENT``: match cells, print a Markdown diff, gate regressions.

BASE and CURRENT are results folders or baseline files (``lsr1bench report DIR
--export-baseline FILE``). Cells are matched on (suite, model, dataset, batch norm, label,
batch size); when each side holds a single suite the suite name is ignored, so a fresh
``outputs/ci`` matches a baseline exported from another folder name.

A cell regresses when, beyond the tolerances:
- the median epochs to a target grew by more than max(``epochs`` epochs, ``epochs_percent``
  % of the base median);
- a smaller share of its seeds reached a target, or the target is gone;
- the median final test error grew by more than ``final_error`` percentage points;
- the median share of skipped updates grew by more than ``skip_rate`` percentage points;
- more of its seeds diverged or failed, it has fewer seeds, runs are still incomplete, or
  the cell is missing from CURRENT.
Wall-clock differs between machines, so it is reported and gates only when
``wall_clock_percent`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lsr1bench.reporting import tables
from lsr1bench.reporting.cells import CellSummary, Stat
from lsr1bench.reporting.report import ReportError, load_cells
from lsr1bench.reporting.runs import CellKey

__all__ = [
    "CellDiff",
    "Comparison",
    "ReportError",
    "Tolerances",
    "compare",
    "compare_paths",
    "to_markdown",
]

# Differences this small are float noise (medians of values read back from CSV and JSON).
_EPS = 1e-9


@dataclass(frozen=True)
class Tolerances:
    """How much worse CURRENT may be than BASE before a cell counts as regressed."""

    epochs: float = 1.0
    epochs_percent: float = 10.0
    final_error: float = 0.5
    skip_rate: float = 5.0
    wall_clock_percent: float | None = None

    def __post_init__(self) -> None:
        for name in ("epochs", "epochs_percent", "final_error", "skip_rate", "wall_clock_percent"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"tolerance {name} must be >= 0, got {value}")

    def allowed_epochs(self, base_median: float) -> float:
        return max(self.epochs, self.epochs_percent / 100.0 * base_median)

    def describe(self) -> str:
        time = (
            f"+{self.wall_clock_percent:g}% training time"
            if self.wall_clock_percent is not None
            else "training time is reported, not gated"
        )
        return (
            f"epochs to target +max({self.epochs:g}, {self.epochs_percent:g}% of base); "
            f"final test error +{self.final_error:g} points; "
            f"skipped updates +{self.skip_rate:g} points; {time}. Also gated: fewer seeds "
            "reaching a target, more diverged or failed seeds, missing or incomplete runs."
        )


@dataclass
class CellDiff:
    key: CellKey
    base: CellSummary | None
    current: CellSummary | None
    regressions: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if self.current is None:
            return "missing"
        if self.base is None:
            return "new"
        return "REGRESSED" if self.regressions else "ok"


@dataclass
class Comparison:
    base_name: str
    current_name: str
    tolerances: Tolerances
    diffs: list[CellDiff]
    notes: list[str] = field(default_factory=list)

    @property
    def regressed(self) -> list[CellDiff]:
        return [d for d in self.diffs if d.regressions]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0


def _delta(base: Stat | None, current: Stat | None) -> float | None:
    if base is None or current is None:
        return None
    return current.median - base.median


def _share(reached: int, n: int) -> float:
    return reached / n if n else 0.0


def _check_runs(diff: CellDiff, base: CellSummary, current: CellSummary) -> None:
    if current.n < base.n:
        diff.regressions.append(f"{current.n} seeds, base had {base.n}")
    for what, base_count, current_count in (
        ("incomplete", base.incomplete, current.incomplete),
        ("diverged", base.diverged, current.diverged),
        ("failed", base.failed, current.failed),
    ):
        if _share(current_count, current.n) > _share(base_count, base.n) + _EPS:
            diff.regressions.append(f"{what}: {current_count}/{current.n} seeds (base {base_count}/{base.n})")


def _check_targets(diff: CellDiff, base: CellSummary, current: CellSummary, tol: Tolerances) -> None:
    for target, base_t in sorted(base.targets.items()):
        name = f"< {target:g}%"
        current_t = current.targets.get(target)
        if current_t is None:
            diff.regressions.append(f"{name}: not a target of the current runs")
            continue
        base_share = _share(base_t.reached, base_t.n)
        current_share = _share(current_t.reached, current_t.n)
        if current_share < base_share - _EPS:
            diff.regressions.append(
                f"{name}: reached by {current_t.reached}/{current_t.n} seeds (base {base_t.reached}/{base_t.n})"
            )
        elif current_share > base_share + _EPS:
            diff.improvements.append(
                f"{name}: reached by {current_t.reached}/{current_t.n} seeds (base {base_t.reached}/{base_t.n})"
            )
        delta = _delta(base_t.epochs, current_t.epochs)
        if delta is None or base_t.epochs is None:
            continue
        allowed = tol.allowed_epochs(base_t.epochs.median)
        change = (
            f"{name}: median epochs {tables.fmt_count(base_t.epochs.median)} -> "
            f"{tables.fmt_count(current_t.epochs.median)}"
        )
        if delta > allowed + _EPS:
            diff.regressions.append(f"{change} (+{tables.fmt_count(delta)}; allowed +{allowed:g})")
        elif delta < -_EPS:
            diff.improvements.append(change)


def _check_cell(diff: CellDiff, tol: Tolerances) -> None:
    base, current = diff.base, diff.current
    if base is None or current is None:
        if current is None:
            diff.regressions.append("missing from CURRENT")
        return
    _check_runs(diff, base, current)
    _check_targets(diff, base, current, tol)
    for label, attribute, allowed in (
        ("final test error", "final_test_error", tol.final_error),
        ("skipped updates", "skip_percent", tol.skip_rate),
    ):
        delta = _delta(getattr(base, attribute), getattr(current, attribute))
        if delta is None:
            continue
        change = f"{label} {getattr(base, attribute).median:.2f}% -> {getattr(current, attribute).median:.2f}%"
        if delta > allowed + _EPS:
            diff.regressions.append(f"{change} (+{delta:.2f} points; allowed +{allowed:g})")
        elif delta < -allowed - _EPS:
            diff.improvements.append(change)
    if tol.wall_clock_percent is not None:
        percent = _percent_change(base.train_seconds, current.train_seconds)
        if percent is not None and percent > tol.wall_clock_percent + _EPS:
            diff.regressions.append(f"training time +{percent:.0f}% (allowed +{tol.wall_clock_percent:g}%)")


def _percent_change(base: Stat | None, current: Stat | None) -> float | None:
    if base is None or current is None or base.median <= 0:
        return None
    return 100.0 * (current.median - base.median) / base.median


def _match_key(key: CellKey, ignore_suite: bool) -> CellKey:
    if not ignore_suite:
        return key
    return CellKey("", key.model, key.dataset, key.batch_norm, key.label, key.batch_size)


def compare(
    base: list[CellSummary],
    current: list[CellSummary],
    tolerances: Tolerances | None = None,
    base_name: str = "base",
    current_name: str = "current",
) -> Comparison:
    """Match the cells of two sides and judge each against the tolerances."""
    tol = tolerances or Tolerances()
    base_suites = {c.key.suite for c in base}
    current_suites = {c.key.suite for c in current}
    ignore_suite = len(base_suites) == 1 and len(current_suites) == 1
    notes = []
    if ignore_suite and base_suites != current_suites:
        notes.append(f"suite {next(iter(base_suites))!r} compared with suite {next(iter(current_suites))!r}")
    base_by = {_match_key(c.key, ignore_suite): c for c in base}
    current_by = {_match_key(c.key, ignore_suite): c for c in current}
    diffs = []
    for match in sorted(set(base_by) | set(current_by), key=_sort_key):
        b, c = base_by.get(match), current_by.get(match)
        diff = CellDiff(key=(c or b).key, base=b, current=c)  # type: ignore[union-attr]
        _check_cell(diff, tol)
        diffs.append(diff)
    base_incomplete = sum(c.incomplete for c in base)
    if base_incomplete:
        notes.append(f"BASE itself has {base_incomplete} incomplete runs")
    return Comparison(base_name, current_name, tol, diffs, notes)


def _sort_key(key: CellKey) -> tuple[object, ...]:
    return (key.suite, key.model, key.dataset, key.batch_norm, key.label, key.batch_size)


def compare_paths(base: str | Path, current: str | Path, tolerances: Tolerances | None = None) -> Comparison:
    """Compare two results folders or baseline files; ReportError on bad input."""
    base_cells, _ = load_cells(base)
    current_cells, _ = load_cells(current)
    return compare(base_cells, current_cells, tolerances, str(base), str(current))


# --- Markdown -------------------------------------------------------------------------


def _target_cell(cell: CellSummary | None, target: float) -> str:
    if cell is None:
        return "missing"
    return tables.target_text(cell.targets.get(target), "epochs", tables.fmt_count)


def _pair(base: Stat | None, current: Stat | None, fmt: tables.Formatter, percent: bool = False) -> str:
    text = f"{tables.fmt_stat(base, fmt)} → {tables.fmt_stat(current, fmt)}"
    if base is None or current is None:
        return text
    if percent:
        change = _percent_change(base, current)
        return text if change is None else f"{text} ({change:+.0f}%)"
    return f"{text} ({current.median - base.median:+.2f})"


def to_markdown(comparison: Comparison) -> str:
    """The diff as Markdown, fit for a pull-request comment."""
    regressed = comparison.regressed
    multi_suite = len({d.key.suite for d in comparison.diffs}) > 1
    verdict = (
        f"FAIL: {len(regressed)} of {len(comparison.diffs)} cells regressed"
        if regressed
        else f"PASS: no regression in {len(comparison.diffs)} cells"
    )
    out = [
        f"## lsr1bench compare: {verdict}\n",
        f"Base `{comparison.base_name}` → current `{comparison.current_name}`.\n",
        f"Gates: {comparison.tolerances.describe()}\n",
    ]
    out += [f"Note: {note}.\n" for note in comparison.notes]
    if regressed:
        out.append("### Regressions\n")
        for diff in regressed:
            reasons = "; ".join(diff.regressions)
            out.append(f"- **{diff.key.describe(multi_suite)}**: {reasons}")
        out.append("")
    improved = [d for d in comparison.diffs if d.improvements and d.status != "missing"]
    if improved:
        out.append("### Improvements\n")
        for diff in improved:
            out.append(f"- {diff.key.describe(multi_suite)}: {'; '.join(diff.improvements)}")
        out.append("")
    out.append("### Epochs to target\n")
    rows = []
    for diff in comparison.diffs:
        targets = sorted(
            {
                *(diff.base.targets if diff.base else {}),
                *(diff.current.targets if diff.current else {}),
            }
        )
        for target in targets:
            rows.append([
                diff.key.describe(multi_suite),
                f"< {target:g}%",
                _target_cell(diff.base, target) if diff.base else "new",
                _target_cell(diff.current, target),
                diff.status,
            ])  # fmt: skip
    if rows:
        headers = ["cell", "target", "base", "current", "cell status"]
        out.append(tables.markdown(headers, rows) + "\n")
    else:
        out.append("No cell has target test errors.\n")
    out.append("### Final test error, skipped updates, training time\n")
    rows = []
    for diff in comparison.diffs:
        b, c = diff.base, diff.current
        rows.append([
            diff.key.describe(multi_suite),
            _pair(b and b.final_test_error, c and c.final_test_error, tables.fmt_percent),
            _pair(b and b.skip_percent, c and c.skip_percent, tables.fmt_percent),
            _pair(b and b.train_seconds, c and c.train_seconds, tables.fmt_seconds, percent=True),
            diff.status,
        ])  # fmt: skip
    headers = ["cell", "final test error %", "skipped updates %", "train seconds", "cell status"]
    out.append(tables.markdown(headers, rows) + "\n")
    out.append("Values: median [min–max] over seeds; (k/n) seeds reached the target.\n")
    return "\n".join(out)
