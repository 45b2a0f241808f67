"""`lsr1bench report`: tables checked against hand-computed values from synthetic records.

The fixture (tests/_report_records.py, ``make_table1_suite``) spells out every run; the
expected numbers below are worked out from those error sequences by hand. Epochs to a
target = the smallest epoch >= 1 whose test error is below it; train seconds grow by 2 per
epoch and gradient evaluations by 100, so those follow from the epoch.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest
from _report_records import NAN, make_table1_suite, write_run
from typer.testing import CliRunner

from lsr1bench.cli import app
from lsr1bench.reporting import (
    ReportError,
    build_report,
    export_baseline,
    main_table,
    missing_lines,
    write_report,
)
from lsr1bench.reporting.cells import Stat, baseline_dict, cells_from_baseline
from lsr1bench.reporting.runs import DIVERGED, INCOMPLETE, NEVER_REACHED, REACHED, Target
from lsr1bench.reporting.tables import target_text

runner = CliRunner()


def err(value: float) -> Target:
    return Target("test_error", value)


@pytest.fixture()
def table1(tmp_path: Path) -> Path:
    return make_table1_suite(tmp_path / "outputs")


def cells_by(report):
    return {(c.key.batch_norm, c.key.label, c.key.batch_size): c for c in report.cells}


def test_epochs_to_target_medians_spreads_and_k_of_n(table1: Path) -> None:
    cells = cells_by(build_report(table1))
    lsr1 = cells[(True, "lsr1", 500)]
    # < 1.5: seeds reach it at epochs 2, 2, 1 -> median 2, spread 1-2, 3/3.
    assert lsr1.targets[err(1.5)].epochs == Stat(2, 1, 2, 3)
    assert lsr1.targets[err(1.5)].outcomes == {REACHED: 3}
    # < 1.2: epochs 3, 4, 4 (1.19 at epoch 4 for seed 2; 1.25 is not below 1.2).
    assert lsr1.targets[err(1.2)].epochs == Stat(4, 3, 4, 3)
    # seconds = 2 per epoch, gradient evaluations = 100 per epoch.
    assert lsr1.targets[err(1.5)].train_seconds == Stat(4.0, 2.0, 4.0, 3)
    assert lsr1.targets[err(1.5)].grad_evals == Stat(200, 100, 200, 3)
    assert target_text(lsr1.targets[err(1.5)], "epochs", str) == "2 [1–2] (3/3)"

    nag = cells[(True, "nag", 500)]
    assert nag.targets[err(1.5)].outcomes == {NEVER_REACHED: 1, REACHED: 1, DIVERGED: 1}
    assert nag.targets[err(1.5)].epochs == Stat(3, 3, 3, 1)
    assert target_text(nag.targets[err(1.5)], "epochs", lambda x: f"{x:g}") == "3 (1/3, 1 diverged)"
    assert nag.targets[err(1.2)].epochs is None
    assert target_text(nag.targets[err(1.2)], "epochs", str) == "never reached (0/3, 1 diverged)"

    # Adam: seed 0 at epochs 1 / 2, seed 1 (still running) reached 1.5 at epoch 2 only.
    adam = cells[(True, "adam", 500)]
    assert adam.targets[err(1.5)].epochs == Stat(1.5, 1, 2, 2)
    assert adam.targets[err(1.2)].outcomes == {REACHED: 1, INCOMPLETE: 1}
    assert target_text(adam.targets[err(1.2)], "epochs", lambda x: f"{x:g}") == "2 (1/2, 1 incomplete)"

    diverged = cells[(True, "lsr1", 1000)]
    assert diverged.targets[err(1.5)].outcomes == {DIVERGED: 3}
    assert target_text(diverged.targets[err(1.5)], "epochs", str) == "diverged (0/3)"

    sgd = cells[(False, "sgd", 20)]
    assert list(sgd.targets) == [err(1.5)]
    assert target_text(sgd.targets[err(1.5)], "epochs", str) == "never reached (0/3)"


def test_main_table_layout_like_table_1(table1: Path) -> None:
    text = main_table(build_report(table1))
    lines = text.splitlines()
    bn = lines.index("### lenet5 with batch norm on mnist")
    header = [c.strip() for c in lines[bn + 2].strip("|").split("|")]
    assert header == [
        "optimizer",
        "< 1.2% · b500",
        "< 1.2% · b1000",
        "< 1.5% · b500",
        "< 1.5% · b1000",
    ]
    rows = {
        cols[0]: cols[1:]
        for cols in ([c.strip() for c in line.strip("|").split("|")] for line in lines[bn + 4 : bn + 7])
    }
    assert rows == {
        "adam": ["2 (1/2, 1 incomplete)", "not run", "1.5 [1–2] (2/2)", "not run"],
        "lsr1": ["4 [3–4] (3/3)", "diverged (0/3)", "2 [1–2] (3/3)", "diverged (0/3)"],
        "nag": ["never reached (0/3, 1 diverged)", "not run", "3 (1/3, 1 diverged)", "not run"],
    }
    # The no-BN group: sgd has no 1.2 target, shown as a dash rather than a number.
    assert "| sgd         | —              | never reached (0/3) |" in text


def test_final_best_error_and_train_loss(table1: Path) -> None:
    cells = cells_by(build_report(table1))
    lsr1 = cells[(True, "lsr1", 500)]
    assert lsr1.final_test_error == Stat(1.15, 1.0, 1.19, 3)
    assert lsr1.best_test_error == Stat(1.15, 1.0, 1.19, 3)
    assert lsr1.final_train_loss.median == pytest.approx(0.115, abs=1e-12)  # error / 10
    nag = cells[(True, "nag", 500)]
    # Final error over the two seeds that did not diverge: 1.6 and 1.3.
    assert nag.final_test_error.median == pytest.approx(1.45, abs=1e-12)
    assert (nag.final_test_error.min, nag.final_test_error.max) == (1.3, 1.6)
    # Best error counts the diverged seed's best before it diverged: 1.6, 1.3, 6.
    assert nag.best_test_error == Stat(1.6, 1.3, 6.0, 3)
    assert nag.statuses == {"completed": 2, "diverged": 1}
    assert cells[(True, "lsr1", 1000)].final_test_error is None


def test_skip_statistics_by_hand(table1: Path) -> None:
    report = build_report(table1)
    lsr1 = cells_by(report)[(True, "lsr1", 500)]
    # skipped 4, 10, 2 of 40 steps -> 10 %, 25 %, 5 %.
    assert lsr1.skip_percent == Stat(10.0, 5.0, 25.0, 3)
    assert lsr1.rejected_steps == Stat(4, 2, 6, 3)
    assert lsr1.rejected_percent == Stat(10.0, 5.0, 15.0, 3)
    assert lsr1.dropped_pairs == Stat(1, 0, 3, 3)
    assert lsr1.radius == Stat(2.0, 0.5, 8.0, 3)
    assert not cells_by(report)[(True, "nag", 500)].has_skip_statistics
    written = write_report(report, plots=False)
    text = written.report_md.read_text(encoding="utf-8")
    row = next(line for line in text.splitlines() if line.startswith("| lsr1") and "10.00 [5.00–25.00]" in line)
    assert "4 [2–6]" in row and "10.00 [5.00–15.00]" in row and "2 [0.5–8]" in row


def test_partial_results_are_listed(table1: Path) -> None:
    # A completed run with epoch 2 lost from its epochs.csv.
    gap = write_run(table1, [90, 1.3, 1.2, 1.1], label="momentum", seed=0)
    lines = (gap / "epochs.csv").read_text().splitlines()
    (gap / "epochs.csv").write_text("\n".join(lines[:3] + lines[4:]) + "\n")
    # A run that has started but written no epoch yet, and a folder without run.json.
    write_run(table1, [90], label="momentum", seed=1, epochs=3, status="running", write_csv=False)
    orphan = write_run(table1, [90, 2.0], label="momentum", seed=2)
    (orphan / "run.json").unlink()

    report = build_report(table1)
    missing = "\n".join(missing_lines(report))
    assert "`lenet5-bn-mnist-adam-b500-s1`: status running" in missing
    assert "adam · b500: no run for seed 2" in missing
    assert "`lenet5-bn-mnist-momentum-b500-s0`: epochs 2 missing from epochs.csv" in missing
    assert "`lenet5-bn-mnist-momentum-b500-s1`: status running; epochs.csv missing or empty" in missing
    assert "unreadable:" in missing and "momentum-b500-s2/run.json" in missing
    # Diverged runs end early by design and are not listed as incomplete.
    assert "lsr1-b1000" not in missing
    momentum = cells_by(report)[(True, "momentum", 500)]
    assert momentum.incomplete == 2
    text = write_report(report, plots=False).report_md.read_text(encoding="utf-8")
    assert "## Missing or incomplete" in text and "status running" in text


def test_stop_at_targets_is_not_incomplete(tmp_path: Path) -> None:
    suite = tmp_path / "early"
    write_run(suite, [90, 1.4, 1.1], label="lsr1", epochs=20, stop_at_targets=True)
    report = build_report(suite)
    assert missing_lines(report) == []
    assert report.cells[0].targets[err(1.2)].epochs == Stat(2, 2, 2, 1)


def test_cell_mixing_settings_is_warned(tmp_path: Path) -> None:
    suite = tmp_path / "mixed"
    write_run(suite, [90, 1.4], seed=0, weight_decay=1e-4)
    write_run(suite, [90, 1.4], seed=1, weight_decay=1e-3)
    text = write_report(build_report(suite), plots=False).report_md.read_text(encoding="utf-8")
    assert "## Warnings" in text and "differ in weight_decay" in text


def test_write_report_files_and_csv_values(table1: Path) -> None:
    written = write_report(build_report(table1), plots=False)  # plots: test_report_shows_its_plots
    assert written.report_md == table1 / "report.md"
    text = written.report_md.read_text(encoding="utf-8")
    for heading in (
        "## Epochs to target",
        "## Training wall-clock seconds to target",
        "## Gradient evaluations to target",
        "## Final and best test error, final train loss",
        "## Skipped updates (quasi-Newton runs)",
        "## Performance profiles",
    ):
        assert heading in text
    assert "median [min–max]" in text
    with (table1 / "report_targets.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    row = next(r for r in rows if r["label"] == "lsr1" and r["batch_size"] == "500" and r["target"] == "1.2")
    assert (
        row["n"],
        row["reached"],
        row["epochs_median"],
        row["epochs_min"],
        row["epochs_max"],
    ) == (
        "3",
        "3",
        "4",
        "3",
        "4",
    )
    row = next(r for r in rows if r["label"] == "nag" and r["target"] == "1.2")
    assert (row["reached"], row["never_reached"], row["diverged"], row["epochs_median"]) == (
        "0",
        "2",
        "1",
        "",
    )
    with (table1 / "report_runs.csv").open() as handle:
        runs = {r["run_id"]: r for r in csv.DictReader(handle)}
    assert runs["lenet5-bn-mnist-nag-b500-s2"]["epochs_to_test_error_1.5"] == "diverged"
    assert runs["lenet5-bn-mnist-lsr1-b500-s1"]["skip_percent"] == "25.0"
    with (table1 / "report_cells.csv").open() as handle:
        cells = list(csv.DictReader(handle))
    # lsr1 b500, nag b500, adam b500, lsr1 b1000 with BN; sgd and lsr1 b20 without
    assert len(cells) == 6


def test_folder_of_suites(tmp_path: Path) -> None:
    root = tmp_path / "outputs"
    make_table1_suite(root, "first")
    write_run(root / "second", [90, 1.0], label="adam")
    report = build_report(root)
    assert report.results.suites == ["first", "second"]
    assert "### second: lenet5 with batch norm on mnist" in main_table(report)
    written = write_report(report, plots=False)
    assert written.report_md == root / "report.md"
    # The report's own plots/ folder is never mistaken for a run on the next report.
    write_run(root / "plots", [90, 1.0], label="adam")  # even one that looks like a run
    assert build_report(root).results.suites == ["first", "second"]
    assert build_report(root).results.unreadable == []


def test_report_shows_its_plots(tmp_path: Path) -> None:
    fmt = "pdf"  # png, the default, is embedded the same way with a "!" (test_plots.py draws it)
    suite = tmp_path / "one"
    write_run(suite, [90, 4.0, 2.0], label="adam", targets={"test_error": [5.0]})
    written = write_report(build_report(suite), fmt=fmt)
    text = written.report_md.read_text(encoding="utf-8")
    assert "## Plots" in text
    shown = "![" if fmt == "png" else "["  # a PDF is a link, not an image
    for name in ("test-error-vs-epoch", "train-loss-vs-grad-evals", "performance-profile"):
        assert f"\n{shown}one-{name}](plots/one-{name}.{fmt})" in text


def test_baseline_round_trip(table1: Path, tmp_path: Path) -> None:
    report = build_report(table1)
    path = export_baseline(report, tmp_path / "baselines" / "table1.json")
    data = json.loads(path.read_text())
    assert data["format"] == "lsr1bench-baseline" and data["version"] == 2
    back = cells_from_baseline(data, str(path))
    assert [c.to_dict() for c in back] == [c.to_dict() for c in report.cells]
    assert baseline_dict(back, "x")["cells"] == data["cells"]


@pytest.mark.parametrize("case", ["missing", "file", "empty", "unreadable"])
def test_bad_results_folder(tmp_path: Path, case: str) -> None:
    target = tmp_path / "results"
    if case == "file":
        target.write_text("not a folder")
    elif case == "empty":
        (target / "suite" / "notarun").mkdir(parents=True)
    elif case == "unreadable":
        (target / "run-1").mkdir(parents=True)
        (target / "run-1" / "run.json").write_text("{ not json")
    with pytest.raises(ReportError):
        build_report(target)
    result = runner.invoke(app, ["report", str(target)])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and isinstance(result.exception, SystemExit)
    assert str(target) in result.output


def test_cli_report(table1: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "base.json"
    result = runner.invoke(app, ["report", str(table1), "--export-baseline", str(baseline)])
    assert result.exit_code == 0, result.output
    assert "| lsr1        | 4 [3–4] (3/3)" in result.output
    assert "missing or incomplete" in result.output
    assert (table1 / "report.md").is_file() and (table1 / "plots").is_dir()
    assert json.loads(baseline.read_text())["format"] == "lsr1bench-baseline"


def test_cli_report_output_folder_without_plots(table1: Path, tmp_path: Path) -> None:
    out = tmp_path / "elsewhere"
    result = runner.invoke(app, ["report", str(table1), "--output", str(out), "--no-plots"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").is_file() and not (out / "plots").exists()
    assert not (table1 / "report.md").exists()


def test_diverged_row_with_nan_is_read(tmp_path: Path) -> None:
    suite = tmp_path / "s"
    write_run(suite, [90, 2.0, NAN], losses=[2.3, 0.5, NAN], status="diverged", epochs=5)
    run = build_report(suite).results.runs[0]
    assert run.diverged and not run.incomplete
    assert run.best_test_error == 2.0 and run.final_test_error is None


def test_report_stage_never_imports_torch() -> None:
    code = (
        "import sys, lsr1bench.reporting, lsr1bench.reporting.plots, lsr1bench.reporting.profiles; "
        "print('torch' in sys.modules, 'typer' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr


def test_runs_without_targets(tmp_path: Path) -> None:
    suite = tmp_path / "quick"
    write_run(suite, [90, 5.0, 4.0], targets=())
    report = build_report(suite)
    assert main_table(report).startswith("No run has targets")
    text = write_report(report, plots=False).report_md.read_text(encoding="utf-8")
    assert "| lsr1        | 500     | 1 (1 completed) | 2            | 4.00" in text


def test_loss_targets_are_reported_beside_error_targets(tmp_path: Path) -> None:
    suite = tmp_path / "losses"
    targets = {"test_error": [5.0], "train_loss": [0.5, 0.3], "test_loss": [0.2]}
    # train loss: 0.6, 0.4, 0.25 -> < 0.5 at epoch 2, < 0.3 at epoch 3 (seed 0);
    # seed 1 reaches 0.5 at epoch 1 and never 0.3; test loss = error / 10
    write_run(suite, [90, 6.0, 4.0, 3.0], seed=0, targets=targets, train_losses=[2.3, 0.6, 0.4, 0.25])
    write_run(suite, [90, 5.5, 4.5, 1.5], seed=1, targets=targets, train_losses=[2.3, 0.45, 0.35, 0.31])
    report = build_report(suite)
    (cell,) = report.cells
    assert list(cell.targets) == [
        err(5.0), Target("test_loss", 0.2), Target("train_loss", 0.3), Target("train_loss", 0.5)
    ]
    assert cell.targets[Target("train_loss", 0.5)].epochs == Stat(1.5, 1, 2, 2)
    assert cell.targets[Target("train_loss", 0.3)].outcomes == {REACHED: 1, NEVER_REACHED: 1}
    assert cell.targets[Target("train_loss", 0.3)].epochs_by_seed == [3, None]
    # test loss 0.15 at epoch 3 (seed 1, error 1.5) only; 0.3 and 0.4 are not below 0.2
    assert cell.targets[Target("test_loss", 0.2)].epochs_by_seed == [3, None]
    text = main_table(report)
    lines = text.splitlines()
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["optimizer", "< 5% · b500", "test loss < 0.2 · b500", "train loss < 0.3 · b500",
                      "train loss < 0.5 · b500"]  # fmt: skip
    assert [c.strip() for c in lines[4].strip("|").split("|")] == ["lsr1", "2 (2/2)", "3 (1/2)", "3 (1/2)",
                                                                   "1.5 [1–2] (2/2)"]  # fmt: skip
    written = write_report(report, plots=False)
    with (suite / "report_targets.csv").open() as handle:
        rows = {(r["metric"], r["target"]): r for r in csv.DictReader(handle)}
    assert rows[("train_loss", "0.5")]["epochs_median"] == "1.5"
    assert rows[("train_loss", "0.5")]["train_seconds_max"] == "4.0"  # 2 s per epoch
    with (suite / "report_runs.csv").open() as handle:
        runs = {r["seed"]: r for r in csv.DictReader(handle)}
    assert runs["1"]["epochs_to_train_loss_0.3"] == "never reached"
    assert runs["0"]["epochs_to_train_loss_0.3"] == "3"
    assert "train loss < 0.5 · b500" in written.report_md.read_text(encoding="utf-8")


def test_skip_table_reports_lsr1s_model_from_the_epoch_columns(tmp_path: Path) -> None:
    """The model-statistics columns, hand-computed: % of steps with negative curvature weighted by each
    epoch's steps, the smallest eigenvalue over epoch ends, the last epoch's cosines."""
    from lsr1bench.records import EPOCH_COLUMNS
    from lsr1bench.reporting import tables
    from lsr1bench.reporting.cells import summarize_cell
    from lsr1bench.reporting.runs import summarize_run

    run_dir = write_run(tmp_path / "s", [90.0, 10.0, 5.0], qn_final={"steps": 30, "skipped_updates": 0,
                        "rejected_steps": 3, "dropped_pairs": 0, "radius": 0.5})
    base = {c: "" for c in EPOCH_COLUMNS}
    rows = [
        dict(base, epoch=0, train_loss=2.3, test_loss=2.3, test_error=90.0, train_seconds=0, total_seconds=0,
             grad_evals=0, samples=0, steps=0, min_eigenvalue=1.0, negative_eigenvalues=0),
        dict(base, epoch=1, train_loss=0.5, test_loss=0.5, test_error=10.0, train_seconds=1, total_seconds=1,
             grad_evals=20, samples=100, steps=10, accepted_steps=9, rejected_steps=1, skipped_updates=0,
             dropped_pairs=0, radius=1.0, stored_pairs=5, min_eigenvalue=0.5, negative_eigenvalues=0,
             negative_curvature_fraction=0.2, update_cosine_p10=0.1, update_cosine_median=0.4),
        dict(base, epoch=2, train_loss=0.3, test_loss=0.3, test_error=5.0, train_seconds=2, total_seconds=2,
             grad_evals=60, samples=300, steps=30, accepted_steps=27, rejected_steps=3, skipped_updates=0,
             dropped_pairs=0, radius=0.5, stored_pairs=5, min_eigenvalue=-0.3, negative_eigenvalues=1,
             negative_curvature_fraction=0.5, update_cosine_p10=0.05, update_cosine_median=0.3),
    ]
    with (run_dir / "epochs.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=EPOCH_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    run = summarize_run(run_dir)
    assert not isinstance(run, str)
    assert run.negative_curvature_percent == pytest.approx(100 * (0.2 * 10 + 0.5 * 20) / 30)
    assert run.min_eigenvalue == -0.3
    assert (run.update_cosine_p10, run.update_cosine_median) == (0.05, 0.3)
    headers, table = tables.skip_table([summarize_cell(run.key, [run])])
    (row,) = table
    cells = dict(zip(headers, row))
    assert cells["negative curvature % of steps"] == "40.00"
    assert cells["smallest eigenvalue of B"] == "-0.3"
    assert cells["update cosine p10 / median (last epoch)"] == "0.05 / 0.3"


def test_cli_report_refuses_an_unknown_plot_format(tmp_path: Path) -> None:
    suite = tmp_path / "one"
    write_run(suite, [90, 4.0, 2.0], label="adam")
    result = runner.invoke(app, ["report", str(suite), "--format", "jpg"])
    assert result.exit_code == 2
    assert "--format: must be one of png, pdf, svg, got 'jpg'" in result.output
    assert not (suite / "report.md").exists()
