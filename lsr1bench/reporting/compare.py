"""``lsr1bench compare BASE CURRENT``: match cells, print a Markdown diff, gate regressions.

BASE and CURRENT are results folders or baseline files (``lsr1bench report DIR
--export-baseline FILE``). Cells are matched on (suite, model, dataset, batch norm, label,
batch size); when each side holds a single suite the suite name is ignored, so a fresh
``outputs/ci`` matches a baseline exported from another folder name.

The gate reads each quantity against the base's own spread over seeds. Training is
chaotic: a change that only reorders floating-point sums (another thread count, another
CPU, another torch build) sends every seed down a different path, so the current seeds
are in effect new draws from the same distribution as the base's. For a quantity where
higher is worse, with base values over seeds spanning [min, max], the current cell
regresses when its median exceeds

    allowed = base max + max(floor, spread x (base max - base min))

that is, the base's range widened upwards by its own width (``spread`` = 1), and at
least by a floor. Three seeds are few: now and then their range is much narrower than
the seeds' true spread, and the floor keeps such a base from failing a rounding change.
The floors (one point of test error, 20 % of the train loss, one epoch) are two to three
times the seed-to-seed standard deviation measured on suites/ci.yaml. The quantities:

- epochs to each target, of any metric. A seed that never reaches a target (within the
  planned epochs, or because it diverged or failed) counts as +infinity, as AlgoPerf scores
  a missed target, and the median over all seeds includes it: a target missed by most seeds
  has an infinite median. A target's epochs regress when the median becomes infinite where
  the base's was finite, or when a finite median exceeds the allowed limit above (an
  infinite base max allows any finite median). Its reach count regresses when more seeds
  miss it than the base did, scaled to the current number of seeds, plus max(one seed,
  ``spread`` x that number) -- the same "range widened by its width, at least a floor"
  rule, on the count of misses. A target infinite on both sides is unchanged, not a
  regression;
- the final test error (floor ``final_error`` points), the final train loss (floor
  ``loss_percent`` % of the base median) and the share of skipped updates (floor
  ``skip_rate`` points);
- the mean train loss over the trained epochs (the area under the train-loss curve per
  epoch), seed by seed. Final values and epochs to target miss a change that slows the start
  and is caught up by the last epoch; its area rises in every seed. The same seed on both
  sides starts from the same weights and batches, so each seed is compared with itself: the
  cell regresses when the median over seeds of the % change exceeds
  max(``paired_percent``, ``spread`` x the base's max - min of the final train loss over seeds
  as % of its median). How far apart the seeds end measures how far this cell's training
  carries a small difference at its start, and a rounding-only change is such a difference:
  at most it sends a seed's end anywhere in that range, and its mean, whose first epochs stay
  close, moves less. Cells that amplify little (Adam's, NAG's here) get the floor; chaotic
  ones (L-SR1's) a limit their rounding noise stays inside. Seeds are paired only when both
  sides ran the same epochs;
- the trust-region radius at the end of the run (L-SR1's trust-region cells), both ways:
  the cell regresses when the median over seeds leaves [base min / ``radius_factor``, base max
  x ``radius_factor``]. The radius is the optimizer's own verdict on how far its model can be
  trusted, and a broken radius rule (one that hardly grows or shrinks too fast) shows there
  first, while the losses it slows are still within the seeds' range. The radius moves by
  factors of two, so a rounding change that flips one accept-and-grow decision moves a seed's
  radius by 2: the factor 3 allows that with room (on suites/ci.yaml a rounding-only change
  moved the median of L-SR1's radius by up to a factor of 2, inside the base's range);
- training wall-clock only when ``wall_clock_percent`` is set (+P % of the base median).

A cell also regresses when more of its seeds diverge or fail, it has fewer seeds, runs
are still incomplete, or it is missing from CURRENT. Beside each cell, the settings that
differ between base and current (hyperparameters, epochs, data, device, versions,
commit, threads) are listed, so a regression is read next to its likely cause.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from lsr1bench.reporting import tables
from lsr1bench.reporting.cells import CellSummary, Stat, TargetSummary
from lsr1bench.reporting.report import ReportError, load_cells
from lsr1bench.reporting.runs import CellKey, Target

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
# Quantities of a cell besides its targets, as CellDiff.flag names them.
RUNS = "runs"  # seeds, incomplete, diverged, failed, missing
FINAL_ERROR = "final test error"
FINAL_LOSS = "final train loss"
MEAN_LOSS = "mean train loss"
SKIPS = "skipped updates"
RADIUS = "trust-region radius"
TIME = "training time"
# A base with fewer seeds than this has a spread that says little; compare says so.
ENOUGH_SEEDS = 3


@dataclass(frozen=True)
class Tolerances:
    """How far above the base's range over seeds CURRENT's median may go."""

    spread: float = 1.0
    epochs: float = 1.0
    epochs_percent: float = 10.0
    final_error: float = 1.0
    loss_percent: float = 20.0
    skip_rate: float = 5.0
    # the mean train loss, seed by seed: the floor of its limit, % of each seed's base value
    paired_percent: float = 2.0
    # the final trust-region radius: how many times outside the base's range over seeds
    radius_factor: float = 3.0
    wall_clock_percent: float | None = None

    def __post_init__(self) -> None:
        for name in ("spread", "epochs", "epochs_percent", "final_error", "loss_percent", "skip_rate",
                     "paired_percent", "wall_clock_percent"):  # fmt: skip
            value = getattr(self, name)
            if value is not None and (value < 0 or math.isnan(value)):
                raise ValueError(f"tolerance {name} must be >= 0, got {value}")
        if not self.radius_factor >= 1.0:
            raise ValueError(f"tolerance radius_factor must be >= 1, got {self.radius_factor}")

    def allowed(self, base: Stat, floor: float) -> float:
        """The highest current median that is not a regression."""
        return base.max + max(floor, self.spread * (base.max - base.min))

    def epochs_floor(self, base_median: float) -> float:
        return max(self.epochs, self.epochs_percent / 100.0 * base_median)

    def paired_allowed(self, base: CellSummary) -> float:
        """The largest median paired change (%) of the mean train loss that is not a regression:
        the floor, or ``spread`` x the base's range over seeds of the final train loss, in % of
        its median."""
        final = base.final_train_loss
        return max(self.paired_percent, self.spread * relative_range(final) if final is not None else 0.0)

    def describe(self) -> str:
        time = (
            f"training time +{self.wall_clock_percent:g}% of the base median"
            if self.wall_clock_percent is not None
            else "training time is reported, not gated"
        )
        return (
            f"a quantity regresses when the current median over seeds is above the base's max over seeds + "
            f"max(floor, {self.spread:g} x the base's max - min); floors: epochs to target "
            f"max({self.epochs:g}, {self.epochs_percent:g}% of the base median), final test error "
            f"{_points(self.final_error)}, final train loss {self.loss_percent:g}% of the base median, "
            f"skipped updates {_points(self.skip_rate)}; {time}. The mean train loss over the epochs (the area "
            "under the train-loss curve) is compared seed by seed, each seed with itself: it regresses when the "
            f"median over seeds of the change exceeds max({self.paired_percent:g}%, {self.spread:g} x the base's "
            "max - min over seeds of the final train loss, as % of its median). The trust-region radius at the end "
            f"of the run regresses when its median leaves [base min / {self.radius_factor:g}, base max x "
            f"{self.radius_factor:g}]. A seed that never reaches a target "
            "counts as +inf epochs and the medians include it: a target regresses when its median turns infinite where "
            "the base's was finite, or when more seeds miss it than the base's misses (scaled to the current "
            f"seed count) + max(1, {self.spread:g} x those misses). Also gated: more diverged or failed seeds, "
            "fewer seeds, missing or incomplete runs. A row reads REGRESSED only when a quantity it shows did."
        )


def _points(value: float) -> str:
    return f"{value:g} point" + ("" if value == 1 else "s")


@dataclass
class CellDiff:
    key: CellKey
    base: CellSummary | None
    current: CellSummary | None
    regressions: list[str] = field(default_factory=list)
    improvements: list[str] = field(default_factory=list)
    # setting -> (base text, current text), for settings that differ
    settings: dict[str, tuple[str, str]] = field(default_factory=dict)
    # the quantities (a target's text, "final test error", "runs", ...) that regressed / improved
    regressed_quantities: set[str] = field(default_factory=set)
    improved_quantities: set[str] = field(default_factory=set)

    def flag(self, quantity: str, reason: str) -> None:
        self.regressions.append(reason)
        self.regressed_quantities.add(quantity)

    def improve(self, quantity: str, change: str) -> None:
        self.improvements.append(change)
        self.improved_quantities.add(quantity)

    def row_status(self, quantities: list[str]) -> str:
        """The status of a table row showing ``quantities``: REGRESSED only when one of them did."""
        if self.current is None:
            return "missing"
        if self.base is None:
            return "new"
        if self.regressed_quantities.intersection(quantities):
            return "REGRESSED"
        return "improved" if self.improved_quantities.intersection(quantities) else "ok"

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
    # settings that differ the same way in every matched cell (shown once)
    common_settings: dict[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def regressed(self) -> list[CellDiff]:
        return [d for d in self.diffs if d.regressions]

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0


def _share(reached: int, n: int) -> float:
    return reached / n if n else 0.0


def _check_runs(diff: CellDiff, base: CellSummary, current: CellSummary) -> None:
    if current.n < base.n:
        diff.flag(RUNS, f"{current.n} seeds, base had {base.n}")
    for what, base_count, current_count in (
        ("incomplete", base.incomplete, current.incomplete),
        ("diverged", base.diverged, current.diverged),
        ("failed", base.failed, current.failed),
    ):
        if _share(current_count, current.n) > _share(base_count, base.n) + _EPS:
            diff.flag(RUNS, f"{what}: {current_count}/{current.n} seeds (base {base_count}/{base.n})")


@dataclass(frozen=True)
class Censored:
    """Each seed's epochs to a target with a miss as +inf: the median over all seeds, the
    min and max, and how many of the ``n`` seeds reached it."""

    median: float
    min: float
    max: float
    reached: int
    n: int

    @property
    def missed(self) -> int:
        return self.n - self.reached


def censored_epochs(summary: TargetSummary) -> Censored | None:
    """Median and range over all seeds of the epochs to a target; never reached = +inf."""
    if not summary.epochs_by_seed:
        return None
    values = [math.inf if e is None else float(e) for e in summary.epochs_by_seed]
    reached = sum(e is not None for e in summary.epochs_by_seed)
    return Censored(statistics.median(values), min(values), max(values), reached, len(values))


def allowed_misses(base: Censored, n: int, tol: Tolerances) -> float:
    """The most seeds of ``n`` that may miss a target the base's seeds missed ``base.missed`` of."""
    scaled = base.missed * n / base.n
    return scaled + max(1.0, tol.spread * scaled)


