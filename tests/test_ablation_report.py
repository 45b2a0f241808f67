"""The ablation table (docs/tools/ablation.py) on synthetic records, against a table
worked out by hand; and the ablation suite itself (what it expands to)."""

from __future__ import annotations

from pathlib import Path

import pytest
from ablation import SUITE, ablation_table, main  # docs/tools (tests/conftest.py)

from lsr1bench import records
from lsr1bench.grid import RunSpec, expand
from lsr1bench.reporting.runs import ReportError, load_results
from lsr1bench.spec import load_suite

ROOT = Path(__file__).resolve().parents[1]
CELL_TARGET = {500: 1.1, 1000: 1.2, 10000: 1.5}


def write(
    folder: Path,
    label: str,
    optimizer: str,
    batch: int,
    seed: int,
    reached_at: int | None,
    epochs: int = 50,
    status: str = "completed",
    present: int | None = None,
) -> None:
    """One run whose test error first falls below its cell's target at ``reached_at`` (None:
    never) and stays there; ``present`` epochs recorded (default: all planned)."""
    spec = RunSpec(
        suite=SUITE, run_id=f"lenet5-bn-mnist-{label}-b{batch}-s{seed}", model="lenet5", batch_norm=True,
        dataset="mnist", optimizer=optimizer, label=label, optimizer_params={"lr": 0.003}, lr_schedule=None,
        batch_size=batch, seed=seed, epochs=epochs, targets=(1.1, 1.2, 1.5), stop_at_targets=False,
    )  # fmt: skip
    target = CELL_TARGET[batch]
    present = epochs if present is None else present
    rows = []
    for epoch in range(present + 1):
        below = reached_at is not None and 1 <= reached_at <= epoch
        rows.append({"epoch": epoch, "train_loss": 0.1, "test_loss": 0.05,
                     "test_error": target - 0.05 if below else target + 0.3,
                     "train_seconds": 2.0 * epoch, "total_seconds": 2.5 * epoch, "grad_evals": 10 * epoch,
                     "samples": 60000 * epoch, "steps": 10 * epoch})  # fmt: skip
    directory = records.run_dir(folder / "runs", SUITE, spec.run_id)
    directory.mkdir(parents=True)
    records.write_epochs(directory, rows)
    record = records.RunRecord(SUITE, spec.run_id, spec.to_dict(), status=status, epochs_completed=present)
    records.write_run(directory, record)


def parse(table: str) -> list[list[str]]:
    lines = table.splitlines()
    assert set(lines[1]) <= {"|", "-", ":"}
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in [lines[0], *lines[2:]]]


def test_ablation_table_by_hand(tmp_path: Path) -> None:
    # adam-lr0.003: b500 at 4, 5, 6; b1000 at 2, 3, 3; b10000 at 12, 15 and never (of 20 epochs)
    for seed, epoch in enumerate((4, 5, 6)):
        write(tmp_path, "adam-lr0.003", "adam", 500, seed, epoch)
    for seed, epoch in enumerate((2, 3, 3)):
        write(tmp_path, "adam-lr0.003", "adam", 1000, seed, epoch)
    for seed, epoch in enumerate((12, 15, None)):
        write(tmp_path, "adam-lr0.003", "adam", 10000, seed, epoch, epochs=20)
    # adam-lr0.01: b1000 at 2, 3, 4 (median 3 = the paper's, one seed slower): matches
    for seed, epoch in enumerate((2, 3, 4)):
        write(tmp_path, "adam-lr0.01", "adam", 1000, seed, epoch)
    # nag-lr0.003: b500 never; b1000 one seed at 30, two still running at epoch 5; b10000 not run
    for seed in range(3):
        write(tmp_path, "nag-lr0.003", "nag", 500, seed, None)
    write(tmp_path, "nag-lr0.003", "nag", 1000, 0, 30)
    for seed in (1, 2):
        write(tmp_path, "nag-lr0.003", "nag", 1000, seed, None, status="running", present=5)
    # nag-lr-linear: b500 at 20, 25, 30 (all below the paper's 35); b1000 at 37, 40, 38
    for seed, epoch in enumerate((20, 30, 25)):
        write(tmp_path, "nag-lr-linear", "nag", 500, seed, epoch)
    for seed, epoch in enumerate((37, 40, 38)):
        write(tmp_path, "nag-lr-linear", "nag", 1000, seed, epoch)
    # nag-lr-linear b10000: both seeds diverged; adam-lr0.01 b10000: one diverged, one never reached
    for seed in (0, 1):
        write(tmp_path, "nag-lr-linear", "nag", 10000, seed, None, status="diverged", present=3)
    write(tmp_path, "adam-lr0.01", "adam", 10000, 0, None, status="diverged", present=2)
    write(tmp_path, "adam-lr0.01", "adam", 10000, 1, None, epochs=20)

    assert parse(ablation_table(tmp_path)) == [
        ["variant",
         "< 1.1% · b500", "paper · b500", "verdict · b500",
         "< 1.2% · b1000", "paper · b1000", "verdict · b1000",
         "< 1.5% · b10000", "paper · b10000", "verdict · b10000"],
        ["adam-lr0.003",
         "5 [4–6] (3/3)", "—", "no paper number",
         "3 [2–3] (3/3)", "3", "matches the paper",
         "13.5 [12–15] (2/3)", "10", "slower"],
        ["adam-lr0.01",
         "not run", "—", "not run",
         "3 [2–4] (3/3)", "3", "matches the paper",
         "never reached (0/2, 1 diverged)", "10", "never reached"],
        ["nag-lr-linear",
         "25 [20–30] (3/3)", "35", "faster than the paper",
         "38 [37–40] (3/3)", "37", "slower",
         "diverged (0/2)", "194", "diverged"],
        ["nag-lr0.003",
         "never reached (0/3)", "35", "never reached",
         "30 (1/3, 2 incomplete)", "37", "not finished",
         "not run", "194", "not run"],
    ]  # fmt: skip


