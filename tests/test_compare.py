"""`lsr1bench compare`: exit codes 0 / 1 / 2, tolerances, and the Markdown diff."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _report_records import NAN, write_run
from typer.testing import CliRunner

from lsr1bench.cli import app
from lsr1bench.reporting import Tolerances, build_report, compare_paths, export_baseline, to_markdown

runner = CliRunner()

# Base: lsr1 reaches 5% at epoch 2 and 2% at epoch 4 in both seeds, final error 1.5%,
# skipped updates 10% (4 of 40 steps); sgd reaches 5% at epoch 3, final 3%. 2 s per epoch.
# Every seed is alike, so the base has no spread and the floors alone set the tolerance.
LSR1 = [90, 8.0, 4.0, 3.0, 1.9, 1.5]
SGD = [90, 9.0, 6.0, 4.5, 3.5, 3.0]
TRAIN = [2.3, 0.9, 0.5, 0.4, 0.35, 0.3]  # the train loss, whatever the test error does
QN = {"steps": 40, "skipped_updates": 4, "rejected_steps": 1, "dropped_pairs": 0, "radius": 1.0}


def make_suite(root: Path, lsr1=LSR1, sgd=SGD, qn=QN, seconds=2.0, seeds=(0, 1), name="ci", **kw) -> Path:
    suite = root / name
    for seed in seeds:
        write_run(
            suite,
            kw.get(f"lsr1_s{seed}", lsr1),
            label="lsr1",
            batch_size=100,
            seed=seed,
            targets=(5.0, 2.0),
            qn_final=qn,
            seconds_per_epoch=seconds,
            status=kw.get(f"status_s{seed}", "completed"),
            epochs=5,
            train_losses=kw.get("train", TRAIN)[: len(kw.get(f"lsr1_s{seed}", lsr1))],
        )
        if not kw.get("drop_sgd"):
            write_run(
                suite,
                sgd,
                label="sgd",
                batch_size=100,
                seed=seed,
                targets=(5.0, 2.0),
                seconds_per_epoch=seconds,
                train_losses=TRAIN,
            )
    return suite


@pytest.fixture()
def base(tmp_path: Path) -> Path:
    return make_suite(tmp_path / "base")


def run_compare(base: Path, current: Path, *options: str):
    return runner.invoke(app, ["compare", str(base), str(current), *options])


def test_identical_results_pass(base: Path, tmp_path: Path) -> None:
    current = make_suite(tmp_path / "current")
    result = run_compare(base, current)
    assert result.exit_code == 0, result.output
    assert "PASS: no regression in 2 cells" in result.output
    assert "| ci · mnist" not in result.output  # one suite: the suite name is not repeated


def test_one_more_epoch_is_within_default_tolerance(base: Path, tmp_path: Path) -> None:
    slower = [90, 8.0, 6.0, 4.0, 3.0, 1.5]  # 5% at epoch 3 (+1), 2% at epoch 5 (+1)
    current = make_suite(tmp_path / "current", lsr1=slower)
    assert run_compare(base, current).exit_code == 0


def test_two_more_epochs_regress(base: Path, tmp_path: Path) -> None:
    slower = [90, 8.0, 7.0, 6.0, 4.0, 1.5]  # 5% at epoch 4: +2 over the base's 2
    current = make_suite(tmp_path / "current", lsr1=slower)
    result = run_compare(base, current)
    assert result.exit_code == 1, result.output
    assert "FAIL: 1 of 2 cells regressed" in result.output
    assert "### Regressions" in result.output
    assert (
        "**lenet5 + BN · mnist · lsr1 · b100**: < 5%: median epochs 2 -> 4 (reached by 2/2 seeds, "
        "base 2/2); allowed up to 3" in result.output
    )
    assert run_compare(base, current, "--epochs-tol", "2").exit_code == 0


def test_relative_epoch_tolerance(tmp_path: Path) -> None:
    # Base reaches 5% at epoch 20; +3 epochs exceeds max(1, 10% of 20 = 2) but not 20% (4).
    base_errors = [90] + [9.0] * 19 + [4.0]
    current_errors = [90] + [9.0] * 22 + [4.0]
    base = tmp_path / "b" / "s"
    current = tmp_path / "c" / "s"
    write_run(base, base_errors, targets=(5.0,))
    write_run(current, current_errors, targets=(5.0,))
    assert run_compare(base, current).exit_code == 1
    assert run_compare(base, current, "--epochs-pct", "20").exit_code == 0


def test_final_error_tolerance(base: Path, tmp_path: Path) -> None:
    worse = LSR1[:-1] + [2.4]  # final 1.5 -> 2.4 = +0.9 points, within the floor of 1 (no spread)
    assert run_compare(base, make_suite(tmp_path / "a", lsr1=worse)).exit_code == 0
    worse = LSR1[:-2] + [1.9, 2.6]  # 2% still reached at epoch 4; final +1.1 points
    result = run_compare(base, make_suite(tmp_path / "b", lsr1=worse))
    assert result.exit_code == 1
    assert "final test error: median 2.60%, base 1.50% [1.50–1.50]; allowed up to 2.50%" in result.output
    assert run_compare(base, make_suite(tmp_path / "c", lsr1=worse), "--error-tol", "1.5").exit_code == 0


def test_skip_rate_tolerance(base: Path, tmp_path: Path) -> None:
    more_skips = dict(QN, skipped_updates=7)  # 10% -> 17.5%: +7.5 points
    current = make_suite(tmp_path / "current", qn=more_skips)
    result = run_compare(base, current)
    assert result.exit_code == 1
    assert "skipped updates: median 17.50%, base 10.00% [10.00–10.00]; allowed up to 15.00%" in result.output
    assert run_compare(base, current, "--skip-tol", "10").exit_code == 0


def test_wall_clock_is_reported_not_gated(base: Path, tmp_path: Path) -> None:
    current = make_suite(tmp_path / "current", seconds=4.0)
    result = run_compare(base, current)
    assert result.exit_code == 0, result.output
    assert "10.0 → 20.0 (+100%)" in result.output
    gated = run_compare(base, current, "--time-pct", "50")
    assert gated.exit_code == 1 and "training time +100% (allowed +50%)" in gated.output


def test_missing_cell_regresses_and_new_cell_does_not(base: Path, tmp_path: Path) -> None:
    result = run_compare(base, make_suite(tmp_path / "a", drop_sgd=True))
    assert result.exit_code == 1
    assert "sgd · b100**: missing from CURRENT" in result.output
    result = run_compare(make_suite(tmp_path / "b", drop_sgd=True), base)
    assert result.exit_code == 0, result.output
    assert "| new " in result.output


def test_seeds_not_reaching_a_target_and_divergence_regress(tmp_path: Path) -> None:
    base = make_suite(tmp_path / "base", seeds=(0, 1, 2))
    never = [90, 8.0, 4.0, 3.0, 2.5, 2.05]  # never below 2%: counts as +inf epochs
    # One seed of three: the median stays at 4, and one miss is allowed where the base had none.
    assert run_compare(base, make_suite(tmp_path / "a", seeds=(0, 1, 2), lsr1_s1=never)).exit_code == 0
    # Two of three: the median is infinite, where the base's was finite.
    result = run_compare(base, make_suite(tmp_path / "b", seeds=(0, 1, 2), lsr1_s1=never, lsr1_s2=never))
    assert result.exit_code == 1
    assert (
        "< 2%: median epochs 4 -> never (by epoch 5) (reached by 1/3 seeds, base 3/3); the base's median was finite"
        in result.output
    )
    base = make_suite(tmp_path / "base2")
    diverged = [90, 8.0, NAN]
    result = run_compare(base, make_suite(tmp_path / "c", lsr1_s1=diverged, status_s1="diverged"))
    assert result.exit_code == 1
    assert "diverged: 1/2 seeds (base 0/2)" in result.output
    assert "| 2 (1/2, 1 diverged)" in result.output


def test_fewer_seeds_and_incomplete_runs_regress(base: Path, tmp_path: Path) -> None:
    result = run_compare(base, make_suite(tmp_path / "a", seeds=(0,)))
    assert result.exit_code == 1 and "1 seeds, base had 2" in result.output
    partial = make_suite(tmp_path / "b", lsr1_s1=LSR1[:3], status_s1="running")
    result = run_compare(base, partial)
    assert result.exit_code == 1 and "incomplete: 1/2 seeds (base 0/2)" in result.output


def test_baseline_file_against_folder_with_another_suite_name(base: Path, tmp_path: Path) -> None:
    baseline = export_baseline(build_report(base), tmp_path / "outputs" / "baselines" / "ci.json")
    current = make_suite(tmp_path / "current", name="ci-renamed")
    result = run_compare(baseline, current)
    assert result.exit_code == 0, result.output
    assert "suite 'ci' compared with suite 'ci-renamed'" in result.output
    # Both sides as baseline files works too.
    assert run_compare(baseline, baseline).exit_code == 0


def test_markdown_out_file(base: Path, tmp_path: Path) -> None:
    out = tmp_path / "comment.md"
    result = run_compare(base, base, "--markdown-out", str(out))
    assert result.exit_code == 0
    text = out.read_text(encoding="utf-8")
    assert text.startswith("## lsr1bench compare: PASS")
    assert "| cell " in text and "| target " in text and "### Epochs to target" in text
    assert "training time is reported, not gated" in text


def test_library_api(base: Path, tmp_path: Path) -> None:
    current = make_suite(tmp_path / "current", qn=dict(QN, skipped_updates=8))
    comparison = compare_paths(base, current, Tolerances(skip_rate=20.0))
    assert comparison.exit_code == 0
    assert "skipped updates %" in to_markdown(comparison)
    with pytest.raises(ValueError):
        Tolerances(epochs=-1)


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "bad-json",
        "not-a-baseline",
        "no-cells",
        "malformed-cell",
        "empty-dir",
        "negative-tol",
    ],
)
def test_bad_input_exits_2(base: Path, tmp_path: Path, case: str) -> None:
    bad = tmp_path / "bad.json"
    options: list[str] = []
    if case == "missing":
        bad = tmp_path / "nowhere"
    elif case == "bad-json":
        bad.write_text("{ nope")
    elif case == "not-a-baseline":
        bad.write_text(json.dumps({"cells": []}))
    elif case == "no-cells":
        bad.write_text(json.dumps({"format": "lsr1bench-baseline", "version": 1, "cells": []}))
    elif case == "malformed-cell":
        bad.write_text(json.dumps({"format": "lsr1bench-baseline", "version": 1, "cells": [{"suite": "x"}]}))
    elif case == "empty-dir":
        bad = tmp_path / "empty"
        bad.mkdir()
    elif case == "negative-tol":
        bad, options = base, ["--error-tol", "-1"]
    result = run_compare(bad, base, *options)
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    result = run_compare(base, bad, *options)
    assert result.exit_code == 2, result.output


def test_cells_without_targets(tmp_path: Path) -> None:
    suite = tmp_path / "b" / "quick"
    write_run(suite, [90, 5.0, 4.0], targets=())
    result = run_compare(suite, suite)
    assert result.exit_code == 0, result.output
    assert "No cell has targets." in result.output
    worse = tmp_path / "c" / "quick"
    write_run(worse, [90, 5.0, 5.2], targets=())  # +1.2 points
    assert run_compare(suite, worse).exit_code == 1
