"""The command line: every bad input is exit code 2, a message naming the key path,
no traceback, and nothing written; ``validate`` and ``--dry-run`` train nothing."""

# ruff: noqa: E501  (tables of suites and the messages they must produce)
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr1bench.cli import app

runner = CliRunner()

OK = """
name: tiny
epochs: 1
train_subset: 200
test_subset: 100
grids:
  - models: [mlp]
    datasets: [mnist-embedded]
    batch_sizes: [50]
    optimizers: [adam, {name: sgd, batch_sizes: [20, 40]}]
"""

GRID = "grids: [{models: [mlp], datasets: [mnist-embedded], optimizers: [adam], batch_sizes: [10]}]"


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


# (name, suite text or None for a missing file, extra CLI args, text the message must hold)
BAD_INPUTS = [
    ("missing file", None, [], "no such file"),
    ("empty file", "", [], "(top level): the suite file is empty"),
    ("broken yaml", "grids:\n  - models: [mlp\n  x: 1\n", [], "(yaml) line 3, column 4: broken YAML"),
    ("duplicate key", "epochs: 1\nepochs: 2\n" + GRID, [], "duplicate key 'epochs'"),
    ("not a mapping", "[1, 2]", [], "(top level): expected a mapping"),
    ("wrong type", "epochs: many\n" + GRID, [], "epochs: input should be a valid integer"),
    ("unknown key", "epohcs: 3\n" + GRID, [], "epohcs: unknown key (did you mean 'epochs'?)"),
    ("unknown model", GRID.replace("[mlp]", "[lenet]"), [], "grids[0].models[0].name: unknown model 'lenet'"),
    (
        "unknown dataset",
        GRID.replace("mnist-embedded", "mnist-tiny"),
        [],
        "grids[0].datasets[0]: unknown dataset 'mnist-tiny'",
    ),
    (
        "unknown optimizer",
        GRID.replace("[adam]", "[adagrad]"),
        [],
        "grids[0].optimizers[0].name: unknown optimizer 'adagrad'",
    ),
    (
        "unknown hyperparameter",
        GRID.replace("[adam]", "[{name: adam, params: {betas1: 0.9}}]"),
        [],
        "grids[0].optimizers[0].params.betas1: unknown hyperparameter for adam (did you mean 'betas'?)",
    ),
    ("batch size 0", GRID.replace("[10]", "[0]"), [], "grids[0].batch_sizes[0]: batch size must be >= 1, got 0"),
    ("negative epochs", "epochs: -3\n" + GRID, [], "epochs: input should be greater than or equal to 1"),
    (
        "memory 0",
        GRID.replace("[adam]", "[{name: lsr1, params: {memory: 0}}]"),
        [],
        "grids[0].optimizers[0].params.memory: memory must be an integer >= 1",
    ),
    ("target out of range", "targets: [0]\n" + GRID, [], "targets[0]: a target test error is a percentage in (0, 100)"),
    (
        "unknown target metric",
        "targets: {test_accuracy: [90]}\n" + GRID,
        [],
        "targets.test_accuracy: unknown target metric; known: test_error, test_loss, train_loss",
    ),
    (
        "negative loss target",
        GRID.replace("[adam]", "[{name: adam, targets: {train_loss: [-0.1]}}]"),
        [],
        "grids[0].optimizers[0].targets.train_loss[0]: a train loss target must be > 0 (a loss falls below it), got -0.1",
    ),
    (
        "radius factor",
        GRID.replace("[adam]", "[{name: lsr1, params: {radius_decrease: 1.5}}]"),
        [],
        "params.radius_decrease: radius_decrease must be a number in (0, 1)",
    ),
    (
        "schedule without lr",
        GRID.replace("[adam]", "[{name: lsr1, lr_schedule: {milestones: [2]}}]"),
        [],
        "grids[0].optimizers[0].lr_schedule: lsr1 has no learning rate",
    ),
    (
        "id collision",
        "batch_sizes: [10]\ngrids:\n  - {models: [mlp], datasets: [mnist], optimizers: [adam]}\n  - {models: [mlp], datasets: [mnist], optimizers: [{name: adam, params: {lr: 0.1}}]}\n",
        [],
        "grids[1].optimizers[0]: run id 'mlp-mnist-adam-b10-s0' is also made by grids[0].optimizers[0]",
    ),
    ("bad label", GRID.replace("[adam]", "[{name: adam, label: 'A/B'}]"), [], "grids[0].optimizers[0].label"),
    ("seeds and repeats", "seeds: [0]\nrepeats: 2\n" + GRID, [], "repeats: give either seeds or repeats, not both"),
    ("bad shard", OK, ["--shard", "4/4"], "--shard: i counts from 0"),
    ("bad shard text", OK, ["--shard", "first"], "--shard: expected i/N"),
    ("--only matching nothing", OK, ["--only", "*-sgd-*", "--only", "*-lsr1-*"], "--only: matches no run of this suite: '*-lsr1-*'"),
    ("bad devices", OK, ["--devices", "tpu"], "--devices: expected auto, cpu or cuda:0,cuda:1"),
    (
        "subset too large",
        OK.replace("train_subset: 200", "train_subset: 999999"),
        [],
        "train_subset must be an integer in 1..5000",
    ),
]
if not _cuda_available():
    BAD_INPUTS.append(
        ("cuda absent", OK, ["--devices", "cuda:0"], "--devices: cuda:0 requested but CUDA is not available")
    )


