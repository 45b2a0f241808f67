"""``lsr1bench export tensorboard``: the event files read back hold the records' numbers."""

from __future__ import annotations

from pathlib import Path

import pytest
from _report_records import write_run
from typer.testing import CliRunner

from lsr1bench.cli import app

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from tensorboard.plugins.hparams import metadata  # noqa: E402

runner = CliRunner()


def read_events(folder: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def scalars(accumulator: EventAccumulator, tag: str) -> list[tuple[int, float]]:
    """(step, value); TensorBoard stores float32, so values are rounded to 7 significant digits."""
    return [(event.step, float(f"{event.value:.7g}")) for event in accumulator.Scalars(tag)]


def test_export_writes_each_runs_scalars_and_settings(tmp_path: Path) -> None:
    suite = tmp_path / "results" / "quick"
    # quasi-Newton statistics at the last of 2 epochs: 40 steps, 10 skipped, 4 rejected
    write_run(suite, [90.0, 6.0, 4.0], label="lsr1", seed=1, batch_size=50, train_losses=[2.3, 0.6, 0.4],
              qn_final={"steps": 40, "skipped_updates": 10, "rejected_steps": 4, "dropped_pairs": 0, "radius": 0.5},
              optimizer_params={"memory": 5})  # fmt: skip
    write_run(suite, [90.0, 7.0, 5.0], label="adam", seed=0, batch_size=50)
    out = tmp_path / "tb"
    result = runner.invoke(app, ["export", "tensorboard", str(suite), str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 2 runs' events" in result.output
    lsr1 = read_events(out / "quick" / "lenet5-bn-mnist-lsr1-b50-s1")
    assert scalars(lsr1, "error/test_error") == [(0, 90.0), (1, 6.0), (2, 4.0)]
    assert scalars(lsr1, "loss/train_loss") == [(0, 2.3), (1, 0.6), (2, 0.4)]
    # the records' cumulative columns: 2 s and 100 gradient evaluations per epoch
    assert scalars(lsr1, "cost/train_seconds") == [(0, 0.0), (1, 2.0), (2, 4.0)]
    assert scalars(lsr1, "cost/grad_evals") == [(0, 0.0), (1, 100.0), (2, 200.0)]
    assert scalars(lsr1, "quasi_newton/radius")[-1] == (2, 0.5)
    # each epoch's share of its own steps: 20 steps per epoch, 5 skipped and 2 rejected in each
    assert scalars(lsr1, "quasi_newton/skipped_percent") == [(1, 25.0), (2, 25.0)]
    assert scalars(lsr1, "quasi_newton/rejected_percent") == [(1, 10.0), (2, 10.0)]
    # settings as hparams
    (content,) = lsr1.PluginTagToContent(metadata.PLUGIN_NAME).values()
    start = metadata.parse_session_start_info_plugin_data(content)
    assert start.hparams["label"].string_value == "lsr1"
    assert start.hparams["seed"].number_value == 1
    assert start.hparams["params.memory"].number_value == 5
    assert start.hparams["batch_norm"].bool_value is True
    adam = read_events(out / "quick" / "lenet5-bn-mnist-adam-b50-s0")
    assert scalars(adam, "error/test_error")[-1] == (2, 5.0)
    assert "quasi_newton/radius" not in adam.Tags()["scalars"]


def test_export_bad_input_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["export", "tensorboard", str(tmp_path / "nowhere"), str(tmp_path / "tb")])
    assert result.exit_code == 2 and "no such file or directory" in result.output
    assert not (tmp_path / "tb").exists()
    suite = tmp_path / "results" / "quick"
    write_run(suite, [90.0, 6.0], label="adam")
    (tmp_path / "file").write_text("x")
    result = runner.invoke(app, ["export", "tensorboard", str(suite), str(tmp_path / "file")])
    assert result.exit_code == 2 and "exists and is not a directory" in result.output


def test_export_never_imports_torch(tmp_path: Path) -> None:
    import subprocess
    import sys

    suite = tmp_path / "results" / "quick"
    write_run(suite, [90.0, 6.0], label="adam")
    code = (
        "import sys; from lsr1bench.reporting.tensorboard import export_tensorboard; "
        f"export_tensorboard({str(suite)!r}, {str(tmp_path / 'tb')!r}); "
        "print('torch' in sys.modules, 'tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"], out.stderr
