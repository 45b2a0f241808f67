"""The regression gate: tolerances from the base's spread over seeds, both directions.

By hand: synthetic records (tests/_report_records.py) whose allowed limits are worked out
in the comments. Recorded: baseline files of the real CI suite (tests/data/gate/, written
by scripts/make_gate_records.sh) under changes that only reorder floating-point sums and under
injected regressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _report_records import write_run
from typer.testing import CliRunner

from lsr1bench.cli import app
from lsr1bench.reporting import Tolerances, compare, compare_paths, load_cells, to_markdown
from lsr1bench.reporting.compare import paired_mean_loss

runner = CliRunner()
RECORDED = Path(__file__).parent / "data" / "gate"
BASELINE = Path(__file__).resolve().parents[1] / "outputs" / "baselines" / "ci.json"


def cells_of(root: Path, finals: list[float], train: list[float] | None = None, label: str = "adam",
             targets: tuple[float, ...] = (), **kw):  # fmt: skip
    """One cell, a seed per entry of ``finals`` (the final test error %, epoch 1 two points
    higher); 2 epochs."""
    suite = root / "gate"
    for seed, final in enumerate(finals):
        loss = train[seed] if train else 0.3
        write_run(suite, [90, final + 2, final], label=label, optimizer=label, seed=seed, targets=targets,
                  batch_size=50, train_losses=[2.3, 1.0, loss], **kw)  # fmt: skip
    cells, _ = load_cells(suite)
    return cells


def regressions(base, current, **tol) -> list[str]:
    comparison = compare(base, current, Tolerances(**tol))
    return [reason for diff in comparison.diffs for reason in diff.regressions]


def test_final_error_tolerance_is_the_base_range_widened_by_its_width(tmp_path: Path) -> None:
    base = cells_of(tmp_path / "base", [4.0, 4.5, 5.0])
    # allowed = max 5.0 + max(floor 1.0, 1 x (5.0 - 4.0)) = 6.0: a median of 6.0 passes, 6.1 does not
    assert regressions(base, cells_of(tmp_path / "a", [5.2, 6.0, 7.5])) == []
    assert regressions(base, cells_of(tmp_path / "b", [5.2, 6.1, 7.5])) == [
        "final test error: median 6.10%, base 4.50% [4.00–5.00]; allowed up to 6.00%"
    ]
    # spread 2 x the range: allowed 5.0 + max(1.0, 2.0) = 7.0
    assert regressions(base, cells_of(tmp_path / "c", [5.2, 6.1, 7.5]), spread=2.0) == []
    # all seeds alike: the floor alone, 4.5 + 1.0
    flat = cells_of(tmp_path / "flat", [4.5, 4.5, 4.5])
    assert regressions(flat, cells_of(tmp_path / "d", [4.0, 5.5, 5.5])) == []
    assert len(regressions(flat, cells_of(tmp_path / "e", [4.0, 5.6, 5.6]))) == 1


def test_final_train_loss_tolerance(tmp_path: Path) -> None:
    base = cells_of(tmp_path / "base", [5.0] * 3, train=[0.30, 0.35, 0.40])
    # allowed = 0.40 + max(20% of the median 0.35 = 0.07, 1 x (0.40 - 0.30)) = 0.50
    # (seed by seed the mean train loss rises by up to 14%: that rule is switched off here)
    off = {"paired_percent": 1000.0}
    assert regressions(base, cells_of(tmp_path / "a", [5.0] * 3, train=[0.3, 0.49, 0.6]), **off) == []
    assert regressions(base, cells_of(tmp_path / "b", [5.0] * 3, train=[0.3, 0.51, 0.6]), **off) == [
        "final train loss: median 0.5100, base 0.3500 [0.3000–0.4000]; allowed up to 0.5000"
    ]


def first_epoch_losses(root: Path, first: list[float], last: float = 0.3):
    """One cell, a seed per entry of ``first``: train loss 2.3 untrained, ``first[seed]`` after
    epoch 1, ``last`` after epoch 2, so the mean train loss over the epochs is (first + last) / 2;
    the test error is the same in every seed."""
    for seed, loss in enumerate(first):
        write_run(root / "gate", [90, 6.0, 5.0], label="adam", optimizer="adam", seed=seed, targets=(),
                  batch_size=50, train_losses=[2.3, loss, last])  # fmt: skip
    return load_cells(root / "gate")[0]


def test_mean_train_loss_is_compared_seed_by_seed(tmp_path: Path) -> None:
    # base means (1.00 + 0.3) / 2 = 0.65, 0.66, 0.67; every seed ends at 0.3, so the final train
    # loss has no range over seeds and the floor sets the limit: a seed's mean may rise by 2%
    base = first_epoch_losses(tmp_path / "base", [1.00, 1.02, 1.04])
    # a slower first epoch, made up by the last: means 0.70, 0.71, 0.72, final values unchanged
    slower = first_epoch_losses(tmp_path / "slower", [1.10, 1.12, 1.14])
    assert regressions(base, slower) == [
        "mean train loss: median change +7.6% over 3 seeds paired with themselves (seed 0 +7.7%, seed 1 "
        "+7.6%, seed 2 +7.5%); allowed up to +2.0% (the larger of 2% and 1 x the base's range over seeds of the "
        "final train loss, 0.0% of its median)"
    ]
    # the base's means, 3% higher, dealt to other seeds (0.67, 0.65, 0.66 x 1.03): the median over
    # seeds rose 3%, but seed by seed +6.2%, +1.4%, +1.5%, a median of +1.5%: each seed is read
    # against itself, and a rounding change that reshuffles where the seeds end is no shift
    shuffled = first_epoch_losses(tmp_path / "shuffled", [2 * 0.67 * 1.03 - 0.3, 2 * 0.65 * 1.03 - 0.3,
                                                          2 * 0.66 * 1.03 - 0.3])  # fmt: skip
    assert regressions(base, shuffled) == []
    # a faster first epoch is an improvement, never a regression
    comparison = compare(slower, base)
    assert comparison.exit_code == 0
    assert comparison.diffs[0].improved_quantities == {"mean train loss"}
    # the table shows the medians and the median paired change; the row reads REGRESSED
    text = to_markdown(compare(base, slower))
    (row,) = [line for line in text.splitlines() if line.startswith("| lenet5") and "0.6600" in line]
    assert "0.6600 [0.6500–0.6700] → 0.7100 [0.7000–0.7200] (+7.6% paired)" in row
    assert row.split("|")[-2].strip() == "REGRESSED"


def test_mean_train_loss_is_not_paired_across_horizons(tmp_path: Path) -> None:
    """A mean over two epochs is not one over three: with other epochs on the other side the
    rule has nothing to compare (the settings line shows the epochs that differ)."""
    base = first_epoch_losses(tmp_path / "base", [1.00, 1.02, 1.04])
    for seed in range(3):
        write_run(tmp_path / "longer" / "gate", [90, 6.0, 5.0, 5.0], label="adam", optimizer="adam", seed=seed,
                  targets=(), batch_size=50, train_losses=[2.3, 1.5, 0.3, 0.3])  # fmt: skip
    longer = load_cells(tmp_path / "longer" / "gate")[0]
    assert regressions(base, longer) == []


def test_loss_targets_are_gated_like_error_targets(tmp_path: Path) -> None:
    def suite(root: Path, train_by_seed: list[list[float]]) -> list:
        for seed, train in enumerate(train_by_seed):
            write_run(root / "gate", [90, 6.0, 5.0, 4.5], seed=seed, targets={"train_loss": [0.5]},
                      train_losses=train)  # fmt: skip
        return load_cells(root / "gate")[0]

    # base: below 0.5 at epoch 1 in every seed; allowed 1 + max(1, 0) = 2
    base = suite(tmp_path / "base", [[2.3, 0.45, 0.3, 0.2]] * 3)
    # (the mean train loss over the epochs rises too: that rule is switched off here)
    off = {"paired_percent": 1000.0}
    later = suite(tmp_path / "a", [[2.3, 0.6, 0.45, 0.2]] * 3)  # epoch 2: within
    assert regressions(base, later, **off) == []
    much_later = suite(tmp_path / "b", [[2.3, 0.6, 0.55, 0.2]] * 3)  # epoch 3
    assert regressions(base, much_later, **off) == [
        "train loss < 0.5: median epochs 1 -> 3 (reached by 3/3 seeds, base 3/3); allowed up to 2"
    ]


def test_new_draws_from_the_seeds_distribution_pass(tmp_path: Path) -> None:
    """What a rounding change does: each seed lands somewhere else in the same distribution.

    Here the median final error rises by 0.7 points, which the previous gate (base median +
    0.5 points) failed."""
    base = cells_of(tmp_path / "base", [4.2, 4.8, 5.3], train=[0.34, 0.37, 0.41], targets=(10.0,))
    current = cells_of(tmp_path / "current", [5.5, 5.6, 4.4], train=[0.42, 0.33, 0.38], targets=(10.0,))
    # final error: allowed 5.3 + max(1.0, 1.1) = 6.4 >= 5.5. Epochs to 10%: 1 in every seed.
    # Train loss: allowed 0.41 + max(0.074, 0.07) = 0.484 >= 0.38.
    assert regressions(base, current) == []
    # with no room beyond the base's own range the same draws fail
    assert [r.split(":")[0] for r in regressions(base, current, spread=0.0, final_error=0.1)] == ["final test error"]


def test_a_target_lost_by_most_seeds_regresses_on_a_short_horizon(tmp_path: Path) -> None:
    """The issue's case: 2 epochs, a target reached at epoch 2 by 2 of 3 seeds, then by 1 of 3.

    Counting a miss as "one epoch past the last" (3) made the median 3 <= 2 + 1 and passed
    it; as +inf the median of (2, inf, inf) is infinite where the base's (2, 2, inf) was 2."""
    base = cells_of(tmp_path / "base", [4.2, 4.8, 5.3], targets=(5.0,))
    current = cells_of(tmp_path / "current", [5.5, 5.6, 4.4], targets=(5.0,))
    assert regressions(base, current) == [
        "< 5%: median epochs 2 -> never (by epoch 2) (reached by 1/3 seeds, base 2/3); the base's median was finite"
    ]
    # the other way round it is an improvement, never a regression
    comparison = compare(current, base)
    assert comparison.exit_code == 0
    assert comparison.diffs[0].improvements == [
        "< 5%: median epochs never (by epoch 2) -> 2 (reached by 2/3 seeds, base 1/3)"
    ]


