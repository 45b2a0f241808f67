"""The suite schema: what parses, what is rejected, and how the problems are worded."""

# ruff: noqa: E501  (tables of suites and the messages they must produce)
from __future__ import annotations

import textwrap

import pytest
import yaml

from lsr1bench.spec import SpecError, load_suite, parse_suite

GOOD = """
name: paper-fig1
epochs: 20
repeats: 10
grids:
  - models: [{name: lenet5, batch_norm: [true, false]}]
    datasets: [mnist]
    batch_sizes: [20]
    optimizers:
      - nag
      - sgd
      - momentum
      - adadelta
      - {name: lsr1, batch_sizes: [400]}
      - {name: lbfgs, batch_sizes: [400]}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_suite(textwrap.dedent(text), source="s.yaml")
    return info.value.problems


def test_good_suite_parses_with_shorthands() -> None:
    suite = parse_suite(GOOD)
    assert suite.name == "paper-fig1"
    grid = suite.grids[0]
    assert [e.name for e in grid.optimizers] == ["nag", "sgd", "momentum", "adadelta", "lsr1", "lbfgs"]
    assert grid.models[0].batch_norm_values() == [True, False]
    assert grid.optimizers[4].batch_sizes == [400]


def test_name_defaults_to_file_stem(tmp_path) -> None:
    path = tmp_path / "my-suite.yaml"
    path.write_text(GOOD.replace("name: paper-fig1\n", ""))
    assert load_suite(path).name == "my-suite"


def test_resnet_defaults_to_batch_norm() -> None:
    suite = parse_suite(
        "grids: [{models: [resnet20, lenet5], datasets: [cifar10], optimizers: [adam], batch_sizes: [128]}]"
    )
    assert [m.batch_norm_values() for m in suite.grids[0].models] == [[True], [False]]


BAD = [
    # (suite text, expected substring of one problem line)
    ("grids: []", "grids: list should have at least 1 item"),
    (
        "epochs: -1\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "epochs: input should be greater than or equal to 1",
    ),
    (
        "epocs: 3\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "epocs: unknown key (did you mean 'epochs'?)",
    ),
    (
        "grids: [{models: [lenet6], datasets: [mnist], optimizers: [adam]}]",
        "grids[0].models[0].name: unknown model 'lenet6' (did you mean 'lenet5'?); known: lenet5",
    ),
    (
        "grids: [{models: [mlp], datasets: [cifar100], optimizers: [adam]}]",
        "grids[0].datasets[0]: unknown dataset 'cifar100' (did you mean 'cifar10'?)",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adamw]}]",
        "grids[0].optimizers[0].name: unknown optimizer 'adamw' (did you mean 'adam'?); known: lsr1, lsr1-ls",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: lsr1, params: {memroy: 5}}]}]",
        "grids[0].optimizers[0].params.memroy: unknown hyperparameter for lsr1 (did you mean 'memory'?)",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: lsr1, params: {memory: 0}}]}]",
        "grids[0].optimizers[0].params.memory: memory must be an integer >= 1, got 0",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: sgd, params: {weight_decay: 0.1}}]}]",
        "params.weight_decay: weight_decay is not an optimizer hyperparameter",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], batch_sizes: [0]}]",
        "grids[0].batch_sizes[0]: batch size must be >= 1, got 0",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], batch_sizes: ['20']}]",
        "grids[0].batch_sizes[0]: input should be a valid integer (got '20')",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], targets: [150]}]",
        "grids[0].targets[0]: a target test error is a percentage in (0, 100), got 150.0",
    ),
    (
        "grids: [{models: [{name: resnet20, batch_norm: false}], datasets: [cifar10], optimizers: [adam]}]",
        "grids[0].models[0].batch_norm: resnet20 always uses batch norm",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: lsr1, lr_schedule: {milestones: [80]}}]}]",
        "grids[0].optimizers[0].lr_schedule: lsr1 has no learning rate to schedule",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [momentum], lr_schedule: {milestones: [80, 40]}}]",
        "grids[0].lr_schedule.milestones: milestones must be strictly increasing",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam, lsr1], lr_schedule: {milestones: [8]}}]",
        "grids[0].optimizers[1]: lsr1 has no learning rate, so the grid's lr_schedule cannot apply",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: adam, label: Big Adam}]}]",
        "grids[0].optimizers[0].label: label 'Big Adam' must be lower-case",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], seeds: [1], repeats: 3}]",
        "grids[0].repeats: give either seeds or repeats, not both",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], seeds: [1, 1]}]",
        "grids[0].seeds[1]: duplicate seed 1",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: adam, params: {betas: [0.9]}}]}]",
        "params.betas: betas must be two numbers in [0, 1)",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: nag, params: {lr: -0.1}}]}]",
        "params.lr: lr must be a number > 0, got -0.1",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], stop_at_targets: yes please}]",
        "grids[0].stop_at_targets: input should be a valid boolean",
    ),
    (
        "devices: gpu\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "devices: devices must be 'auto', 'cpu' or a list like 'cuda:0,cuda:1'",
    ),
    (
        "jobs: 0\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "jobs: input should be greater than or equal to 1",
    ),
    ("grids: [{models: [mlp], optimizers: [adam]}]", "grids[0].datasets: required key is missing"),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], train_subset: 0}]",
        "grids[0].train_subset: input should be greater than or equal to 1",
    ),
    (
        "targets: {train_los: [0.3]}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets.train_los: unknown target metric (did you mean 'train_loss'?); known: test_error, test_loss, train_loss",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [{name: adam, targets: {train_loss: [0.3, -1]}}]}]",
        "grids[0].optimizers[0].targets.train_loss[1]: a train loss target must be > 0 (a loss falls below it), got -1.0",
    ),
    (
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam], targets: {test_error: [2, 120]}}]",
        "grids[0].targets.test_error[1]: a target test error is a percentage in (0, 100), got 120.0",
    ),
    (
        "targets: {test_loss: [0.2, 0.2]}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets.test_loss[1]: duplicate target 0.2",
    ),
    (
        "targets: {test_loss: low}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets.test_loss[0]: a target is a finite number, got 'low'",
    ),
    (
        "targets: {train_loss: ['1e-3']}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets.train_loss[0]: a target is a finite number, got the text '1e-3' (write it without quotes)",
    ),
    (
        "targets: {}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets: targets is a list of test errors in % or a mapping of metric to thresholds (test_error, test_loss, train_loss); got an empty mapping",
    ),
    (
        "targets: fast\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets: targets is a list of test errors in % or a mapping of metric to thresholds (test_error, test_loss, train_loss), got 'fast'",
    ),
    (
        "targets: {train_loss: [.inf]}\ngrids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]",
        "targets.train_loss[0]: a target is a finite number, got inf",
    ),
    ("- a\n- b\n", "(top level): expected a mapping with 'grids:', got a list"),
    ("", "(top level): the suite file is empty"),
    ("# only a comment\n", "(top level): the suite file is empty"),
    ("grids:\n  - models: [a\n  b: c\n", "(yaml) line 3, column 4: broken YAML"),
    ("grids: []\ngrids: []\n", "(yaml) line 2, column 1: broken YAML: duplicate key 'grids' (first given on line 1)"),
]


@pytest.mark.parametrize("text, expected", BAD, ids=[b[1][:40] for b in BAD])
def test_bad_suites_name_the_key_path(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in line for line in found), found


def test_all_problems_are_reported_at_once() -> None:
    found = problems(
        """
        epocs: 3
        grids:
          - models: [lenet6]
            datasets: [mnist, cifar100]
            optimizers:
              - {name: nag, batch_sizes: [0], params: {lerning_rate: 0.1}}
              - {name: adam, targets: [150], params: {betas: [0.9]}}
        """
    )
    paths = [line.split(":")[0] for line in found]
    assert paths == [
        "grids[0].models[0].name",
        "grids[0].datasets[1]",
        "grids[0].optimizers[0].batch_sizes[0]",
        "grids[0].optimizers[0].params.lerning_rate",
        "grids[0].optimizers[1].targets[0]",
        "grids[0].optimizers[1].params.betas",
        "epocs",
    ], found


def test_missing_file_and_directory(tmp_path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_suite(tmp_path / "nope.yaml")
    with pytest.raises(SpecError, match="is a directory"):
        load_suite(tmp_path)


def test_yaml_is_loaded_safely() -> None:
    found = problems("grids: !!python/object/apply:os.system ['echo hacked']\n")
    assert any("broken YAML" in line and "could not determine a constructor" in line for line in found), found


@pytest.mark.parametrize(
    "written, value", [("1e-3", 1e-3), ("5E-4", 5e-4), ("+2e-1", 0.2), (".5e-2", 0.005), ("9e-1", 0.9)]
)
def test_scientific_notation_without_a_dot_is_a_number(written: str, value: float) -> None:
    """YAML 1.2 (and every ML config) reads 1e-3 as a float; PyYAML's YAML 1.1 reads it as text."""
    suite = parse_suite(
        f"targets: {{train_loss: [{written}]}}\n"
        f"grids: [{{models: [mlp], datasets: [mnist], optimizers: [{{name: adam, params: {{lr: {written}}}}}, "
        f"{{name: lsr1, params: {{eta: [{written}, 0.5]}}}}]}}]"
    )
    assert suite.targets == {"train_loss": [value]}
    assert suite.grids[0].optimizers[0].params == {"lr": value}
    assert suite.grids[0].optimizers[1].params == {"eta": [value, 0.5]}