@pytest.mark.parametrize("name, text, args, expected", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_exits_2_with_the_key_path(
    tmp_path: Path, name: str, text: str | None, args: list[str], expected: str
) -> None:
    suite = tmp_path / "suite.yaml"
    if text is not None:
        suite.write_text(textwrap.dedent(text))
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(suite), "--output", str(out), *args])
    assert result.exit_code == 2, result.output
    assert expected in result.output, result.output
    assert isinstance(result.exception, SystemExit)
    assert not out.exists(), "nothing may be written for a bad input"
    if text is not None and not args and name != "subset too large":  # data is checked at run time
        again = runner.invoke(app, ["validate", str(suite)])
        assert again.exit_code == 2 and expected in again.output and isinstance(again.exception, SystemExit)


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(OK)
    for args in (["--jobs", "0"], ["--no-such-option"]):
        result = runner.invoke(app, ["run", str(suite), "--output", str(tmp_path / "out"), *args])
        assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    output_file = tmp_path / "file"
    output_file.write_text("x")
    result = runner.invoke(app, ["run", str(suite), "--output", str(output_file)])
    assert result.exit_code == 2 and "--output" in result.output


def test_validate_prints_count_and_ids(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(OK)
    result = runner.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 0, result.output
    assert "3 runs" in result.output
    for run_id in ("mlp-mnist-embedded-adam-b50-s0", "mlp-mnist-embedded-sgd-b20-s0", "mlp-mnist-embedded-sgd-b40-s0"):
        assert run_id in result.output


def test_dry_run_plans_without_writing(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(OK)
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(suite), "--dry-run", "--output", str(out), "--shard", "1/2"])
    assert result.exit_code == 0, result.output
    assert "1 run (shard 1/2 of 3)" in result.output
    assert "mlp-mnist-embedded-sgd-b20-s0  run" in result.output
    assert not out.exists()


def test_only_keeps_the_runs_whose_id_matches_a_pattern(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    suite.write_text(OK)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["run", str(suite), "--dry-run", "--output", str(out), "--only", "*-b50-*", "--only", "*-sgd-b40-s?"]
    )
    assert result.exit_code == 0, result.output
    assert "2 runs (--only: 2 of the suite's 3)" in result.output
    assert "mlp-mnist-embedded-adam-b50-s0  run" in result.output
    assert "mlp-mnist-embedded-sgd-b40-s0  run" in result.output
    assert "mlp-mnist-embedded-sgd-b20-s0" not in result.output
    assert not out.exists()


def test_quickstart_suite_validates() -> None:
    suite = Path(__file__).resolve().parents[1] / "suites" / "quickstart.yaml"
    result = runner.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 0, result.output


def test_run_ends_with_the_epochs_to_target_table_and_the_report_command(tmp_path: Path) -> None:
    suite = tmp_path / "tiny.yaml"
    # one epoch of Adam on 200 images: below 99.9% test error surely, below 1e-9 train loss never
    suite.write_text(
        OK.replace("epochs: 1\n", "epochs: 1\ntargets: {test_error: [99.9], train_loss: [1.0e-9]}\n").replace(
            "optimizers: [adam, {name: sgd, batch_sizes: [20, 40]}]", "optimizers: [adam]"
        )
    )
    out = tmp_path / "out"
    result = runner.invoke(app, ["run", str(suite), "--output", str(out)])
    assert result.exit_code == 0, result.output
    tail = result.output[result.output.index("Epochs to target") :]
    rows = [line for line in tail.splitlines() if line.startswith("|")]
    assert [c.strip() for c in rows[0].strip("|").split("|")] == [
        "optimizer", "< 99.9% · b50", "train loss < 1e-09 · b50"
    ]  # fmt: skip
    assert [c.strip() for c in rows[2].strip("|").split("|")] == ["adam", "1 (1/1)", "never reached (0/1)"]
    assert f"lsr1bench report {out / 'tiny'}" in tail