def test_rows_that_did_not_change_never_read_regressed(tmp_path: Path) -> None:
    """The final error regresses; the 1 % target (never reached on both sides) and the 10 %
    target (epoch 1 on both sides) rows read ok, the final-values row REGRESSED."""
    base = cells_of(tmp_path / "base", [4.0, 4.5, 5.0], targets=(1.0, 10.0))
    current = cells_of(tmp_path / "current", [7.0, 7.5, 8.0], targets=(1.0, 10.0))
    comparison = compare(base, current)
    assert comparison.exit_code == 1
    (diff,) = comparison.diffs
    assert diff.regressed_quantities == {"final test error"}
    rows = [line for line in to_markdown(comparison).splitlines() if line.startswith("| lenet5")]
    assert [row.split("|")[2].strip() for row in rows[:2]] == ["< 1%", "< 10%"]
    assert [row.split("|")[-2].strip() for row in rows] == ["ok", "ok", "REGRESSED"]


def test_settings_that_differ_are_listed_beside_the_regression(tmp_path: Path) -> None:
    base = cells_of(tmp_path / "base", [4.4, 4.4, 4.4], label="lsr1", optimizer_params={"memory": 5})
    base += cells_of(tmp_path / "base", [5.5, 5.5, 5.5], label="adam2", optimizer_params={"lr": 0.001})
    current = cells_of(tmp_path / "cur", [5.5, 5.5, 5.5], label="lsr1", optimizer_params={"memory": 1},
                       git_commit="fedcba9876543210+dirty")  # fmt: skip
    current += cells_of(tmp_path / "cur", [5.5, 5.5, 5.5], label="adam2", optimizer_params={"lr": 0.001},
                        git_commit="fedcba9876543210+dirty")  # fmt: skip
    text = to_markdown(compare(base, current))
    assert "FAIL: 1 of 2 cells regressed" in text
    # the commit changed everywhere: said once; the memory only for L-SR1, beside its regression
    assert "Settings that differ in every cell: commit 0123456789ab → fedcba987654+dirty." in text
    assert (
        "- **lenet5 + BN · mnist · lsr1 · b50**: final test error: median 5.50%, base 4.40% [4.40–4.40]; "
        "allowed up to 5.40% (settings that differ: params.memory 5 → 1)" in text
    )