def _epochs_text(value: float, summary: TargetSummary) -> str:
    if math.isinf(value):
        return "never" if summary.horizon is None else f"never (by epoch {summary.horizon})"
    return tables.fmt_count(value)


def _check_targets(diff: CellDiff, base: CellSummary, current: CellSummary, tol: Tolerances) -> None:
    for target, base_t in sorted(base.targets.items()):
        name = target.text()
        current_t = current.targets.get(target)
        if current_t is None:
            diff.flag(name, f"{name}: not a target of the current runs")
            continue
        base_stat, current_stat = censored_epochs(base_t), censored_epochs(current_t)
        if base_stat is None or current_stat is None:
            continue
        change = (
            f"{name}: median epochs {_epochs_text(base_stat.median, base_t)} -> "
            f"{_epochs_text(current_stat.median, current_t)} (reached by {current_stat.reached}/{current_stat.n} "
            f"seeds, base {base_stat.reached}/{base_stat.n})"
        )
        base_finite, current_finite = math.isfinite(base_stat.median), math.isfinite(current_stat.median)
        misses = allowed_misses(base_stat, current_stat.n, tol)
        if base_finite and not current_finite:
            diff.flag(name, f"{change}; the base's median was finite")
        elif base_finite:
            allowed = tol.allowed(Stat(base_stat.median, base_stat.min, base_stat.max, base_stat.n),
                                  tol.epochs_floor(base_stat.median))  # fmt: skip
            if current_stat.median > allowed + _EPS:
                diff.flag(name, f"{change}; allowed up to {tables.fmt_count(allowed)}")
            elif current_stat.missed > misses + _EPS:
                diff.flag(name, f"{change}; at most {tables.fmt_count(misses)} may miss it")
            elif current_stat.median < base_stat.min - (allowed - base_stat.max) - _EPS:
                diff.improve(name, change)
        elif current_finite:
            diff.improve(name, change)
        elif current_stat.missed > misses + _EPS:  # both medians infinite: only the count can regress
            diff.flag(name, f"{change}; at most {tables.fmt_count(misses)} may miss it")


