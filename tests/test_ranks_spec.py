"""The ``ranks`` setting: a grid axis with its own run ids, validated against batch sizes."""

from __future__ import annotations

import pytest

from lsr1bench.grid import RunSpec, expand, make_run_id, ranks_in_use
from lsr1bench.spec import SpecError, parse_suite

GRID = "grids: [{models: [mlp], datasets: [mnist-embedded], optimizers: [adam], batch_sizes: [12]}]\n"


def _problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as caught:
        expand(parse_suite(text))
    return caught.value.problems


def test_ranks_list_is_a_grid_axis_and_ids_gain_p():
    suite = parse_suite("ranks: [1, 2]\n" + GRID.replace("[adam]", "[adam, {name: sgd, ranks: 3}]"))
    runs = expand(suite)
    assert [(r.run_id, r.ranks) for r in runs] == [
        ("mlp-mnist-embedded-adam-b12-s0", 1),
        ("mlp-mnist-embedded-adam-b12-p2-s0", 2),
        ("mlp-mnist-embedded-sgd-b12-p3-s0", 3),
    ]
    assert ranks_in_use(suite) == [("grids[0].optimizers[1].ranks", 3), ("ranks", 2), ("ranks", 1)]


def test_one_rank_keeps_the_old_run_id_and_old_records_read_as_one_rank():
    assert make_run_id("mlp", False, "mnist", "adam", 20, 0, ranks=1) == "mlp-mnist-adam-b20-s0"
    run = expand(parse_suite(GRID))[0]
    old = run.to_dict()
    del old["ranks"]  # a record written before the setting existed
    assert RunSpec.from_dict(old).comparable() == run.comparable()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ranks: 5\n" + GRID, "ranks: 5 ranks cannot split batch size 12 (grids[0].batch_sizes) into equal shards"),
        (
            GRID.replace("[adam]", "[{name: adam, ranks: [2, 5], batch_sizes: [10, 22]}]"),
            "grids[0].optimizers[0].ranks: 5 ranks cannot split batch size 22 (grids[0].optimizers[0].batch_sizes)",
        ),
        ("ranks: [0]\n" + GRID, "ranks[0]: ranks must be >= 1, got 0"),
        ("ranks: [2, 2]\n" + GRID, "ranks[1]: duplicate ranks value 2"),
        (
            GRID.replace("[adam]", "[{name: lsr1, params: {shard_memory: yes please}}]"),
            "grids[0].optimizers[0].params.shard_memory: shard_memory must be true or false, got 'yes please'",
        ),
        (
            GRID.replace("[adam]", "[{name: adam, params: {shard_memory: true}}]"),
            "grids[0].optimizers[0].params.shard_memory: unknown hyperparameter for adam",
        ),
    ],
)
def test_bad_ranks_name_the_key(text, expected):
    assert any(expected in p for p in _problems(text)), _problems(text)


def test_grid_ranks_with_entry_batch_sizes_names_both_keys():
    text = (
        "grids: [{models: [mlp], datasets: [mnist-embedded], ranks: 4, "
        "optimizers: [{name: adam, batch_sizes: [8, 6]}]}]"
    )
    assert _problems(text) == [
        "grids[0].ranks: 4 ranks cannot split batch size 6 (grids[0].optimizers[0].batch_sizes) into equal "
        "shards; use batch sizes that are multiples of 4, or other ranks"
    ]


def test_shard_memory_does_not_change_the_resolved_params_of_suites_without_it():
    plain = expand(parse_suite(GRID.replace("[adam]", "[lsr1]")))[0]
    assert "shard_memory" not in plain.optimizer_params
    replicated = expand(parse_suite(GRID.replace("[adam]", "[{name: lsr1, params: {shard_memory: false}}]")))[0]
    assert replicated.optimizer_params["shard_memory"] is False


def test_reports_keep_a_p_rank_run_in_its_own_cell(tmp_path):
    from _report_records import write_run

    from lsr1bench.reporting.runs import summarize_run

    one = write_run(tmp_path / "a" / "s", [90.0, 5.0], label="adam")
    two = write_run(tmp_path / "b" / "s", [90.0, 5.0], label="adam", ranks=2)
    assert summarize_run(one).key.label == "adam"
    assert summarize_run(two).key.label == "adam-p2"