def test_cli_options_for_the_spread_and_the_loss_floor(tmp_path: Path) -> None:
    base = write_baseline(cells_of(tmp_path / "base", [4.0, 4.5, 5.0]), tmp_path / "base.json")
    current = tmp_path / "cur" / "gate"
    cells_of(tmp_path / "cur", [5.2, 6.1, 7.5])
    assert runner.invoke(app, ["compare", str(base), str(current)]).exit_code == 1
    assert runner.invoke(app, ["compare", str(base), str(current), "--spread", "1.2"]).exit_code == 0
    assert runner.invoke(app, ["compare", str(base), str(current), "--error-tol", "1.2"]).exit_code == 0
    result = runner.invoke(app, ["compare", str(base), str(current), "--spread", "-1"])
    assert result.exit_code == 2 and "--spread: must be >= 0, got -1" in result.output
    result = runner.invoke(app, ["compare", str(base), str(current), "--loss-pct", "-5"])
    assert result.exit_code == 2 and "--loss-pct: must be >= 0, got -5" in result.output
    result = runner.invoke(app, ["compare", str(base), str(current), "--paired-pct", "-0.5"])
    assert result.exit_code == 2 and "--paired-pct: must be >= 0, got -0.5" in result.output


def test_cli_options_for_the_paired_rule(tmp_path: Path) -> None:
    # every seed's mean train loss +7.6% (test_mean_train_loss_is_compared_seed_by_seed)
    base = write_baseline([first_epoch_losses(tmp_path / "base", [1.00, 1.02, 1.04])[0]], tmp_path / "base.json")
    first_epoch_losses(tmp_path / "cur", [1.10, 1.12, 1.14])
    current = tmp_path / "cur" / "gate"
    result = runner.invoke(app, ["compare", str(base), str(current)])
    assert result.exit_code == 1 and "mean train loss: median change +7.6%" in result.output
    assert runner.invoke(app, ["compare", str(base), str(current), "--paired-pct", "7.7"]).exit_code == 0
    assert runner.invoke(app, ["compare", str(base), str(current), "--paired-pct", "7.5"]).exit_code == 1