def _check_value(
    diff: CellDiff, label: str, base: Stat | None, current: Stat | None, floor: float, unit: str, tol: Tolerances
) -> None:
    if base is None or current is None:
        return
    allowed = tol.allowed(base, floor)
    digits = 4 if unit == "" else 2
    change = (
        f"{label}: median {current.median:.{digits}f}{unit}, base {base.median:.{digits}f}{unit} "
        f"[{base.min:.{digits}f}–{base.max:.{digits}f}]"
    )
    if current.median > allowed + _EPS:
        diff.flag(label, f"{change}; allowed up to {allowed:.{digits}f}{unit}")
    elif current.median < base.min - (allowed - base.max) - _EPS:
        diff.improve(label, change)


def relative_range(stat: Stat) -> float:
    """The max - min over seeds as % of the median (0 for a median of 0)."""
    return 100.0 * (stat.max - stat.min) / abs(stat.median) if stat.median else 0.0


@dataclass(frozen=True)
class Paired:
    """The mean train loss of each seed present on both sides: % change, current vs base."""

    changes: dict[int, float]

    @property
    def median(self) -> float:
        return statistics.median(self.changes.values())

    def text(self) -> str:
        return ", ".join(f"seed {seed} {change:+.1f}%" for seed, change in sorted(self.changes.items()))


