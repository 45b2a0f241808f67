"""Records: atomic writes, read-back, the column contract, and no torch."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from lsr1bench import records
from lsr1bench.records import EPOCH_COLUMNS, RecordError, RunRecord


def _record(**kw) -> RunRecord:
    base = dict(suite="s", run_id="mlp-mnist-adam-b10-s0", spec={"epochs": 2}, device="cpu")
    base.update(kw)
    return RunRecord(**base)


def test_columns_are_the_documented_contract() -> None:
    assert EPOCH_COLUMNS == (
        "epoch", "train_loss", "test_loss", "test_error", "train_seconds", "total_seconds",
        "grad_evals", "loss_evals", "hvp_evals", "samples", "steps", "accepted_steps", "rejected_steps",
        "skipped_updates", "dropped_pairs", "radius", "stored_pairs", "min_eigenvalue", "negative_eigenvalues",
        "negative_curvature_fraction", "update_cosine_p10", "update_cosine_median",
        "skip_rate_r1e-08", "skip_rate_r1e-06", "skip_rate_r0.0001", "skip_rate_r0.001", "skip_rate_r0.01",
        "skip_rate_r0.03", "skip_rate_r0.1", "skip_rate_r0.3", "lr", "val_loss", "val_error",
    )  # fmt: skip


def test_epochs_files_from_before_later_columns_still_read(tmp_path) -> None:
    # a file written before the skip-rate columns existed, but with val_loss
    older = [c for c in EPOCH_COLUMNS if not c.startswith("skip_rate_")]
    (tmp_path / "epochs.csv").write_text(",".join(older) + "\n" + ",".join(["1"] + [""] * (len(older) - 1)) + "\n")
    rows = records.read_epochs(tmp_path)
    assert rows[0]["epoch"] == 1 and rows[0]["skip_rate_r0.1"] is None
    # an unknown column, or known ones out of order, is still an error
    (tmp_path / "epochs.csv").write_text(",".join(reversed(older)) + "\n")
    with pytest.raises(records.RecordError, match="unexpected columns"):
        records.read_epochs(tmp_path)


def test_run_json_round_trip(tmp_path) -> None:
    record = _record(
        status=records.COMPLETED,
        targets_reached={"test_error": {"1.1": 3, "1.5": None}, "train_loss": {"0.3": 2}},
        extra={"environment": {"torch_threads": 2}},
    )
    records.write_run(tmp_path, record)
    data = json.loads((tmp_path / "run.json").read_text())
    assert data["schema_version"] == records.SCHEMA_VERSION
    assert data["status"] == "completed" and data["environment"] == {"torch_threads": 2}
    back = records.read_run(tmp_path)
    assert back == record and back.finished


def test_epochs_round_trip_keeps_nan_inf_and_empty(tmp_path) -> None:
    rows = [
        {"epoch": 0, "train_loss": 2.3, "test_loss": 2.3, "test_error": 90.0, "grad_evals": 0, "samples": 0},
        {"epoch": 1, "train_loss": float("nan"), "test_loss": float("inf"), "test_error": 90.0,
         "grad_evals": 20, "samples": 100, "radius": 0.5, "stored_pairs": 3, "lr": None},
    ]  # fmt: skip
    records.write_epochs(tmp_path, rows)
    header = (tmp_path / "epochs.csv").read_text().splitlines()[0]
    assert header == ",".join(EPOCH_COLUMNS)
    back = records.read_epochs(tmp_path)
    assert back[0]["epoch"] == 0 and back[0]["radius"] is None and back[0]["lr"] is None
    assert math.isnan(back[1]["train_loss"]) and back[1]["test_loss"] == math.inf
    assert back[1]["grad_evals"] == 20 and isinstance(back[1]["grad_evals"], int)
    assert back[1]["radius"] == 0.5


def test_atomic_write_leaves_old_file_when_writing_fails(tmp_path, monkeypatch) -> None:
    target = tmp_path / "run.json"
    records.atomic_write_text(target, "old")

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        records.atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["run.json"]  # the temporary file is cleaned up


def test_unreadable_records_raise_record_error(tmp_path) -> None:
    with pytest.raises(RecordError, match="no such file"):
        records.read_run(tmp_path)
    (tmp_path / "run.json").write_text("{half")
    with pytest.raises(RecordError):
        records.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({"schema_version": 99}))
    with pytest.raises(RecordError, match="schema_version"):
        records.read_run(tmp_path)
    (tmp_path / "run.json").write_text(json.dumps({**_record().to_dict(), "status": "odd"}))
    with pytest.raises(RecordError, match="unknown status"):
        records.read_run(tmp_path)


def test_iter_runs_and_epochs_to_target(tmp_path) -> None:
    for run_id in ("b", "a"):
        records.write_run(tmp_path / run_id, _record(run_id=run_id))
    (tmp_path / "junk").mkdir()
    assert [r.run_id for _, r in records.iter_runs(tmp_path)] == ["a", "b"]
    rows = [{"epoch": 0, "test_error": 0.5}, {"epoch": 1, "test_error": 1.3}, {"epoch": 2, "test_error": 1.1}]
    assert records.epochs_to_target(rows, 1.2) == 2  # epoch 0 never counts
    assert records.epochs_to_target(rows, 1.0) is None
    assert records.target_key(30.0) == "30" and records.target_key(1.1) == "1.1"


def test_records_do_not_import_torch() -> None:
    code = "import sys, lsr1bench.records, lsr1bench.grid, lsr1bench.spec; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_schema_1_record_reads_as_test_error_targets(tmp_path) -> None:
    record = _record(status=records.COMPLETED)
    data = record.to_dict()
    data.update(schema_version=1, targets_reached={"1.1": 3, "1.5": None})
    (tmp_path / "run.json").write_text(json.dumps(data))
    back = records.read_run(tmp_path)
    assert back.targets_reached == {"test_error": {"1.1": 3, "1.5": None}}
    data["schema_version"] = 3
    (tmp_path / "run.json").write_text(json.dumps(data))
    with pytest.raises(records.RecordError, match="schema_version 3, this lsr1bench reads 1, 2"):
        records.read_run(tmp_path)


def test_epochs_to_target_on_each_metric() -> None:
    rows = [
        {"epoch": 0, "test_error": 0.5, "test_loss": 0.01, "train_loss": None},
        {"epoch": 1, "test_error": 3.0, "test_loss": 0.40, "train_loss": 0.50},
        {"epoch": 2, "test_error": 2.0, "test_loss": 0.30, "train_loss": 0.30},
        {"epoch": 3, "test_error": 1.0, "test_loss": 0.35, "train_loss": 0.20},
    ]
    assert records.epochs_to_target(rows, 2.5) == 2  # test error by default; epoch 0 never counts
    assert records.epochs_to_target(rows, 0.35, "test_loss") == 2
    assert records.epochs_to_target(rows, 0.3, "train_loss") == 3  # strictly below: 0.30 is not
    assert records.epochs_to_target(rows, 0.1, "train_loss") is None