def test_cli_option_for_the_radius_factor() -> None:
    """The broken radius update at batch 100 ends 12 times below the base's median radius, 5.5
    times below its smallest seed: a factor of 5 still fails it, 6 lets it pass; below 1 is
    refused."""
    base, current = str(recorded("base")), str(recorded("lsr1-radius-broken"))
    only_b100 = ["--error-tol", "5", "--paired-pct", "50"]  # batch 50 fails on those; keep to the radius
    result = runner.invoke(app, ["compare", base, current, *only_b100, "--radius-factor", "5"])
    assert result.exit_code == 1 and "trust-region radius: median 0.03726" in result.output
    assert runner.invoke(app, ["compare", base, current, *only_b100, "--radius-factor", "6"]).exit_code == 0
    result = runner.invoke(app, ["compare", base, current, "--radius-factor", "0.5"])
    assert result.exit_code == 2 and "--radius-factor: must be >= 1, got 0.5" in result.output


def write_baseline(cells: list, path: Path) -> Path:
    from lsr1bench.reporting.cells import baseline_dict

    path.write_text(json.dumps(baseline_dict(cells, "test")), encoding="utf-8")
    return path


# --- recorded runs of suites/ci.yaml (scripts/make_gate_records.sh) ----------------------
#
# base.json is the suite's runs the CI baseline was exported from; each other file in
# tests/data/gate/ is the same suite under one change, with the cells the change does not
# touch copied from the base. The variants are compared with base.json, not with the
# committed baseline, so they test the gate on the runs they hold and stay valid when the
# baseline is refreshed after an optimizer change. Rounding-only changes must pass with no
# row reading REGRESSED; each injected regression must fail naming the cell and the
# quantity, and only in the cells it touched.

