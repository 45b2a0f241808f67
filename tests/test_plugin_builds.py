"""Plugin models and datasets are built and tried before any training.

``validate`` (and ``run``, before it trains) calls each plugin factory once, runs two
examples through each model and checks the output's shape against the dataset's class
count; a failure is exit 2 naming the suite key and quoting the factory's message. A
failure only training can find is a ``failed`` run, and the suite goes on.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr1bench.cli import app

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()

SUITE = """
name: build
epochs: 1
batch_sizes: [50]
grids:
  - models: [{{name: "tests.plugin_example:tiny_net", label: tiny, params: {{hidden: 8}}}}, {model}]
    datasets: [{{name: "tests.plugin_example:blobs", label: blobs}}, {dataset}]
    optimizers: [{{name: torch.optim.SGD, label: sgd, params: {{lr: 0.01}}}}]
"""


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # plugin paths resolve from the current directory


def suite(tmp_path: Path, model: str = "mlp", dataset: str = "mnist-embedded") -> Path:
    path = tmp_path / "build.yaml"
    path.write_text(SUITE.format(model=model, dataset=dataset))
    return path


@pytest.mark.parametrize(
    ("model", "dataset", "expected"),
    [
        (
            '{name: "tests.plugin_example:wide_net", label: wide}',
            "mnist-embedded",
            "grids[0].models[1] (wide): model factory 'tests.plugin_example:wide_net': the forward pass on 2 "
            "examples of blobs returned shape (2, 5); expected (2, 3): one logit per class (3 classes)",
        ),
        (
            '{name: "tests.plugin_example:failing_net", label: failing}',
            "mnist-embedded",
            "grids[0].models[1] (failing): model factory 'tests.plugin_example:failing_net' raised "
            "RuntimeError: no weights file at /nowhere/net.pt",
        ),
        (
            "mlp",
            '{name: "tests.plugin_example:corrupt_blobs", label: corrupt, params: {train: 7}}',
            "grids[0].datasets[1] (corrupt): dataset factory 'tests.plugin_example:corrupt_blobs' raised "
            "OSError: blobs archive is corrupt (wanted 7 examples)",
        ),
    ],
    ids=["wrong-output-size", "model-raises", "dataset-raises"],
)
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_broken_plugin_is_exit_2_naming_the_key_before_any_training(
    tmp_path: Path, model: str, dataset: str, expected: str, command: str
) -> None:
    out = tmp_path / "out"
    args = [command, str(suite(tmp_path, model, dataset))] + (["--output", str(out)] if command == "run" else [])
    result = cli.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert expected in result.output.replace("\n  ", " ").replace("\n", " ") or expected in result.output, result.output
    assert "Traceback" not in result.output
    assert not out.exists()  # nothing written


def test_validate_no_build_skips_the_factories_and_a_good_suite_passes(tmp_path: Path) -> None:
    broken = suite(tmp_path, '{name: "tests.plugin_example:wide_net", label: wide}')
    result = cli.invoke(app, ["validate", "--no-build", str(broken)])
    assert result.exit_code == 0, result.output
    good = tmp_path / "good.yaml"  # the plugin model on its own dataset and on MNIST
    good.write_text(SUITE.replace(", {model}", "").format(dataset="mnist-embedded"))
    result = cli.invoke(app, ["validate", str(good)])
    assert result.exit_code == 0, result.output
    assert "2 runs" in result.output


def test_a_registered_model_on_a_plugin_dataset_it_cannot_take_is_caught(tmp_path: Path) -> None:
    result = cli.invoke(app, ["validate", str(suite(tmp_path))])  # mlp on 8-feature blobs
    assert result.exit_code == 2, result.output
    assert "grids[0].models[1] (mlp): model mlp raised ValueError: input_shape must be" in result.output


def test_a_failure_only_training_finds_is_a_failed_run_and_the_suite_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "late.yaml"
    path.write_text(
        "name: late\nepochs: 1\nbatch_sizes: [50]\ntrain_subset: 200\ntest_subset: 50\ndevices: cpu\n"
        "grids:\n  - models: [mlp]\n    datasets: [mnist-embedded]\n    optimizers:\n"
        '      - {name: "tests.plugin_example:ExplodingSGD", label: boom, params: {lr: 0.01}}\n'
        "      - {name: torch.optim.SGD, label: sgd, params: {lr: 0.01}}\n"
    )
    out = tmp_path / "out"
    result = cli.invoke(app, ["run", str(path), "--output", str(out)])
    assert result.exit_code == 1, result.output  # some runs failed
    assert "Traceback" not in result.output
    records = {p.parent.name: json.loads(p.read_text()) for p in (out / "late").glob("*/run.json")}
    statuses = {name: record["status"] for name, record in records.items()}
    assert statuses == {"mlp-mnist-embedded-boom-b50-s0": "failed", "mlp-mnist-embedded-sgd-b50-s0": "completed"}
    assert records["mlp-mnist-embedded-boom-b50-s0"]["error"] == "FloatingPointError: step 3 exploded"
    trace = out / "late" / "mlp-mnist-embedded-boom-b50-s0" / "traceback.txt"
    assert f"tracebacks (or rerun with --debug): {trace}" in result.output.replace("\n", "")
    debug = cli.invoke(app, ["run", str(path), "--output", str(out), "--debug"])
    assert debug.exit_code == 1, debug.output  # the failed run again, its traceback shown
    assert "Traceback (most recent call last)" in debug.output and "step 3 exploded" in debug.output
