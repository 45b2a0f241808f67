"""Grid expansion: counts, ids, per-entry overrides, unions of grids, collisions, shards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lsr1bench.grid import RunSpec, expand, make_run_id, parse_shard, shard
from lsr1bench.spec import SpecError, load_suite, parse_suite

FIGURE_1_AND_2 = """
name: figures-1-2
epochs: 20
repeats: 10
grids:
  - name: mnist
    models: [{name: lenet5, batch_norm: [true, false]}]
    datasets: [mnist]
    batch_sizes: [20]
    optimizers: [nag, sgd, momentum, adadelta, {name: lsr1, batch_sizes: [400]}, {name: lbfgs, batch_sizes: [400]}]
  - name: cifar10
    models: [{name: cifar_lenet, batch_norm: [true, false]}]
    datasets: [cifar10]
    batch_sizes: [96]
    optimizers: [nag, sgd, momentum, adadelta, {name: lsr1, batch_sizes: [400]}, {name: lbfgs, batch_sizes: [400]}]
"""

TABLE_1 = """
name: table-1
stop_at_targets: false
grids:
  - models: [{name: lenet5, batch_norm: true}]
    datasets: [mnist]
    targets: [1.1, 1.2, 1.5]
    optimizers: [nag, lsr1, adam]
    batch_sizes: [500, 1000]
    epochs: 50
  - models: [{name: lenet5, batch_norm: true}]
    datasets: [mnist]
    targets: [1.1, 1.2, 1.5]
    optimizers: [nag, lsr1, adam]
    batch_sizes: [10000]
    epochs: 200
"""

RESNET = """
name: figure-5
epochs: 200
batch_sizes: [128]
grids:
  - models: [resnet20]
    datasets: [cifar10]
    optimizers:
      - {name: momentum, params: {lr: 0.1}, lr_schedule: {milestones: [80, 120], gamma: 0.1}}
      - lsr1
      - adam
  - models: [resnet20]
    datasets: [cifar10]
    optimizers:
      - {name: lsr1, label: lsr1-dec0.2-inc1.2, params: {radius_decrease: 0.2, radius_increase: 1.2}}
      - {name: lsr1, label: lsr1-m2, params: {memory: 2}}
      - {name: lsr1, batch_sizes: [512, 2048, 8192]}