CELLS = [f"lenet5 + BN · mnist-embedded · {label} · b{batch}" for label in ("adam", "lsr1", "nag")
         for batch in (100, 50)]  # fmt: skip


def recorded(name: str) -> Path:
    return RECORDED / f"{name}.json"


def against_base(name: str):
    return compare_paths(recorded("base"), recorded(name))


def regressed_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ") and line.split("|")[-2].strip() == "REGRESSED"]


@pytest.mark.parametrize("baseline", [BASELINE, RECORDED / "base.json"], ids=["ci.json", "base.json"])
def test_every_target_of_the_baseline_is_reached_before_the_last_epoch(baseline: Path) -> None:
    """The horizon does not decide a row: every seed of every cell reaches every target
    at least one epoch before the last, so a delay of an epoch still reaches it."""
    cells, _ = load_cells(baseline)
    assert sorted(c.key.describe(with_suite=False) for c in cells) == sorted(CELLS)
    for cell in cells:
        for target in cell.targets.values():
            assert target.horizon == 3
            assert all(e is not None and e < target.horizon for e in target.epochs_by_seed), (cell.key, target)


NON_CHANGES = ["rerun", "hashseed", "no-simd", "threads-adam-nag"]


@pytest.mark.parametrize("name", NON_CHANGES)
def test_recorded_reruns_and_rounding_changes_pass(name: str) -> None:
    """A rerun and another hash seed change nothing (one thread layout is deterministic);
    kernels without vector instructions (every cell) and two torch threads instead of one
    (Adam's and NAG's cells) change only the rounding."""
    comparison = against_base(name)
    text = to_markdown(comparison)
    assert comparison.exit_code == 0, text
    assert len(comparison.diffs) == 6
    assert regressed_rows(text) == []


@pytest.mark.parametrize("name", NON_CHANGES)
def test_recorded_rounding_changes_pass_the_paired_rule_with_margin(name: str) -> None:
    """The paired mean train loss of a rounding-only change stays within half its limit in
    every cell, and its cells are all paired (the records keep each seed's values)."""
    base = {d.key: d.base for d in against_base(name).diffs}
    for diff in against_base(name).diffs:
        paired = paired_mean_loss(base[diff.key], diff.current)
        assert paired is not None and sorted(paired.changes) == [0, 1, 2], diff.key
        limit = Tolerances().paired_allowed(diff.base)
        assert abs(paired.median) <= limit / 2, (diff.key, paired.changes, limit)


@pytest.mark.parametrize("base, current", [("threads1", "threads2"), ("threads2", "threads1")])
def test_recorded_thread_count_change_passes(base: str, current: str) -> None:
    """Two-epoch version of the suite: two workers with one torch thread each against one
    worker with two threads, both ways. Under the +inf rule too: where one side has a
    target missed by all seeds and the other by two of three, both medians are infinite."""
    comparison = compare_paths(recorded(f"two-epoch-{base}"), recorded(f"two-epoch-{current}"))
    text = to_markdown(comparison)
    assert comparison.exit_code == 0, text
    assert regressed_rows(text) == []
    one, two = ("1", "2") if base == "threads1" else ("2", "1")
    assert comparison.common_settings["torch threads"] == (one, two)


def regressed_quantities(name: str) -> dict[str, set[str]]:
    comparison = against_base(name)
    assert comparison.exit_code == 1, to_markdown(comparison)
    return {d.key.describe(with_suite=False): d.regressed_quantities for d in comparison.regressed}