def test_reference_rows_come_first_under_their_own_names(tmp_path: Path) -> None:
    # the reference: Table 1's appendix-setting runs, in another folder (another suite)
    for seed, epoch in enumerate((5, 6)):
        write(tmp_path / "table1", "adam", "adam", 1000, seed, epoch)
    write(tmp_path / "table1", "adam", "adam", 500, 0, 4)
    reference = load_results(tmp_path / "table1" / "runs" / SUITE).runs
    write(tmp_path, "adam-lr0.01", "adam", 1000, 0, 2)

    rows = parse(ablation_table(tmp_path, reference={"appendix (Table 1)": reference}))[1:]
    assert rows == [
        ["appendix (Table 1)",
         "4 (1/1)", "—", "no paper number",
         "5.5 [5–6] (2/2)", "3", "slower",
         "not run", "10", "not run"],
        ["adam-lr0.01",
         "not run", "—", "not run",
         "2 (1/1)", "3", "faster than the paper",
         "not run", "10", "not run"],
    ]  # fmt: skip


def test_a_reference_row_with_two_cells_at_one_batch_is_an_error(tmp_path: Path) -> None:
    write(tmp_path / "a", "adam", "adam", 1000, 0, 5)
    write(tmp_path / "a", "adam-lr0.01", "adam", 1000, 0, 5)
    write(tmp_path, "adam-lr0.01", "adam", 1000, 0, 2)
    mixed = load_results(tmp_path / "a" / "runs" / SUITE).runs
    with pytest.raises(ReportError, match="ablation row 'mixed': two cells at batch 1000"):
        ablation_table(tmp_path, reference={"mixed": mixed})


def test_a_missing_folder_is_a_report_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ReportError, match=f"runs/{SUITE}: no such folder.*--output {tmp_path}/runs"):
        ablation_table(tmp_path)
    assert main([str(tmp_path)]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_the_ablation_suite_has_every_variant_at_every_cell() -> None:
    runs = expand(load_suite(ROOT / "suites" / "repro" / "ablation_first_order.yaml"))
    assert {run.suite for run in runs} == {SUITE}
    by_label: dict[str, dict[int, RunSpec]] = {}
    for run in runs:
        assert run.seed in (0, 1, 2) and run.stop_at_targets and run.model == "lenet5" and run.batch_norm
        assert run.targets == {"test_error": (1.1, 1.2, 1.5)}
        assert run.epochs == (200 if run.batch_size == 10000 else 50)
        by_label.setdefault(run.label, {})[run.batch_size] = run
    assert sorted(by_label) == sorted(
        ["adam-lr0.001", "adam-lr0.003", "adam-lr0.01", "adam-lr0.003-init_torch", "adam-lr0.003-init_fc-torch",
         "nag-lr0.003", "nag-lr0.003-init_torch", "nag-lr0.003-init_fc-torch", "nag-lr0.003-loss_sum",
         "nag-lr-linear"]
    )  # fmt: skip
    assert all(sorted(cells) == [500, 1000, 10000] for cells in by_label.values())
    assert len(runs) == 10 * 3 * 3
    for batch, run in by_label["nag-lr-linear"].items():
        assert run.optimizer_params["lr"] == pytest.approx(0.003 * batch / 20)
    assert by_label["nag-lr0.003-loss_sum"][500].loss_reduction == "sum"
    assert by_label["adam-lr0.003-init_fc-torch"][1000].model_init == "fc-torch"
    assert by_label["nag-lr0.003"][10000].optimizer_params == {"lr": 0.003, "momentum": 0.9}
