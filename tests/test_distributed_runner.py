"""Data-parallel training in the runner, on real gloo processes (spawned, file:// store).

The reference is always the 1-rank run of the same spec, trained through the runner's
ordinary one-process path; the P-rank run must see the same global minibatches and
end at the same numbers (float64, where only summation order differs).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from _spawn import run_ranks

from lsr1bench import parallel as layouts
from lsr1bench import records, runner
from lsr1bench.grid import RunSpec

ADAM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8}


def spec(optimizer: str = "adam", ranks: int = 1, **kw) -> RunSpec:
    params = {"adam": ADAM, "nag": {"lr": 0.05, "momentum": 0.9}}.get(optimizer)
    if params is None:
        from lsr1bench.registry.names import resolved_optimizer_params

        params = resolved_optimizer_params(optimizer, "mnist-embedded")
    base = dict(
        suite="d",
        run_id=f"mlp-{optimizer}-p{ranks}",
        model="mlp",
        batch_norm=False,
        dataset="mnist-embedded",
        optimizer=optimizer,
        label=optimizer,
        optimizer_params=params,
        lr_schedule=None,
        batch_size=60,
        seed=3,
        epochs=2,
        weight_decay=1e-4,
        train_subset=300,
        test_subset=200,
        ranks=ranks,
    )
    base.update(kw)
    return RunSpec(**base)


def _float64_data(run: RunSpec) -> None:
    """Put a float64 copy of the run's data in the runner's cache, so the run is float64 end to end."""
    data = runner.load_data(run, "cpu")
    data.train_x, data.test_x = data.train_x.double(), data.test_x.double()


def _train(rank: int, world: int, spec_dict: dict, output: str) -> dict:
    """One rank of a run (or the 1-rank reference): its shards, the records rank 0 wrote."""
    torch.set_default_dtype(torch.float64)
    run = RunSpec.from_dict(spec_dict)
    _float64_data(run)
    layout = layouts.DataParallel() if world > 1 else layouts.SingleProcess()
    shards: list[list[int]] = []
    original = layout.shard

    def logged(index: torch.Tensor) -> torch.Tensor:
        rows = original(index)
        shards.append(rows.tolist())
        return rows

    layout.shard = logged  # type: ignore[method-assign]
    record = runner.train(run, output, "cpu", parallel=layout)
    directory = records.run_dir(output, run.suite, run.run_id)
    return {
        "status": record.status,
        "error": record.error,
        "shards": shards,
        "rows": records.read_epochs(directory) if rank == 0 else None,
        "parallel": record.extra.get("parallel"),
    }


def _train_pair(optimizer: str, tmp_path: Path, world: int = 2) -> tuple[dict, list[dict]]:
    one = spec(optimizer, 1)
    many = replace(one, ranks=world, run_id=one.run_id.replace("-p1", f"-p{world}"))
    (reference,) = run_ranks(_train, 1, one.to_dict(), str(tmp_path / "one"))
    ranks = run_ranks(_train, world, many.to_dict(), str(tmp_path / "many"))
    assert reference["status"] == "completed", reference["error"]
    assert all(r["status"] == "completed" for r in ranks), [r["error"] for r in ranks]
    return reference, ranks


@pytest.mark.slow
def test_two_rank_adam_sees_the_one_rank_batches_and_matches_it_in_float64(tmp_path: Path) -> None:
    reference, ranks = _train_pair("adam", tmp_path)
    steps = len(reference["shards"])
    assert steps == 2 * (300 // 60)
    for step in range(steps):
        assert [len(r["shards"][step]) for r in ranks] == [30, 30]
        assert ranks[0]["shards"][step] + ranks[1]["shards"][step] == reference["shards"][step]
    one, two = reference["rows"], ranks[0]["rows"]
    assert [r["epoch"] for r in two] == [0, 1, 2]
    for a, b in zip(one, two):
        # float64: the runs differ only in how the gradient's sum over 60 rows is grouped
        for key in ("train_loss", "test_loss"):
            assert b[key] == pytest.approx(a[key], rel=1e-10, abs=0), (key, a["epoch"])
        assert b["test_error"] == a["test_error"]
        assert (b["grad_evals"], b["samples"], b["steps"]) == (a["grad_evals"], a["samples"], a["steps"])
    section = ranks[0]["parallel"]
    assert (section["world_size"], section["backend"], section["layout"]) == (2, "gloo", "replicated")
    # Adam keeps two moments per parameter plus a step counter: replicated, so equal on both ranks
    assert section["optimizer_memory_bytes"] == [reference["parallel"]["optimizer_memory_bytes"][0]] * 2
    n = section["parameters"]
    assert section["optimizer_memory_bytes"][0] >= 2 * n * 8
    assert reference["parallel"]["layout"] == "single"


@pytest.mark.slow
def test_two_rank_lbfgs_makes_the_one_rank_decisions(tmp_path: Path) -> None:
    """torch's L-BFGS line search reads the closure's loss: the runner averages it over ranks."""
    reference, ranks = _train_pair("lbfgs", tmp_path)
    one, two = reference["rows"], ranks[0]["rows"]
    for a, b in zip(one, two):
        assert b["grad_evals"] == a["grad_evals"], a["epoch"]  # same line-search path
        assert b["skipped_updates"] == a["skipped_updates"]
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-8, abs=0)
        assert b["test_loss"] == pytest.approx(a["test_loss"], rel=1e-8, abs=0)


def _evaluate(rank: int, world: int) -> dict:
    torch.set_default_dtype(torch.float64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 4))
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(101, 5, generator=generator)
    y = torch.randint(0, 4, (101,), generator=generator)
    bn = model[1]
    with torch.no_grad():  # per-rank running statistics, as CPU ranks keep them
        bn.running_mean.fill_(float(rank))
        bn.running_var.fill_(1.0 + rank)
    layout = layouts.DataParallel() if world > 1 else layouts.SingleProcess()
    loss, error = runner.evaluate(model, x, y, layout)
    return {"loss": loss, "error": error, "mean": bn.running_mean.tolist(), "var": bn.running_var.tolist()}


@pytest.mark.slow
def test_evaluation_split_over_three_ranks_equals_one_process() -> None:
    ranks = run_ranks(_evaluate, 3)  # 101 rows: shards of 33, 34, 34
    # averaged running statistics: mean of 0, 1, 2 and of 1, 2, 3
    for r in ranks:
        assert r["mean"] == pytest.approx([1.0] * 7, abs=1e-15)
        assert r["var"] == pytest.approx([2.0] * 7, abs=1e-15)
    # the one-process evaluation of the same model with those statistics
    torch.set_default_dtype(torch.float64)
    try:
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.BatchNorm1d(7), torch.nn.Linear(7, 4))
        generator = torch.Generator().manual_seed(1)
        x = torch.randn(101, 5, generator=generator)
        y = torch.randint(0, 4, (101,), generator=generator)
        with torch.no_grad():
            model[1].running_mean.fill_(1.0)
            model[1].running_var.fill_(2.0)
        model.eval()
        with torch.no_grad():
            logits = model(x)
        expected_loss = float(torch.nn.functional.cross_entropy(logits, y))
        expected_error = 100.0 * float((logits.argmax(1) != y).sum()) / 101
    finally:
        torch.set_default_dtype(torch.float32)
    for r in ranks:
        assert r["loss"] == pytest.approx(expected_loss, rel=1e-12)
        assert r["error"] == expected_error


def test_rows_split_a_batch_into_balanced_contiguous_parts() -> None:
    for count, world in ((60, 2), (101, 3), (7, 4)):
        parts = [layouts.rows(count, r, world) for r in range(world)]
        assert parts[0][0] == 0 and parts[-1][1] == count
        assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
        sizes = [hi - lo for lo, hi in parts]
        assert max(sizes) - min(sizes) <= 1, (count, world, sizes)


def test_a_run_refuses_a_layout_of_another_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="has ranks 2 but is trained by 1 process"):
        runner.train(spec("adam", 2), tmp_path, "cpu")
    assert not (tmp_path / "d").exists()


@pytest.mark.slow
def test_cpu_batch_norm_run_keeps_per_rank_statistics_and_records_it(tmp_path: Path) -> None:
    run = spec("adam", 2, batch_norm=True, epochs=1, run_id="mlp-bn-adam-p2")
    ranks = run_ranks(_train, 2, run.to_dict(), str(tmp_path))
    assert [r["status"] for r in ranks] == ["completed", "completed"], [r["error"] for r in ranks]
    section = ranks[0]["parallel"]
    assert section["batch_norm"].startswith("per-rank batch statistics (SyncBatchNorm needs CUDA)")
    on_disk = records.read_run(records.run_dir(tmp_path, run.suite, run.run_id)).extra["parallel"]
    assert on_disk["batch_norm"] == section["batch_norm"]
    rows = ranks[0]["rows"]
    assert rows[-1]["test_loss"] < rows[0]["test_loss"]  # it trains