def assert_rows(name: str, regressed: dict[str, set[str]]) -> None:
    """The Markdown names each regressed cell and quantity; the rows of the cells the change
    did not touch (copied from the base) read ok, and those of a touched cell that did not
    regress read ok or improved (the broken radius update lowers L-SR1's mean train loss at
    batch 100)."""
    comparison = against_base(name)
    text = to_markdown(comparison)
    touched = {d.key.describe(with_suite=False) for d in comparison.diffs if d.settings}
    for cell, quantities in regressed.items():
        (line,) = [line for line in text.splitlines() if line.startswith(f"- **{cell}**: ")]
        for quantity in quantities:
            # "runs" is read as what happened to them: diverged, failed, incomplete, fewer seeds
            runs = ("diverged: ", "failed: ", "incomplete: ", " seeds, base had ")
            words = runs if quantity == "runs" else (quantity,)
            assert any(word in line for word in words), (quantity, line)
    for line in text.splitlines():
        if line.startswith("| lenet5") and not any(line.startswith(f"| {cell} ") for cell in regressed):
            touched_row = any(line.startswith(f"| {cell} ") for cell in touched)
            assert line.split("|")[-2].strip() in (("ok", "improved") if touched_row else ("ok",)), line


RECORDED_REGRESSIONS = {
    # variant: {cell: quantities that must be among the regressed ones}
    "adam-lr-x0.25": {
        f"lenet5 + BN · mnist-embedded · adam · b{batch}": {
            "< 10%",
            "test loss < 0.3",
            "final test error",
            "final train loss",
            "mean train loss",
        }
        for batch in (50, 100)
    },  # fmt: skip
    # every target still reached, final values within the seeds' range; the first epoch slower
    # in every seed: the mean train loss +19% and +28% (b50, b100), +3.8% and +6.7% at 0.8
    "adam-lr-x0.5": {f"lenet5 + BN · mnist-embedded · adam · b{batch}": {"mean train loss"} for batch in (50, 100)},
    "adam-lr-x0.8": {f"lenet5 + BN · mnist-embedded · adam · b{batch}": {"mean train loss"} for batch in (50, 100)},
    "nag-diverges": {
        f"lenet5 + BN · mnist-embedded · nag · b{batch}": {
            "runs",
            "< 10%",
            "test loss < 0.3",
            "train loss < 0.6",
            "train loss < 1",
        }
        for batch in (50, 100)
    },  # fmt: skip
    # the broken radius update: at batch 50 its final test error (4.00% -> 5.80%, allowed 5.70%;
    # its mean train loss +16.4% is at the limit L-SR1's wide seeds set, 16.0%); at batch 100
    # only its radius (median 0.037 against the base's 0.21-0.46, allowed down to 0.069), the
    # losses staying within L-SR1's rounding noise (below)
    "lsr1-radius-broken": {
        "lenet5 + BN · mnist-embedded · lsr1 · b50": {"final test error"},
        "lenet5 + BN · mnist-embedded · lsr1 · b100": {"trust-region radius"},
    },
}


@pytest.mark.parametrize("name", sorted(RECORDED_REGRESSIONS))
def test_recorded_regressions_fail_naming_cell_and_quantity(name: str) -> None:
    expected = RECORDED_REGRESSIONS[name]
    regressed = regressed_quantities(name)
    assert sorted(regressed) == sorted(expected)
    for cell, quantities in expected.items():
        assert quantities <= regressed[cell], (cell, regressed[cell])
    assert_rows(name, regressed)


def test_recorded_divergence_is_counted() -> None:
    for diff in against_base("nag-diverges").regressed:
        assert "diverged: 3/3 seeds (base 0/3)" in diff.regressions


def test_recorded_broken_radius_at_batch_100_fails_on_its_radius_alone() -> None:
    """At batch 100 the broken radius update first helps (epoch 1's train loss lower in every
    seed, the radius collapses only after it), then slows the last two epochs. Over three epochs
    its mean train loss falls, and its final values move less than a rounding-only change moves
    L-SR1's seeds (no-simd: a seed's final train loss by up to 9.8%, its mean by up to 7.7%):
    the losses cannot see it. The radius does: it ends 12 times below the base's median."""
    diffs = against_base("lsr1-radius-broken").diffs
    diff = next(d for d in diffs if d.key.label == "lsr1" and d.key.batch_size == 100)
    assert diff.regressed_quantities == {"trust-region radius"}
    paired = paired_mean_loss(diff.base, diff.current)
    assert paired is not None and all(change < 0 for change in paired.changes.values())
    assert diff.current.final_train_loss.median / diff.base.final_train_loss.median - 1 < 0.03
    assert diff.current.final_test_error.median - diff.base.final_test_error.median < 1.0