"""


def test_paper_figures_1_and_2_expand() -> None:
    runs = expand(parse_suite(FIGURE_1_AND_2))
    assert len(runs) == 2 * 2 * 6 * 10  # datasets x batch norm x optimizers x repeats
    ids = [r.run_id for r in runs]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "lenet5-bn-mnist-nag-b20-s0"
    by_id = {r.run_id: r for r in runs}
    lsr1 = by_id["lenet5-mnist-lsr1-b400-s9"]
    assert (lsr1.batch_size, lsr1.epochs, lsr1.weight_decay, lsr1.batch_norm) == (400, 20, 1e-4, False)
    assert lsr1.optimizer_params["memory"] == 5
    nag = by_id["cifar_lenet-bn-cifar10-nag-b96-s3"]
    assert nag.optimizer_params == {"lr": 0.01, "momentum": 0.9}  # the paper's CIFAR-10 rate
    assert nag.weight_decay == 1e-3


def test_union_of_grids_with_their_own_epochs_and_targets() -> None:
    runs = expand(parse_suite(TABLE_1))
    assert len(runs) == 3 * 2 + 3 * 1
    by_id = {r.run_id: r for r in runs}
    assert by_id["lenet5-bn-mnist-adam-b1000-s0"].epochs == 50
    assert by_id["lenet5-bn-mnist-adam-b10000-s0"].epochs == 200
    assert by_id["lenet5-bn-mnist-lsr1-b10000-s0"].targets == {"test_error": (1.1, 1.2, 1.5)}


def test_lr_schedule_labels_and_entry_batch_sizes() -> None:
    runs = expand(parse_suite(RESNET))
    ids = [r.run_id for r in runs]
    assert ids == [
        "resnet20-bn-cifar10-momentum-b128-s0",
        "resnet20-bn-cifar10-lsr1-b128-s0",
        "resnet20-bn-cifar10-adam-b128-s0",
        "resnet20-bn-cifar10-lsr1-dec0.2-inc1.2-b128-s0",
        "resnet20-bn-cifar10-lsr1-m2-b128-s0",
        "resnet20-bn-cifar10-lsr1-b512-s0",
        "resnet20-bn-cifar10-lsr1-b2048-s0",
        "resnet20-bn-cifar10-lsr1-b8192-s0",
    ]
    assert runs[0].lr_schedule == {"milestones": [80, 120], "gamma": 0.1}
    assert runs[0].optimizer_params["lr"] == 0.1
    assert runs[1].lr_schedule is None
    assert runs[3].optimizer_params["radius_decrease"] == 0.2


def test_settings_resolve_entry_then_grid_then_suite() -> None:
    suite = parse_suite(
        """
        epochs: 3
        seeds: [7]
        weight_decay: 0.0
        train_subset: 100
        grids:
          - models: [mlp]
            datasets: [mnist-embedded]
            epochs: 4
            batch_sizes: [10]
            optimizers: [sgd, {name: adam, epochs: 5, seeds: [1, 2], test_subset: 50}]
        """.replace("\n        ", "\n")
    )
    runs = expand(suite)
    assert [(r.label, r.epochs, r.seed) for r in runs] == [("sgd", 4, 7), ("adam", 5, 1), ("adam", 5, 2)]
    assert {r.weight_decay for r in runs} == {0.0}
    assert [r.test_subset for r in runs] == [None, 50, 50]
    assert {r.train_subset for r in runs} == {100}


def test_expansion_is_deterministic_and_round_trips() -> None:
    first = expand(parse_suite(FIGURE_1_AND_2))
    second = expand(parse_suite(FIGURE_1_AND_2))
    assert first == second
    for run in first[:5]:
        assert RunSpec.from_dict(json.loads(json.dumps(run.to_dict()))) == run


def test_same_id_with_different_settings_is_an_error_naming_both() -> None:
    suite = parse_suite(
        "batch_sizes: [10]\ngrids:\n"
        "  - {models: [mlp], datasets: [mnist], optimizers: [adam]}\n"
        "  - {models: [mlp], datasets: [mnist], optimizers: [{name: adam, params: {lr: 0.01}}]}\n"
    )
    with pytest.raises(SpecError) as info:
        expand(suite)
    (line,) = info.value.problems
    assert "grids[1].optimizers[0]" in line and "grids[0].optimizers[0]" in line
    assert "mlp-mnist-adam-b10-s0" in line and "label" in line


def test_identical_runs_from_overlapping_grids_are_kept_once() -> None:
    suite = parse_suite(
        "batch_sizes: [10]\ngrids:\n"
        "  - {models: [mlp], datasets: [mnist], optimizers: [adam, sgd]}\n"
        "  - {models: [mlp], datasets: [mnist], optimizers: [adam]}\n"
    )
    assert [r.run_id for r in expand(suite)] == ["mlp-mnist-adam-b10-s0", "mlp-mnist-sgd-b10-s0"]


def test_missing_batch_sizes_is_an_error() -> None:
    suite = parse_suite(
        "grids: [{models: [mlp], datasets: [mnist], optimizers: [adam, {name: sgd, batch_sizes: [5]}]}]"
    )
    with pytest.raises(SpecError, match=r"grids\[0\]\.optimizers\[0\]: no batch_sizes for adam"):
        expand(suite)


def test_run_id_format() -> None:
    assert make_run_id("lenet5", True, "mnist", "lsr1", 400, 3) == "lenet5-bn-mnist-lsr1-b400-s3"
    assert make_run_id("mlp", False, "mnist-embedded", "adam", 20, 0) == "mlp-mnist-embedded-adam-b20-s0"


@pytest.mark.parametrize("count", [1, 2, 3, 7, 240, 500])
def test_shards_partition_the_grid_exactly(count: int) -> None:
    runs = expand(parse_suite(FIGURE_1_AND_2))
    shards = [shard(runs, i, count) for i in range(count)]
    ids = [r.run_id for s in shards for r in s]
    assert sorted(ids) == sorted(r.run_id for r in runs)
    assert len(ids) == len(set(ids))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1
    assert shard(runs, 0, count) == shards[0]  # deterministic


def test_parse_shard() -> None:
    assert parse_shard("0/4") == (0, 4)
    assert parse_shard(" 3 / 4 ") == (3, 4)
    for bad in ("4/4", "1", "a/b", "-1/4", "0/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_targets_on_any_metric_resolve_and_round_trip() -> None:
    suite = parse_suite(
        """
        targets: {train_loss: [0.3, 0.1], test_error: [2.0]}
        batch_sizes: [10]
        grids:
          - models: [mlp]
            datasets: [mnist-embedded]
            optimizers:
              - sgd
              - {name: adam, targets: [5, 3]}
              - {name: nag, targets: {test_loss: 0.2}}
              - {name: momentum, targets: []}
          - models: [mlp]
            datasets: [mnist]
            targets: {train_loss: [0.5]}
            optimizers: [sgd]
        """.replace("\n        ", "\n")
    )
    by_label = {(r.dataset, r.label): r for r in expand(suite)}
    # the mapping is canonical (test error, test loss, train loss), thresholds as written
    assert by_label[("mnist-embedded", "sgd")].targets == {"test_error": (2.0,), "train_loss": (0.3, 0.1)}
    assert by_label[("mnist-embedded", "adam")].targets == {"test_error": (5.0, 3.0)}  # the list is test error
    assert by_label[("mnist-embedded", "nag")].targets == {"test_loss": (0.2,)}
    assert by_label[("mnist-embedded", "momentum")].targets == {}  # an empty list clears the suite's
    assert by_label[("mnist", "sgd")].targets == {"train_loss": (0.5,)}
    run = by_label[("mnist-embedded", "sgd")]
    assert run.to_dict()["targets"] == {"test_error": [2.0], "train_loss": [0.3, 0.1]}
    assert RunSpec.from_dict(run.to_dict()) == run
    # a record written before targets had metrics holds a list: test error
    old = dict(run.to_dict(), targets=[1.5, 1.2])
    assert RunSpec.from_dict(old).targets == {"test_error": (1.5, 1.2)}


def test_shards_from_separate_processes_with_different_hash_seeds_partition_the_suite(tmp_path: Path) -> None:
    """Each Slurm array task computes its own shard: in its own process, with its own
    PYTHONHASHSEED. The union of ``--shard i/3`` over i must be every run exactly once."""
    import os
    import subprocess
    import sys

    suite = Path(__file__).resolve().parents[1] / "suites" / "ci.yaml"
    expected = {r.run_id for r in expand(load_suite(suite))}
    processes = []
    for i in range(3):
        env = {**os.environ, "PYTHONHASHSEED": str(17 + 1000 * i)}
        command = [sys.executable, "-m", "lsr1bench", "run", str(suite), "--dry-run", "--shard", f"{i}/3",
                   "--output", str(tmp_path), "--devices", "cpu"]  # fmt: skip
        processes.append(subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True))  # fmt: skip
    seen: list[str] = []
    for process in processes:
        out, _ = process.communicate(timeout=120)
        assert process.returncode == 0, out
        ids = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
        assert ids, out
        seen += ids
    assert sorted(seen) == sorted(expected) and len(seen) == len(set(seen))
