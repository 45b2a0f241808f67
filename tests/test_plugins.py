"""Optimizers, models and datasets by import path; sweeps; validation split; tuned rows."""

from __future__ import annotations

import csv
import json
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr1bench import records
from lsr1bench.cli import app
from lsr1bench.grid import expand
from lsr1bench.reporting import build_report, main_table
from lsr1bench.spec import SpecError, parse_suite

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()

PLUGIN_SUITE = """
name: plug
epochs: 2
batch_sizes: [50]
validation_split: 40
targets: [60]
grids:
  - models: [{name: "tests.plugin_example:tiny_net", label: tiny, params: {hidden: 8}}]
    datasets: [{name: "tests.plugin_example:blobs", label: blobs, params: {train: 200}}]
    optimizers:
      - {name: torch.optim.RMSprop, label: rmsprop, params: {lr: [0.001, 0.01]}}
      - {name: torch.optim.LBFGS, label: tlbfgs, params: {history_size: 3, max_iter: 2}}
      - {name: "tests.plugin_example:SignSGD", label: sign}
"""


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # plugin paths resolve from the current directory


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_suite(textwrap.dedent(text))
    return info.value.problems


def test_plugin_suite_expands_with_sweep_values_in_ids_and_declared_weight_decay() -> None:
    runs = expand(parse_suite(PLUGIN_SUITE, default_name="plug"))
    assert [r.run_id for r in runs] == [
        "tiny-blobs-rmsprop-lr0.001-b50-s0",
        "tiny-blobs-rmsprop-lr0.01-b50-s0",
        "tiny-blobs-tlbfgs-b50-s0",
        "tiny-blobs-sign-b50-s0",
    ]
    first = runs[0]
    assert first.optimizer_params == {"lr": 0.001} and first.sweep == {"lr": 0.001} and first.sweep_of == "rmsprop"
    assert first.weight_decay == 1e-3  # blobs.weight_decay in the plugin module
    assert first.model_path == "tests.plugin_example:tiny_net" and first.dataset_path == "tests.plugin_example:blobs"
    assert runs[2].sweep_of is None and runs[2].validation_split == 40


def test_builtin_betas_list_is_a_value_and_a_list_of_lists_sweeps_it() -> None:
    base = "grids: [{models: [mlp], datasets: [mnist-embedded], batch_sizes: [10], optimizers: [%s]}]"
    one = expand(parse_suite(base % "{name: adam, params: {betas: [0.8, 0.9]}}"))
    assert [r.run_id for r in one] == ["mlp-mnist-embedded-adam-b10-s0"]
    two = expand(parse_suite(base % "{name: adam, params: {betas: [[0.8, 0.9], [0.9, 0.99]], lr: [0.01]}}"))
    assert [r.label for r in two] == ["adam-betas0.8_0.9-lr0.01", "adam-betas0.9_0.99-lr0.01"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("{name: torch.optim.NoSuch, label: x}", "optimizers[0].name: module 'torch.optim' has no attribute 'NoSuch'"),
        ("{name: 'nosuchpkg.optim:Fast', label: x}", "optimizers[0].name: cannot import module 'nosuchpkg.optim'"),
        ("{name: torch.optim.RMSprop, label: x, params: {lrr: 0.1}}", "optimizers[0].params.lrr: torch.optim.RMSprop"),
        ("{name: torch.optim.RMSProp}", "no attribute 'RMSProp' (from 'torch.optim.RMSProp') (did you mean 'RMSprop'"),
        ("{name: torch.optim.RMSprop, label: x, params: {lr: -1.0}}", "raised ValueError: Invalid learning rate"),
        ("{name: 'tests.plugin_example:tiny_net', label: x}", "is not a torch.optim.Optimizer subclass"),
        ("{name: adam, params: {lr: []}}", "optimizers[0].params.lr: an empty list sweeps lr over nothing"),
        ("{name: adam, params: {lr: [0.1, -0.1]}}", "optimizers[0].params.lr[1]: lr must be a number > 0"),
    ],
)
def test_bad_optimizer_paths_and_keywords_are_one_line_errors_naming_the_key(entry: str, expected: str) -> None:
    found = _problems(
        f"grids: [{{models: [mlp], datasets: [mnist-embedded], batch_sizes: [10], optimizers: [{entry}]}}]"
    )
    assert len(found) == 1 and expected in found[0] and found[0].startswith("grids[0]."), found
    if "lrr" in expected:
        assert "accepts: lr, alpha, eps" in found[0]


def test_bad_model_and_dataset_factories_name_the_key() -> None:
    found = _problems(
        """
        grids:
          - models: [{name: "tests.plugin_example:tiny_net", label: t, params: {width: 3, num_classes: 4}}]
            datasets: [{name: "tests.plugin_example:nothing", label: d}, FashionMnist]
            batch_sizes: [10]
            optimizers: [adam]
        """
    )
    assert any(
        p.startswith("grids[0].models[0].params.width: tests.plugin_example:tiny_net takes no keyword") for p in found
    )
    assert any(p.startswith("grids[0].models[0].params.num_classes: num_classes is passed") for p in found)
    assert any(p.startswith("grids[0].datasets[0].name: module 'tests.plugin_example' has no attribute") for p in found)
    assert any(
        p.startswith("grids[0].datasets[1]: unknown dataset 'FashionMnist' (did you mean 'FashionMNIST'?)")
        for p in found
    )
    assert len(found) == 4, found


