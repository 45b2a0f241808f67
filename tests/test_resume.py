"""Checkpoints and exact resume: a run stopped and resumed equals one never stopped.

The reference is an uninterrupted run of the same spec in another folder; on CPU every
record (all but the two wall-clock columns) and every final parameter must be equal bit
for bit, whichever optimizer, with or without batch norm, stopped at an epoch boundary
or in the middle of an epoch, once or twice.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lsr1bench import records, runner, scheduler
from lsr1bench.execute import checkpoint
from lsr1bench.execute.interrupt import STOP_AFTER_STEPS_ENV, Stopped, StopRequest
from lsr1bench.grid import RunSpec

TIMING = ("train_seconds", "total_seconds")
STEPS_PER_EPOCH = 6  # 300 examples, batches of 50

PARAMS = {
    "adam": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8},
    "lsr1": {},
    "lbfgs": {"forget_every": 4},  # a forgetting inside the second epoch: its counter must carry over
}


def spec_for(optimizer: str, batch_norm: bool, **kw) -> RunSpec:
    base = dict(
        suite="t",
        run_id=f"mlp{'-bn' if batch_norm else ''}-mnist-embedded-{optimizer}-b50-s0",
        model="mlp",
        batch_norm=batch_norm,
        dataset="mnist-embedded",
        optimizer=optimizer,
        label=optimizer,
        optimizer_params=PARAMS[optimizer],
        lr_schedule=None if optimizer == "lsr1" else {"milestones": [2], "gamma": 0.5},
        batch_size=50,
        seed=3,
        epochs=3,
        weight_decay=1e-4,
        train_subset=300,
        test_subset=100,
        keep_checkpoints=True,  # the final checkpoint holds the final parameters to compare
    )
    base.update(kw)
    return RunSpec(**base)


def without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMING} for row in rows]


def final_state(folder: Path, spec: RunSpec) -> dict:
    return torch.load(checkpoint.path(records.run_dir(folder, spec.suite, spec.run_id)), weights_only=True)


def stopped_run(spec: RunSpec, folder: Path, steps: int, monkeypatch) -> records.RunRecord:
    """Train until the stop request after ``steps`` steps of this attempt; the record left."""
    monkeypatch.setenv(STOP_AFTER_STEPS_ENV, str(steps))
    with pytest.raises(Stopped):
        runner.train(spec, folder, "cpu", stop=StopRequest())
    monkeypatch.delenv(STOP_AFTER_STEPS_ENV)
    return records.read_run(records.run_dir(folder, spec.suite, spec.run_id))


def assert_same_run(spec: RunSpec, resumed: Path, reference: Path) -> None:
    got_dir, want_dir = (records.run_dir(f, spec.suite, spec.run_id) for f in (resumed, reference))
    got, want = records.read_epochs(got_dir), records.read_epochs(want_dir)
    assert len(got) == spec.epochs + 1
    assert without_timing(got) == without_timing(want)
    got_state, want_state = final_state(resumed, spec), final_state(reference, spec)
    assert got_state["model"].keys() == want_state["model"].keys()
    for name, value in want_state["model"].items():
        torch.testing.assert_close(got_state["model"][name], value, rtol=0, atol=0, msg=name)
    got_record, want_record = records.read_run(got_dir), records.read_run(want_dir)
    assert got_record.status == want_record.status == "completed"
    assert got_record.targets_reached == want_record.targets_reached


# Every optimizer x batch norm x where it stops; three of the twelve are fast enough for
# every test run (about 1.5 s each), the rest are marked slow.
FAST = {("lsr1", True, "mid-epoch"), ("adam", False, "epoch-boundary"), ("lbfgs", True, "mid-epoch")}
STOPS = {"epoch-boundary": (STEPS_PER_EPOCH, (0, STEPS_PER_EPOCH)), "mid-epoch": (STEPS_PER_EPOCH + 2, (1, 2))}
CASES = [
    pytest.param(
        optimizer, batch_norm, *STOPS[where],
        id=f"{where}-{optimizer}-{'bn' if batch_norm else 'plain'}",
        marks=() if (optimizer, batch_norm, where) in FAST else pytest.mark.slow,
    )
    for where in STOPS
    for optimizer in ("lsr1", "adam", "lbfgs")
    for batch_norm in (False, True)
]  # fmt: skip


@pytest.mark.parametrize(("optimizer", "batch_norm", "stop_after", "resumed_at"), CASES)
def test_a_stopped_run_resumes_to_the_uninterrupted_records_and_parameters(
    tmp_path: Path, monkeypatch, optimizer: str, batch_norm: bool, stop_after: int, resumed_at: tuple[int, int]
) -> None:
    spec = spec_for(optimizer, batch_norm)
    reference = runner.train(spec, tmp_path / "reference", "cpu", stop=StopRequest())
    assert reference.status == "completed", reference.error

    left = stopped_run(spec, tmp_path / "resumed", stop_after, monkeypatch)
    assert left.status == "interrupted" and "resumes from its checkpoint" in (left.error or "")
    assert (left.extra["checkpoint"]["epoch"], left.extra["checkpoint"]["step"]) == resumed_at
    plan = scheduler.plan([spec], tmp_path / "resumed")[0]
    step = f" step {resumed_at[1]}" if resumed_at[1] else ""
    assert (plan.action, plan.reason) == ("rerun", f"was interrupted; resumes after epoch {resumed_at[0]}{step}")

    record = runner.train(spec, tmp_path / "resumed", "cpu", stop=StopRequest())
    assert record.status == "completed", record.error
    assert [(r["epoch"], r["step"]) for r in record.extra["resumes"]] == [resumed_at]
    assert_same_run(spec, tmp_path / "resumed", tmp_path / "reference")


def test_two_stops_and_a_hard_kill_resume_to_the_same_run(tmp_path: Path, monkeypatch) -> None:
    """Stopped twice in mid-epoch, then killed (no checkpoint at the kill: the last one
    is the end of epoch 2's), an L-SR1 run with batch norm still ends as the reference."""
    spec = spec_for("lsr1", True, epochs=4)
    runner.train(spec, tmp_path / "reference", "cpu", stop=StopRequest())
    stopped_run(spec, tmp_path / "resumed", 3, monkeypatch)  # epoch 1, step 3
    stopped_run(spec, tmp_path / "resumed", 5, monkeypatch)  # epoch 2, step 2

    def kill_in_epoch_3(event: dict) -> None:
        if event["type"] == "epoch" and event["epoch"] == 3:
            raise KeyboardInterrupt  # as a second signal: no checkpoint at this point

    with pytest.raises(KeyboardInterrupt):
        runner.train(spec, tmp_path / "resumed", "cpu", kill_in_epoch_3, stop=StopRequest())
    record = runner.train(spec, tmp_path / "resumed", "cpu", stop=StopRequest())
    assert [(r["epoch"], r["step"]) for r in record.extra["resumes"]] == [(0, 3), (1, 2), (2, 0)]
    assert_same_run(spec, tmp_path / "resumed", tmp_path / "reference")


def test_a_completed_run_deletes_its_checkpoint_unless_told_to_keep_it(tmp_path: Path) -> None:
    spec = spec_for("adam", False, keep_checkpoints=False, epochs=2)
    record = runner.train(spec, tmp_path, "cpu", stop=StopRequest())
    folder = records.run_dir(tmp_path, spec.suite, spec.run_id)
    assert record.status == "completed" and not checkpoint.path(folder).exists()
    assert "checkpoint" not in json.loads((folder / records.RUN_FILE).read_text())
    kept = replace(spec, keep_checkpoints=True, run_id="kept")
    runner.train(kept, tmp_path, "cpu", stop=StopRequest())
    assert final_state(tmp_path, kept)["epoch"] == 2


def test_checkpoint_every_zero_writes_none_but_a_stop_still_does(tmp_path: Path, monkeypatch) -> None:
    spec = spec_for("adam", False, checkpoint_every=0, keep_checkpoints=False)
    seen: list[bool] = []
    folder = records.run_dir(tmp_path, spec.suite, spec.run_id)

    def look(event: dict) -> None:
        if event["type"] == "epoch":
            seen.append(checkpoint.path(folder).exists())

    left = stopped_run(replace(spec), tmp_path, STEPS_PER_EPOCH + 1, monkeypatch)
    assert left.status == "interrupted" and checkpoint.path(folder).exists()
    checkpoint.remove(folder)
    record = runner.train(spec, tmp_path, "cpu", look, stop=StopRequest())
    assert record.status == "completed" and seen == [False] * (spec.epochs + 1)


def test_a_checkpoint_of_another_spec_is_not_resumed(tmp_path: Path, monkeypatch) -> None:
    spec = spec_for("adam", False)
    stopped_run(spec, tmp_path, STEPS_PER_EPOCH + 1, monkeypatch)
    changed = replace(spec, seed=4)  # same folder, different results
    record = runner.train(changed, tmp_path, "cpu", stop=StopRequest())
    assert record.status == "completed" and "resumes" not in record.extra
    assert "different spec" in record.extra["checkpoint_problems"][0]


def test_force_starts_an_interrupted_run_afresh(tmp_path: Path, monkeypatch) -> None:
    spec = spec_for("adam", False, keep_checkpoints=False)
    stopped_run(spec, tmp_path, STEPS_PER_EPOCH + 1, monkeypatch)
    forced = scheduler.plan([spec], tmp_path, force=True)
    assert [(p.action, p.fresh) for p in forced] == [("rerun", True)]
    outcome = scheduler.run_suite(forced, tmp_path, ["cpu"])
    record = records.read_run(records.run_dir(tmp_path, spec.suite, spec.run_id))
    assert outcome.statuses == {spec.run_id: "completed"} and "resumes" not in record.extra


def _rank(rank: int, world: int, spec_dict: dict, output: str, stop_after: int | None) -> str:
    """One rank of a 2-rank run: train (stopping after ``stop_after`` steps if given)."""
    import os

    from lsr1bench import parallel as layouts

    if stop_after is not None:
        os.environ[STOP_AFTER_STEPS_ENV] = str(stop_after)
    try:
        record = runner.train(RunSpec.from_dict(spec_dict), output, "cpu", parallel=layouts.DataParallel(),
                              stop=StopRequest())  # fmt: skip
    except Stopped:
        return "stopped"
    return record.status


@pytest.mark.slow  # three launches of two spawned ranks: 15-40 s on two shared cores
@pytest.mark.parametrize(
    ("optimizer", "params"),
    [("lsr1", {"shard_memory": True}), ("adam", PARAMS["adam"])],
    ids=["lsr1-sharded", "adam"],
)
def test_a_two_rank_run_stopped_mid_epoch_resumes_to_the_uninterrupted_run(
    tmp_path: Path, optimizer: str, params: dict
) -> None:
    from _spawn import run_ranks

    spec = spec_for(optimizer, True, ranks=2, optimizer_params=params, lr_schedule=None)
    reference, resumed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    assert run_ranks(_rank, 2, spec.to_dict(), reference, None) == ["completed"] * 2
    assert run_ranks(_rank, 2, spec.to_dict(), resumed, STEPS_PER_EPOCH + 2) == ["stopped"] * 2
    left = records.read_run(records.run_dir(resumed, spec.suite, spec.run_id))
    assert left.status == "interrupted" and left.extra["checkpoint"]["step"] == 2
    assert run_ranks(_rank, 2, spec.to_dict(), resumed, None) == ["completed"] * 2
    record = records.read_run(records.run_dir(resumed, spec.suite, spec.run_id))
    assert [(r["epoch"], r["step"]) for r in record.extra["resumes"]] == [(1, 2)]
    assert_same_run(spec, tmp_path / "resumed", tmp_path / "reference")


def test_checkpoint_keys_at_suite_and_grid_level_and_bad_values_name_the_key() -> None:
    from lsr1bench.grid import expand
    from lsr1bench.spec import SpecError, parse_suite

    text = (
        "epochs: 2\ncheckpoint_every: 3\nkeep_checkpoints: true\n"
        "grids:\n  - {models: [mlp], datasets: [mnist-embedded], batch_sizes: [50], optimizers: [adam]}\n"
        "  - {models: [mlp], datasets: [mnist-embedded], batch_sizes: [60], optimizers: [adam], checkpoint_every: 0}\n"
    )
    first, second = expand(parse_suite(text, default_name="k"))
    assert (first.checkpoint_every, first.keep_checkpoints) == (3, True)
    assert (second.checkpoint_every, second.keep_checkpoints) == (0, True)
    plain = expand(parse_suite(text.replace("checkpoint_every: 3\nkeep_checkpoints: true\n", ""), default_name="k"))
    assert (plain[0].checkpoint_every, plain[0].keep_checkpoints) == (1, False)
    # how a run survives is not what it computes: a finished run stays finished
    assert first.comparable() == plain[0].comparable()
    assert "checkpoint_every" not in plain[0].to_dict() and first.to_dict()["checkpoint_every"] == 3
    assert RunSpec.from_dict(first.to_dict()) == first
    with pytest.raises(SpecError) as info:
        parse_suite(text.replace("checkpoint_every: 3", "checkpoint_every: -1"))
    assert any(p.startswith("checkpoint_every:") and "-1" in p for p in info.value.problems), info.value.problems