def test_scientific_notation_reaches_a_plugin_optimizer_as_a_float() -> None:
    suite = parse_suite(
        "grids: [{models: [mlp], datasets: [mnist], "
        "optimizers: [{name: 'torch.optim:RMSprop', label: rmsprop, params: {lr: 1e-3, eps: 1E-8}}]}]"
    )
    assert suite.grids[0].optimizers[0].params == {"lr": 0.001, "eps": 1e-8}


def test_quoted_scientific_notation_and_other_texts_stay_text() -> None:
    from lsr1bench.spec import _UniqueKeyLoader

    data = yaml.load("[\"1e-3\", e5, 1e, 1.5, 3, 1_0e1, -2e+1, 1e3]", Loader=_UniqueKeyLoader)  # noqa: S506
    assert data == ["1e-3", "e5", "1e", 1.5, 3, 100.0, -20.0, 1000.0]
    assert yaml.safe_load("a: 1e-3") == {"a": "1e-3"}, "the resolver must not leak into yaml.SafeLoader"


def test_safe_loading_still_refuses_python_tags_next_to_scientific_numbers() -> None:
    for tag in ("!!python/object/apply:os.system ['echo hacked']", "!!python/name:os.system", "!!python/float 1e-3"):
        found = problems(f"lr: 1e-3\ngrids: {tag}\n")
        assert any("could not determine a constructor" in line for line in found), (tag, found)


def test_file_stem_that_cannot_name_a_suite(tmp_path) -> None:
    path = tmp_path / "my suite.yaml"
    path.write_text(GOOD.replace("name: paper-fig1\n", ""))
    with pytest.raises(SpecError, match="set 'name:'"):
        load_suite(path)


def test_targets_list_and_mapping_forms() -> None:
    grid = "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam]}]"
    assert parse_suite("targets: [1.5, 1]\n" + grid).targets == {"test_error": [1.5, 1.0]}
    assert parse_suite("targets: 2\n" + grid).targets == {"test_error": [2.0]}
    suite = parse_suite("targets: {train_loss: 0.3, test_error: [2.0, 1.5], test_loss: [0.1]}\n" + grid)
    assert suite.targets == {"test_error": [2.0, 1.5], "test_loss": [0.1], "train_loss": [0.3]}