def test_nag_on_a_plugin_dataset_needs_an_explicit_learning_rate() -> None:
    with pytest.raises(SpecError) as info:
        expand(parse_suite(
            "grids: [{models: [mlp], datasets: [{name: 'tests.plugin_example:blobs', label: b}], "
            "batch_sizes: [10], optimizers: [nag]}]"
        ))  # fmt: skip
    assert info.value.problems == [
        "grids[0].optimizers[0].params.lr: nag's default learning rate is the paper's per dataset family, "
        "and grids[0].datasets[0] (tests.plugin_example:blobs) has none; set params.lr"
    ]


def test_validate_cli_exit_2_without_traceback(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(PLUGIN_SUITE.replace("history_size: 3", "histroy_size: 3"))
    result = cli.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    assert (
        "grids[0].optimizers[1].params.histroy_size: torch.optim.LBFGS takes no keyword 'histroy_size'" in result.output
    )
    assert "Traceback" not in result.output


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_plugin_suite_runs_with_validation_columns_and_counted_closures(tmp_path: Path) -> None:
    suite = tmp_path / "plug.yaml"
    suite.write_text(PLUGIN_SUITE)
    result = cli.invoke(app, ["run", str(suite), "--output", str(tmp_path / "out"), "--devices", "cpu"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out" / "plug"
    # 200 - 40 held out = 160 training examples -> 3 steps of 50 per epoch
    sign = _rows(out / "tiny-blobs-sign-b50-s0" / "epochs.csv")
    assert [int(r["grad_evals"]) for r in sign] == [0, 3, 6]  # a first-order plugin: one closure call a step
    assert all(r["val_error"] != "" and r["val_loss"] != "" for r in sign)
    assert float(sign[-1]["val_error"]) < float(sign[0]["val_error"])
    lbfgs = _rows(out / "tiny-blobs-tlbfgs-b50-s0" / "epochs.csv")
    # LBFGS requires a closure: driven like second order; max_iter=2 evaluates it more than once per step
    assert int(lbfgs[1]["steps"]) == 3 and int(lbfgs[1]["grad_evals"]) > 3
    run = json.loads((out / "tiny-blobs-rmsprop-lr0.01-b50-s0" / "run.json").read_text())
    assert run["data"]["train_examples"] == 160 and run["data"]["validation_examples"] == 40
    assert run["spec"]["weight_decay"] == 1e-3


def _write(suite_dir: Path, label: str, seed: int, val_errors: list[float], test_errors: list[float], **spec) -> None:
    run_id = f"mlp-mnist-embedded-{label}-b100-s{seed}"
    directory = suite_dir / run_id
    directory.mkdir(parents=True)
    full = {"suite": "t", "run_id": run_id, "model": "mlp", "dataset": "mnist-embedded", "batch_norm": False,
            "optimizer": "adam", "label": label, "batch_size": 100, "seed": seed, "epochs": len(test_errors) - 1,
            "targets": {"test_error": [10.0]}, **spec}  # fmt: skip
    records.write_run(directory, records.RunRecord(suite="t", run_id=run_id, spec=full, status="completed",
                                                   epochs_completed=len(test_errors) - 1))  # fmt: skip
    rows = [
        {"epoch": e, "train_loss": 1.0, "test_loss": 1.0, "test_error": t, "train_seconds": e, "grad_evals": 10 * e,
         "steps": 10 * e, "val_error": v, "val_loss": 1.0 if v is not None else None}
        for e, (v, t) in enumerate(zip(val_errors, test_errors))
    ]  # fmt: skip
    records.write_epochs(directory, rows)


def test_tuned_row_is_chosen_on_validation_not_test(tmp_path: Path) -> None:
    suite_dir = tmp_path / "t"
    # lr0.01 reaches val error < 10 at epoch 1 but has the worse test error; lr0.001 is the
    # test set's favourite (epoch 1 on test) but reaches the validation target only at epoch 2
    for seed in (0, 1):
        _write(suite_dir, "adam-lr0.01", seed, [90, 8, 7], [90, 12, 9], sweep_of="adam", sweep={"lr": 0.01})
        _write(suite_dir, "adam-lr0.001", seed, [90, 11, 5], [90, 6, 4], sweep_of="adam", sweep={"lr": 0.001})
    _write(suite_dir, "lsr1", 0, [None, None, None], [90, 5, 3])
    report = build_report(suite_dir)
    (choice,) = report.tuned
    assert choice.chosen == "adam-lr0.01"
    tuned = [c for c in report.cells if c.key.label == "adam (tuned)"]
    assert len(tuned) == 1 and tuned[0].final_test_error.median == 9.0  # the chosen setting's test rows
    table = main_table(report)
    assert "| adam (tuned)" in table and "Criterion: fewest epochs (median over seeds) until val_error < 10" in table
    assert "**adam-lr0.01**" in table


def test_tie_on_epochs_is_broken_by_final_validation_error(tmp_path: Path) -> None:
    suite_dir = tmp_path / "t"
    _write(suite_dir, "adam-lr0.01", 0, [90, 8, 7], [90, 5, 5], sweep_of="adam", sweep={"lr": 0.01})
    _write(suite_dir, "adam-lr0.1", 0, [90, 9, 3], [90, 9, 9], sweep_of="adam", sweep={"lr": 0.1})
    assert build_report(suite_dir).tuned[0].chosen == "adam-lr0.1"


def test_without_a_validation_split_no_setting_is_picked_and_the_report_says_why(tmp_path: Path) -> None:
    suite_dir = tmp_path / "t"
    _write(suite_dir, "adam-lr0.01", 0, [None] * 3, [90, 8, 7], sweep_of="adam", sweep={"lr": 0.01})
    _write(suite_dir, "adam-lr0.1", 0, [None] * 3, [90, 9, 3], sweep_of="adam", sweep={"lr": 0.1})
    report = build_report(suite_dir)
    assert report.tuned[0].chosen is None
    assert not [c for c in report.cells if "tuned" in c.key.label]
    assert (
        "no setting picked: adam-lr0.01, adam-lr0.1 recorded no validation error (set validation_split"
        in main_table(report)
    )


def test_an_entry_named_by_path_is_labelled_by_its_factory_or_class() -> None:
    runs = expand(
        parse_suite(
            "grids: [{models: ['tests.plugin_example:tiny_net'], datasets: ['tests.plugin_example:blobs'], "
            "batch_sizes: [10], optimizers: [torch.optim.RMSprop, 'tests.plugin_example:SignSGD']}]"
        )
    )
    assert [r.run_id for r in runs] == ["tiny_net-blobs-rmsprop-b10-s0", "tiny_net-blobs-signsgd-b10-s0"]
    assert runs[0].model_path == "tests.plugin_example:tiny_net"
    assert runs[0].dataset_path == "tests.plugin_example:blobs"
    assert runs[0].optimizer == "torch.optim.RMSprop" and runs[0].label == "rmsprop"


def test_two_entries_with_one_default_label_need_a_label() -> None:
    text = (
        "grids: [{models: [mlp], datasets: [mnist-embedded], batch_sizes: [10], "
        "optimizers: [torch.optim.SGD, {name: 'tests.plugin_example:SignSGD', params: {lr: 0.1}}, %s]}]"
    )
    with pytest.raises(SpecError, match=r"optimizers\[2\]: run id 'mlp-mnist-embedded-sgd-b10-s0' is also made by "):
        expand(parse_suite(text % "{name: sgd, params: {lr: 0.5}}"))
    assert len(expand(parse_suite(text % "{name: sgd, label: sgd-fast, params: {lr: 0.5}}"))) == 3


@pytest.mark.parametrize(
    "seeds, expected",
    [
        ("0", "seeds: seeds is a list of seeds; write seeds: [0] for seed 0, or the range form repeats: 1"),
        ("3", "seeds: seeds is a list of seeds; write seeds: [3] for seed 3, or the range form repeats: 3 for seeds 0..2"),  # noqa: E501
        ("'0-4'", "seeds: seeds is a list of seeds such as [0, 1, 2], or give the range form repeats: 3 instead"),
    ],
)
def test_seeds_must_be_a_list_or_the_range_form(seeds: str, expected: str) -> None:
    found = _problems(f"seeds: {seeds}\ngrids: [{{models: [mlp], datasets: [mnist-embedded], optimizers: [adam]}}]")
    assert found == [expected] or (len(found) == 1 and found[0].startswith(expected)), found
    grid = "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]"
    assert parse_suite("seeds: [3]\n" + grid).seeds == [3]
    assert parse_suite("repeats: 3\n" + grid).repeats == 3


@pytest.mark.parametrize(
    "winner, warning",
    [
        (0.001, "lr 0.001 is the smallest value of its sweep (0.001, 0.01, 0.1); the best lr may lie below it"),
        (0.01, None),
        (0.1, "lr 0.1 is the largest value of its sweep (0.001, 0.01, 0.1); the best lr may lie above it"),
    ],
)
def test_a_tuned_choice_at_the_edge_of_its_sweep_is_warned_of(tmp_path: Path, winner: float, warning) -> None:
    suite_dir = tmp_path / "t"
    for lr in (0.001, 0.01, 0.1):
        val = [90, 8, 5] if lr == winner else [90, 20, 15]  # the winner reaches val error < 10 first
        _write(suite_dir, f"adam-lr{lr:g}", 0, val, [90, 9, 9], sweep_of="adam", sweep={"lr": lr})
    report = build_report(suite_dir)
    (choice,) = report.tuned
    assert choice.chosen == f"adam-lr{winner:g}"
    table = main_table(report)
    if warning is None:
        assert choice.edges == () and "warning:" not in table
    else:
        assert choice.edges == (warning + ": extend the sweep",)
        assert f"  - warning: {warning}: extend the sweep" in table
