"""Every gate of ``lsr1bench compare`` at its boundary: tolerance - eps, exactly, + eps.

Each case builds a base and a current cell from synthetic records
(tests/_report_records.py) whose limit, worked out by hand in the comments, equals the
current median exactly when the tolerance under test takes its nominal value. One
tolerance smaller than that must fail the cell; the tolerance itself and one larger must
pass it (the gate reads "above the limit", README "Regression gate in CI").
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _report_records import NAN, write_run

from lsr1bench import records, runner
from lsr1bench.reporting import Tolerances, compare, load_cells

# Large against the gate's float guard (1e-9), small against every quantity here.
EPS = 1e-5
BELOW, AT, ABOVE = -EPS, 0.0, EPS
BOUNDARY = [pytest.param(BELOW, True, id="tolerance-eps"), pytest.param(AT, False, id="exactly"),
            pytest.param(ABOVE, False, id="tolerance+eps")]  # fmt: skip


def cell(root: Path, errors_by_seed: list[list[float]], label: str = "adam", status: list[str] | None = None,
         **kw):  # fmt: skip
    """One cell with a seed per entry (test error % by epoch); ``status`` per seed, ``kw`` to write_run."""
    suite = root / "gate"
    kw.setdefault("targets", ())
    for seed, errors in enumerate(errors_by_seed):
        run_status = status[seed] if status else "completed"
        losses = {"train_losses": [2.3] + [0.3] * (len(errors) - 1), **kw}
        write_run(suite, errors, label=label, optimizer=label, seed=seed, batch_size=50, status=run_status, **losses)
    cells, _ = load_cells(suite)
    assert len(cells) == 1
    return cells


def reasons(base, current, **tolerances) -> list[str]:
    comparison = compare(base, current, Tolerances(**tolerances))
    return [reason for diff in comparison.diffs for reason in diff.regressions]


def judged(base, current, prefix: str, **tolerances) -> bool:
    """Whether the cell regressed; any reason must be the gate under test."""
    found = reasons(base, current, **tolerances)
    assert all(r.startswith(prefix) for r in found), found
    return bool(found)


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_spread_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # base final errors 4.0, 4.5, 5.0; floor 0: limit 5.0 + spread x 1.0; current median 6.0
    base = cell(tmp_path / "b", [[90, 6, 4.0], [90, 6, 4.5], [90, 6, 5.0]])
    current = cell(tmp_path / "c", [[90, 6, 5.0], [90, 6, 6.0], [90, 6, 7.0]])
    assert judged(base, current, "final test error", spread=1.0 + delta, final_error=0.0) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_final_error_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # base 4.5 in every seed (no spread): limit 4.5 + floor; current median 5.5
    base = cell(tmp_path / "b", [[90, 6, 4.5]] * 3)
    current = cell(tmp_path / "c", [[90, 6, 5.5]] * 3)
    assert judged(base, current, "final test error", final_error=1.0 + delta) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_train_loss_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # base train loss 0.5 in every seed: limit 0.5 + loss_percent % of 0.5; current 0.6 at 20 %
    base = cell(tmp_path / "b", [[90, 6, 4.5]] * 3, train_losses=[2.3, 1.0, 0.5])
    current = cell(tmp_path / "c", [[90, 6, 4.5]] * 3, train_losses=[2.3, 1.0, 0.6])
    # (the mean train loss rises too, by 0.1 / 1.4 = 7.1% in every seed: that rule is switched off here)
    assert judged(base, current, "final train loss", loss_percent=20.0 + delta, paired_percent=1000.0) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_mean_train_loss_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # train loss (1.0 + 0.2) / 2 = 0.6 on average over the two epochs in every base seed (no
    # spread), (1.03 + 0.2) / 2 = 0.615 now: +2.5% in each seed; limit paired_percent
    base = cell(tmp_path / "b", [[90, 6, 4.5]] * 3, train_losses=[2.3, 1.0, 0.2])
    current = cell(tmp_path / "c", [[90, 6, 4.5]] * 3, train_losses=[2.3, 1.03, 0.2])
    assert judged(base, current, "mean train loss", paired_percent=2.5 + delta) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_mean_train_loss_spread_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # base final train loss 0.2, 0.25, 0.3 (range 0.1 = 40% of the median 0.25), epoch 1 at 1.0:
    # means 0.6, 0.625, 0.65; now epoch 1 at 1.1 in each seed: means + 0.05, by 8.33%, 8%, 7.69%,
    # a median of 8% = 0.2 x 40%: limit spread x 40% (no floor); the final values within their range
    def seeds(root: Path, first: float) -> list:
        for seed, last in enumerate([0.2, 0.25, 0.3]):
            write_run(root / "gate", [90, 6, 4.5], label="adam", optimizer="adam", seed=seed, batch_size=50,
                      targets=(), train_losses=[2.3, first, last])  # fmt: skip
        return load_cells(root / "gate")[0]

    base, current = seeds(tmp_path / "b", 1.0), seeds(tmp_path / "c", 1.1)
    assert judged(base, current, "mean train loss", paired_percent=0.0, spread=0.2 + delta) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_skip_rate_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # skipped updates 4 of 40 steps (10 %) in the base, 6 of 40 (15 %) now: limit 10 + skip_rate
    def qn(skipped: int) -> dict:
        return {"steps": 40, "skipped_updates": skipped, "rejected_steps": 0, "dropped_pairs": 0, "radius": 1.0}

    base = cell(tmp_path / "b", [[90, 6, 4.5]] * 3, label="lsr1", qn_final=qn(4))
    current = cell(tmp_path / "c", [[90, 6, 4.5]] * 3, label="lsr1", qn_final=qn(6))
    assert judged(base, current, "skipped updates", skip_rate=5.0 + delta) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_epochs_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # below 5 % at epoch 1 in every base seed, at epoch 3 now: limit 1 + max(epochs, 0 % of 1)
    base = cell(tmp_path / "b", [[90, 4, 4, 4, 4]] * 3, targets=(5.0,))
    current = cell(tmp_path / "c", [[90, 6, 6, 4, 4]] * 3, targets=(5.0,))
    assert judged(base, current, "< 5%", epochs=2.0 + delta, epochs_percent=0.0) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_epochs_percent_floor_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # below 5 % at epoch 5 in the base, 6 now: limit 5 + max(0, epochs_percent % of 5) = 6 at 20 %
    base = cell(tmp_path / "b", [[90, 6, 6, 6, 6, 4, 4]] * 3, targets=(5.0,))
    current = cell(tmp_path / "c", [[90, 6, 6, 6, 6, 6, 4]] * 3, targets=(5.0,))
    assert judged(base, current, "< 5%", epochs=0.0, epochs_percent=20.0 + delta) is regresses


def test_never_reached_is_infinite_whatever_the_epochs_tolerance(tmp_path: Path) -> None:
    # 4 epochs; the base reaches 5 % at epoch 3, the current never: +inf, beyond any tolerance
    base = cell(tmp_path / "b", [[90, 6, 6, 4, 4]] * 3, targets=(5.0,))
    current = cell(tmp_path / "c", [[90, 6, 6, 6, 5.5]] * 3, targets=(5.0,))
    assert judged(base, current, "< 5%", epochs=1000.0, epochs_percent=1000.0, final_error=100.0)


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_reach_count_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # 10 seeds; the base misses 5 % in 1 (median still epoch 2), the current in 3 (median still 2):
    # at most 1 + max(1, spread x 1) may miss it, 3 at spread 2
    reach, miss = [90, 6, 4, 4], [90, 6, 6, 6]
    base = cell(tmp_path / "b", [reach] * 9 + [miss], targets=(5.0,))
    current = cell(tmp_path / "c", [reach] * 7 + [miss] * 3, targets=(5.0,))
    assert judged(base, current, "< 5%", spread=2.0 + delta, final_error=100.0) is regresses


@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_wall_clock_boundary(tmp_path: Path, delta: float, regresses: bool) -> None:
    # 2 epochs at 2 s in the base (4 s), at 3 s now (6 s): +50 %
    base = cell(tmp_path / "b", [[90, 6, 4.5]] * 3, seconds_per_epoch=2.0)
    current = cell(tmp_path / "c", [[90, 6, 4.5]] * 3, seconds_per_epoch=3.0)
    assert judged(base, current, "training time", wall_clock_percent=50.0 + delta) is regresses
    assert reasons(base, current) == []  # not gated unless asked


FINISHED = [90, 6, 4.5]
DIVERGED = [90, 6, NAN]


@pytest.mark.parametrize(("status", "errors"), [("failed", FINISHED), ("diverged", DIVERGED), ("running", [90, 6])])
@pytest.mark.parametrize(("now", "regresses"), [(0, False), (1, False), (2, True)])
def test_more_failed_diverged_or_incomplete_seeds(tmp_path: Path, status: str, errors: list, now: int,
                                                  regresses: bool) -> None:  # fmt: skip
    # the base has 1 of 3 seeds failed / diverged / still running: as many passes, one more fails
    statuses = ["completed"] * 2 + [status]
    base = cell(tmp_path / "b", [FINISHED, FINISHED, errors], status=statuses, epochs=2)
    current_statuses = ["completed"] * (3 - now) + [status] * now
    current_errors = [FINISHED] * (3 - now) + [errors] * now
    current = cell(tmp_path / "c", current_errors, status=current_statuses, epochs=2)
    what = "incomplete" if status == "running" else status
    found = reasons(base, current, final_error=100.0, loss_percent=1000.0)
    assert found == ([f"{what}: 2/3 seeds (base 1/3)"] if regresses else [])


@pytest.mark.parametrize(("seeds", "regresses"), [(2, True), (3, False), (4, False)])
def test_fewer_seeds_than_the_base(tmp_path: Path, seeds: int, regresses: bool) -> None:
    base = cell(tmp_path / "b", [FINISHED] * 3)
    current = cell(tmp_path / "c", [FINISHED] * seeds)
    assert reasons(base, current) == (["2 seeds, base had 3"] if regresses else [])


def test_a_target_missing_from_current(tmp_path: Path) -> None:
    base = cell(tmp_path / "b", [FINISHED] * 3, targets={"test_error": [5.0], "train_loss": [0.5]})
    same = cell(tmp_path / "s", [FINISHED] * 3, targets={"test_error": [5.0], "train_loss": [0.5]})
    fewer = cell(tmp_path / "c", [FINISHED] * 3, targets={"test_error": [5.0]})
    assert reasons(base, same) == []
    assert reasons(base, fewer) == ["train loss < 0.5: not a target of the current runs"]
    # a target only CURRENT has is new, not a regression
    assert reasons(fewer, base) == []


# --------------------------------------------------------------------------- equal to a target


def test_an_error_equal_to_its_target_is_not_reached_in_records() -> None:
    rows = [{"epoch": 0, "test_error": 90.0}, {"epoch": 1, "test_error": 5.0}, {"epoch": 2, "test_error": 4.999}]
    assert records.epochs_to_target(rows, 5.0) == 2
    assert records.epochs_to_target(rows[:2], 5.0) is None
    assert records.epochs_to_target(rows[:2], 5.0 + 1e-12) == 1


def test_an_error_equal_to_its_target_is_not_reached_in_the_report(tmp_path: Path) -> None:
    # the committed CI baseline has such a seed: Adam ending at exactly 5.0 % against 5 %
    equal = cell(tmp_path / "eq", [[90, 6, 5.0]] * 3, targets={"test_error": [5.0]})
    below = cell(tmp_path / "lt", [[90, 6, 4.9]] * 3, targets={"test_error": [5.0]})
    ((target, summary),) = equal[0].targets.items()
    assert summary.reached == 0 and summary.epochs_by_seed == [None, None, None]
    assert below[0].targets[target].reached == 3 and below[0].targets[target].epochs_by_seed == [2, 2, 2]


def test_an_error_equal_to_its_target_is_not_reached_by_the_runner(tmp_path: Path, monkeypatch) -> None:
    from test_runner import tiny

    # every evaluation reads test error exactly 5.0 %, test loss exactly 0.25
    monkeypatch.setattr(runner, "evaluate", lambda model, x, y, parallel=None: (0.25, 5.0))
    spec = tiny(epochs=1, train_subset=100, targets={"test_error": (5.0, 5.01), "test_loss": (0.25, 0.251)})
    record = runner.train(spec, tmp_path, "cpu")
    assert record.status == "completed", record.error
    assert record.targets_reached == {"test_error": {"5": None, "5.01": 1}, "test_loss": {"0.25": None, "0.251": 1}}


def radius_cell(root: Path, radii: list[float], label: str = "lsr1"):
    """L-SR1 seeds that differ only in their final trust-region radius."""
    suite = root / "gate"
    for seed, radius in enumerate(radii):
        qn = {"steps": 20, "skipped_updates": 0, "rejected_steps": 0, "dropped_pairs": 0, "radius": radius}
        write_run(suite, [90, 6, 4.5], label=label, seed=seed, batch_size=50, targets=(), qn_final=qn,
                  train_losses=[2.3, 0.3, 0.3])  # fmt: skip
    cells, _ = load_cells(suite)
    assert len(cells) == 1
    return cells


@pytest.mark.parametrize("side", ["below", "above"])
@pytest.mark.parametrize(("delta", "regresses"), BOUNDARY)
def test_radius_factor_boundary(tmp_path: Path, side: str, delta: float, regresses: bool) -> None:
    # base radii 0.2, 0.3, 0.4: with factor 3 the allowed range is [0.2 / 3, 0.4 x 3]; the current
    # median sits on one end of it (exactly 0.2 / 3 = 0.0667 or 0.4 x 3 = 1.2)
    base = radius_cell(tmp_path / "b", [0.2, 0.3, 0.4])
    median = 0.2 / 3.0 if side == "below" else 0.4 * 3.0
    current = radius_cell(tmp_path / "c", [median * 0.5, median, median * 2.0])
    assert judged(base, current, "trust-region radius", radius_factor=3.0 + delta) is regresses


def test_radius_within_the_base_range_passes_and_cells_without_one_are_not_judged(tmp_path: Path) -> None:
    base = radius_cell(tmp_path / "b", [0.2, 0.3, 0.4])
    assert reasons(base, radius_cell(tmp_path / "c", [0.1, 0.2, 0.9]), radius_factor=1.0) == []
    adam_base = cell(tmp_path / "ab", [[90, 6, 4.5]] * 3)
    assert reasons(adam_base, cell(tmp_path / "ac", [[90, 6, 4.5]] * 3), radius_factor=1.0) == []


def test_radius_factor_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="radius_factor must be >= 1"):
        Tolerances(radius_factor=0.5)