def paired_mean_loss(base: CellSummary, current: CellSummary) -> Paired | None:
    """Seed-by-seed changes of the mean train loss, or None when nothing can be paired: no seed
    on both sides with the value, or the runs of either side cover other epochs than the other's
    (a mean over three epochs is not one over two)."""
    spans = (base.epochs_present, current.epochs_present)
    if any(span is None or span.min != span.max for span in spans) or spans[0].median != spans[1].median:  # type: ignore[union-attr]
        return None
    changes = {}
    for seed in sorted(set(base.by_seed) & set(current.by_seed)):
        b, c = base.by_seed[seed].get("mean_train_loss"), current.by_seed[seed].get("mean_train_loss")
        if b is not None and c is not None and b > 0:
            changes[seed] = 100.0 * (c / b - 1.0)
    return Paired(changes) if changes else None


def _final_range(cell: CellSummary) -> float:
    return relative_range(cell.final_train_loss) if cell.final_train_loss is not None else 0.0


def _check_paired(diff: CellDiff, base: CellSummary, current: CellSummary, tol: Tolerances) -> None:
    if base.mean_train_loss is None:
        return
    paired = paired_mean_loss(base, current)
    if paired is None:
        return
    allowed = tol.paired_allowed(base)
    change = (
        f"{MEAN_LOSS}: median change {paired.median:+.1f}% over {len(paired.changes)} seeds paired with "
        f"themselves ({paired.text()})"
    )
    if paired.median > allowed + _EPS:
        diff.flag(
            MEAN_LOSS,
            f"{change}; allowed up to +{allowed:.1f}% (the larger of {tol.paired_percent:g}% and {tol.spread:g} x "
            f"the base's range over seeds of the final train loss, {_final_range(base):.1f}% of its median)",
        )
    elif paired.median < -allowed - _EPS:
        diff.improve(MEAN_LOSS, change)


def _check_radius(diff: CellDiff, base: CellSummary, current: CellSummary, tol: Tolerances) -> None:
    """The final trust-region radius against the base's range over seeds, widened by
    ``radius_factor`` both ways (cells without a radius on both sides are not checked)."""
    b, c = base.radius, current.radius
    if b is None or c is None or not b.min > 0.0 or not math.isfinite(c.median):
        return
    low, high = b.min / tol.radius_factor, b.max * tol.radius_factor
    change = f"{RADIUS}: median {c.median:.4g}, base {b.median:.4g} [{b.min:.4g}–{b.max:.4g}]"
    if c.median < low or c.median > high:
        widened = f"the base's range, {tol.radius_factor:g} times wider each way"
        diff.flag(RADIUS, f"{change}; allowed {low:.4g} to {high:.4g} ({widened})")