@pytest.mark.parametrize(("base", "current"), [("base", "no-simd"), ("base", "rerun"), ("base", "hashseed"),
                                               ("two-epoch-threads1", "two-epoch-threads2"),
                                               ("two-epoch-threads2", "two-epoch-threads1")])  # fmt: skip
def test_rounding_changes_keep_the_radius_well_inside_its_limit(base: str, current: str) -> None:
    """The rounding-only changes move the median of L-SR1's final radius by at most a factor of
    two, and stay inside the base's range widened by 2 (not only by the default factor 3)."""
    comparison = compare_paths(recorded(base), recorded(current), Tolerances(radius_factor=2.0))
    cells = [d for d in comparison.diffs if d.key.label == "lsr1"]
    assert len(cells) == 2
    for diff in cells:
        assert "trust-region radius" not in diff.regressed_quantities, diff.regressions


def test_recorded_regression_lists_the_setting_that_caused_it() -> None:
    text = to_markdown(against_base("adam-lr-x0.25"))
    cell = "- **lenet5 + BN · mnist-embedded · adam · b100**"
    (line,) = [line for line in text.splitlines() if line.startswith(cell)]
    assert "(settings that differ: " in line and "params.lr 0.001 → 0.00025" in line


@pytest.mark.slow
def test_end_to_end_adam_at_a_quarter_of_its_rate_fails_and_at_its_own_passes(tmp_path: Path) -> None:
    """Train the CI suite's Adam cell at batch 100 (3 seeds, 3 epochs) with `lsr1bench run`
    and gate it with `lsr1bench compare` against that cell of the recorded base."""
    import yaml

    from lsr1bench.reporting.cells import baseline_dict

    (cell,) = [c for c in load_cells(RECORDED / "base.json")[0] if c.key.label == "adam" and c.key.batch_size == 100]
    base = tmp_path / "base.json"
    base.write_text(json.dumps(baseline_dict([cell], "ci.json, adam at batch 100")), encoding="utf-8")
    suite = yaml.safe_load((BASELINE.parents[2] / "suites" / "ci.yaml").read_text(encoding="utf-8"))
    suite["grids"][0]["batch_sizes"] = [100]
    codes = {}
    for name, params in (("quarter", {"lr": 0.00025}), ("same", {})):
        suite["grids"][0]["optimizers"] = [{"name": "adam", "params": params}]
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(suite), encoding="utf-8")
        ran = runner.invoke(app, ["run", str(path), "--output", str(tmp_path / name)])
        assert ran.exit_code == 0, ran.output
        result = runner.invoke(app, ["compare", str(base), str(tmp_path / name / "ci")])
        codes[name] = result.exit_code
        if name == "quarter":
            assert "**lenet5 + BN · mnist-embedded · adam · b100**: " in result.output, result.output
            assert "final test error: median" in result.output, result.output
        else:
            assert regressed_rows(result.output) == [], result.output
    assert codes == {"quarter": 1, "same": 0}


def test_two_builds_of_one_torch_version_are_no_setting_difference(tmp_path: Path) -> None:
    """A baseline recorded with the CUDA build and a CI run with the CPU build of the same
    torch release: no settings line; another release is still listed."""

    def versions(torch: str) -> dict[str, str]:
        return {"python": "3.11.7", "torch": torch, "lsr1bench": "0.1.0"}

    base = cells_of(tmp_path / "base", [4.4, 4.4, 4.4], versions=versions("2.14.1+cu130"))
    same = cells_of(tmp_path / "cpu", [4.4, 4.4, 4.4], versions=versions("2.14.1+cpu"))
    other = cells_of(tmp_path / "new", [4.4, 4.4, 4.4], versions=versions("2.15.0+cpu"))
    assert "Settings that differ" not in to_markdown(compare(base, same))
    assert "torch 2.14.1+cu130 → 2.15.0+cpu" in to_markdown(compare(base, other))


def test_the_readme_shows_the_rule_compare_prints() -> None:
    """The README's example comparison ("Regression gate in CI") quotes the rule as the code
    prints it with the default tolerances, so a change to either shows here."""
    readme = (BASELINE.parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"    Gate: {Tolerances().describe()}\n" in readme