def _check_cell(diff: CellDiff, tol: Tolerances) -> None:
    base, current = diff.base, diff.current
    if base is None or current is None:
        if current is None:
            diff.flag(RUNS, "missing from CURRENT")
        return
    _check_runs(diff, base, current)
    _check_targets(diff, base, current, tol)
    _check_value(diff, "final test error", base.final_test_error, current.final_test_error, tol.final_error, "%", tol)
    if base.final_train_loss is not None:
        loss_floor = tol.loss_percent / 100.0 * abs(base.final_train_loss.median)
        _check_value(diff, "final train loss", base.final_train_loss, current.final_train_loss, loss_floor, "", tol)
    _check_paired(diff, base, current, tol)
    _check_radius(diff, base, current, tol)
    _check_value(diff, "skipped updates", base.skip_percent, current.skip_percent, tol.skip_rate, "%", tol)
    if tol.wall_clock_percent is not None:
        percent = _percent_change(base.train_seconds, current.train_seconds)
        if percent is not None and percent > tol.wall_clock_percent + _EPS:
            diff.flag(TIME, f"training time +{percent:.0f}% (allowed +{tol.wall_clock_percent:g}%)")


def _setting_differences(base: CellSummary, current: CellSummary) -> dict[str, tuple[str, str]]:
    if not base.settings or not current.settings:
        return {}
    names = sorted(set(base.settings) | set(current.settings))
    absent = "(absent)"
    return {
        name: (base.settings.get(name, absent), current.settings.get(name, absent))
        for name in names
        if _comparable(name, base.settings.get(name, absent)) != _comparable(name, current.settings.get(name, absent))
    }


def _comparable(name: str, text: str) -> str:
    """A setting as the gate compares it: torch by its release (``2.14.1+cpu`` and
    ``2.14.1+cu130`` are two builds of one version; the device is its own setting)."""
    return text.split("+", 1)[0] if name == "torch" else text


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
        if b is not None and c is not None:
            diff.settings = _setting_differences(b, c)
        diffs.append(diff)
    base_incomplete = sum(c.incomplete for c in base)
    if base_incomplete:
        notes.append(f"BASE itself has {base_incomplete} incomplete runs")
    few = [c for c in base if c.n < ENOUGH_SEEDS]
    if few:
        notes.append(
            f"{len(few)} of {len(base)} BASE cells have fewer than {ENOUGH_SEEDS} seeds, so their spread "
            "over seeds says little; the floors alone set their tolerance"
        )
    for side, cells in (("BASE", base), ("CURRENT", current)):
        if any(c.n and not c.by_seed for c in cells):
            notes.append(
                f"some {side} cells record no per-seed values (an older baseline, or every seed diverged): "
                f"their {MEAN_LOSS} is not compared seed by seed"
            )
    if any(b.settings for b in base) and not all(b.settings for b in base):
        notes.append("some BASE cells record no settings (an older baseline): their settings are not compared")
    matched = [d for d in diffs if d.base is not None and d.current is not None]
    common = dict(matched[0].settings) if matched else {}
    for diff in matched[1:]:
        common = {k: v for k, v in common.items() if diff.settings.get(k) == v}
    for diff in matched:
        diff.settings = {k: v for k, v in diff.settings.items() if k not in common}
    return Comparison(base_name, current_name, tol, diffs, notes, common)


def _sort_key(key: CellKey) -> tuple[object, ...]:
    return (key.suite, key.model, key.dataset, key.batch_norm, key.label, key.batch_size)


def compare_paths(base: str | Path, current: str | Path, tolerances: Tolerances | None = None) -> Comparison:
    """Compare two results folders or baseline files; ReportError on bad input."""
    base_cells, _ = load_cells(base)
    current_cells, _ = load_cells(current)
    return compare(base_cells, current_cells, tolerances, str(base), str(current))


# --- Markdown -------------------------------------------------------------------------


def _target_cell(cell: CellSummary, target: Target) -> str:
    return tables.target_text(cell.targets.get(target), "epochs", tables.fmt_count)


def _pair(base: Stat | None, current: Stat | None, fmt: tables.Formatter, percent: bool = False) -> str:
    text = f"{tables.fmt_stat(base, fmt)} → {tables.fmt_stat(current, fmt)}"
    if base is None or current is None:
        return text
    if percent:
        change = _percent_change(base, current)
        return text if change is None else f"{text} ({change:+.0f}%)"
    return f"{text} ({current.median - base.median:+.2f})"


def _paired_text(base: CellSummary | None, current: CellSummary | None) -> str:
    """``0.4805 → 0.4989 (+3.8% paired)``: the medians over seeds and the median paired change."""
    if base is None or current is None:
        return "n/a"
    text = " → ".join(tables.fmt_stat(cell.mean_train_loss, tables.fmt_loss) for cell in (base, current))
    paired = paired_mean_loss(base, current) if base.mean_train_loss is not None else None
    return text if paired is None else f"{text} ({paired.median:+.1f}% paired)"


def _runs_text(cell: CellSummary) -> str:
    """``3 seeds``, or ``3 seeds, 2 diverged, 1 incomplete``."""
    parts = [f"{cell.n} seed" + ("" if cell.n == 1 else "s")]
    parts += [f"{count} {what}" for what, count in (("diverged", cell.diverged), ("failed", cell.failed),
                                                    ("incomplete", cell.incomplete)) if count]  # fmt: skip
    return ", ".join(parts)


def settings_text(settings: dict[str, tuple[str, str]]) -> str:
    """``memory 5 → 1; commit 3e0c45a → 1b2c3d4``."""
    return "; ".join(f"{name} {base} → {current}" for name, (base, current) in settings.items())


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
        f"Gate: {comparison.tolerances.describe()}\n",
    ]
    out += [f"Note: {note}.\n" for note in comparison.notes]
    if comparison.common_settings:
        out.append(f"Settings that differ in every cell: {settings_text(comparison.common_settings)}.\n")
    if regressed:
        out.append("### Regressions\n")
        for diff in regressed:
            reasons = "; ".join(diff.regressions)
            changed = f" (settings that differ: {settings_text(diff.settings)})" if diff.settings else ""
            out.append(f"- **{diff.key.describe(multi_suite)}**: {reasons}{changed}")
        out.append("")
    improved = [d for d in comparison.diffs if d.improvements and d.status != "missing"]
    if improved:
        out.append("### Improvements\n")
        for diff in improved:
            out.append(f"- {diff.key.describe(multi_suite)}: {'; '.join(diff.improvements)}")
        out.append("")
    changed_cells = [d for d in comparison.diffs if d.settings and not d.regressions]
    if changed_cells:
        out.append("### Settings that differ\n")
        for diff in changed_cells:
            out.append(f"- {diff.key.describe(multi_suite)}: {settings_text(diff.settings)}")
        out.append("")
    out.append("### Epochs to target\n")
    rows = []
    for diff in comparison.diffs:
        targets = sorted({*(diff.base.targets if diff.base else {}), *(diff.current.targets if diff.current else {})})
        for target in targets:
            rows.append([
                diff.key.describe(multi_suite),
                target.text(),
                _target_cell(diff.base, target) if diff.base else "new",
                _target_cell(diff.current, target) if diff.current else "missing",
                diff.row_status([target.text()]),
            ])  # fmt: skip
    if rows:
        headers = ["cell", "target", "base", "current", "status"]
        out.append(tables.markdown(headers, rows) + "\n")
    else:
        out.append("No cell has targets.\n")
    out.append("### Final test error and train loss, skipped updates, radius, training time\n")
    rows = []
    for diff in comparison.diffs:
        b, c = diff.base, diff.current
        rows.append([
            diff.key.describe(multi_suite),
            _pair(b and b.final_test_error, c and c.final_test_error, tables.fmt_percent),
            _pair(b and b.final_train_loss, c and c.final_train_loss, tables.fmt_loss),
            _paired_text(b, c),
            _pair(b and b.skip_percent, c and c.skip_percent, tables.fmt_percent),
            _pair(b and b.radius, c and c.radius, tables.fmt_radius, percent=True),
            _pair(b and b.train_seconds, c and c.train_seconds, tables.fmt_seconds, percent=True),
            _runs_text(c) if c else "missing",
            diff.row_status([RUNS, FINAL_ERROR, FINAL_LOSS, MEAN_LOSS, SKIPS, RADIUS, TIME]),
        ])  # fmt: skip
    headers = ["cell", "final test error %", "final train loss", "mean train loss, paired", "skipped updates %",
               "final radius", "train seconds", "runs", "status"]  # fmt: skip
    out.append(tables.markdown(headers, rows) + "\n")
    out.append(
        "Values: median [min–max] over seeds; (k/n) seeds reached the target (the epochs shown are over "
        "those seeds; the gate's median counts the others as +inf); mean train loss: over the trained epochs, "
        "with the median over seeds of each seed's change against the same seed in the base. A row's status "
        "is its own quantities'.\n"
    )
    return "\n".join(out)
