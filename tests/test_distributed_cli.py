"""``lsr1bench run`` with ``ranks``: self-launched through torch.distributed.run, as a worker
of an external torchrun, failures as records, and bad inputs as exit code 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lsr1bench import records
from lsr1bench.cli import app

cli = CliRunner()

SUITE = """
name: dist
epochs: 1
train_subset: 300
test_subset: 200
devices: cpu
ranks: {ranks}
grids:
  - models: [mlp]
    datasets: [mnist-embedded]
    batch_sizes: [60]
    optimizers: [{optimizer}]
"""


def _suite(tmp_path: Path, ranks: str = "[1, 2]", optimizer: str = "adam", **replace: str) -> Path:
    text = SUITE.format(ranks=ranks, optimizer=optimizer)
    for old, new in replace.items():
        text = text.replace(old, new)
    path = tmp_path / "dist.yaml"
    path.write_text(text)
    return path


def _record(output: Path, run_id: str) -> dict:
    return json.loads((output / "dist" / run_id / records.RUN_FILE).read_text())


@pytest.mark.slow
def test_run_trains_one_and_two_ranks_and_they_agree(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_suite(tmp_path)), "--output", str(output)])
    assert result.exit_code == 0, result.output
    one = _record(output, "mlp-mnist-embedded-adam-b60-s0")
    two = _record(output, "mlp-mnist-embedded-adam-b60-p2-s0")
    assert one["status"] == two["status"] == "completed", (one["error"], two["error"])
    assert one["parallel"]["world_size"] == 1 and one["parallel"]["backend"] is None
    assert (two["parallel"]["world_size"], two["parallel"]["backend"]) == (2, "gloo")
    assert two["parallel"]["layout"] == "replicated"
    assert len(two["parallel"]["optimizer_memory_bytes"]) == 2
    cores = len(os.sched_getaffinity(0))
    assert two["parallel"]["threads_per_rank"] == max(1, cores // 2)  # the cores split between the ranks
    assert two["spec"]["ranks"] == 2 and two["spec"]["batch_size"] == 60
    rows_one = records.read_epochs(output / "dist" / one["run_id"])
    rows_two = records.read_epochs(output / "dist" / two["run_id"])
    # float32: the 2-rank gradient is the 1-rank one up to rounding
    assert rows_two[-1]["test_loss"] == pytest.approx(rows_one[-1]["test_loss"], rel=1e-4)
    assert abs(rows_two[-1]["test_error"] - rows_one[-1]["test_error"]) <= 0.5
    assert rows_two[-1]["samples"] == rows_one[-1]["samples"] == 300
    # resuming skips both
    again = cli.invoke(app, ["run", str(_suite(tmp_path)), "--output", str(output)])
    assert again.exit_code == 0 and "2 already done" in again.output, again.output


@pytest.mark.slow
def test_a_rank_that_raises_becomes_a_failed_record_naming_it(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LSR1BENCH_INJECT_FAULT", "1:raise")
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_suite(tmp_path, ranks="2")), "--output", str(output)])
    assert result.exit_code == 1, result.output
    record = _record(output, "mlp-mnist-embedded-adam-b60-p2-s0")
    assert record["status"] == "failed"
    assert record["error"].startswith("rank 1: RuntimeError: fault injected"), record["error"]
    assert "rank 1" in (output / "dist" / record["run_id"] / "traceback.txt").read_text()


@pytest.mark.slow
def test_a_hung_rank_times_out_and_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("LSR1BENCH_INJECT_FAULT", "1:hang")
    monkeypatch.setenv("LSR1BENCH_DIST_TIMEOUT", "5")
    output = tmp_path / "out"
    started = time.monotonic()
    result = cli.invoke(app, ["run", str(_suite(tmp_path, ranks="2")), "--output", str(output)])
    assert result.exit_code == 1, result.output
    assert time.monotonic() - started < 120  # the 5 s collective timeout, not the hang (3600 s)
    record = _record(output, "mlp-mnist-embedded-adam-b60-p2-s0")
    assert record["status"] == "failed"
    assert "rank 1 reported nothing (hung or stopped by torchrun)" in record["error"], record["error"]
    assert "rank 0:" in record["error"]


@pytest.mark.slow
def test_under_an_external_torchrun_each_process_is_one_rank(tmp_path: Path) -> None:
    output = tmp_path / "out"
    suite = _suite(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command += ["-m", "lsr1bench", "run", str(suite), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # only the run with ranks == WORLD_SIZE ran; the 1-rank run is left for another launch
    assert sorted(p.name for p in (output / "dist").iterdir()) == ["mlp-mnist-embedded-adam-b60-p2-s0"]
    record = _record(output, "mlp-mnist-embedded-adam-b60-p2-s0")
    assert record["status"] == "completed" and record["parallel"]["world_size"] == 2
    assert done.stdout.count("suite 'dist'") == 1  # rank 1 prints nothing


def test_batch_size_not_divisible_by_ranks_is_exit_2_naming_the_key(tmp_path: Path) -> None:
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_suite(tmp_path, ranks="[1, 7]")), "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert "ranks: 7 ranks cannot split batch size 60 (grids[0].batch_sizes)" in result.output
    assert isinstance(result.exception, SystemExit) and not output.exists()


def test_more_gpu_ranks_than_devices_is_exit_2(tmp_path: Path, monkeypatch) -> None:
    from lsr1bench import scheduler

    monkeypatch.setattr(scheduler, "resolve_devices", lambda devices, jobs: ["cuda:0", "cuda:1"])
    output = tmp_path / "out"
    suite = _suite(tmp_path, ranks="2", **{"optimizers: [adam]": "optimizers: [adam, {name: sgd, ranks: 4}]"})
    result = cli.invoke(app, ["run", str(suite), "--output", str(output), "--devices", "cuda:0,cuda:1"])
    assert result.exit_code == 2, result.output
    assert "grids[0].optimizers[1].ranks: 4 ranks need 4 GPUs (one per rank), but 2 are in use here" in result.output
    assert "ranks: 2" not in result.output and not output.exists()


def test_external_world_size_without_matching_runs_is_exit_2(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "3")
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_suite(tmp_path)), "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert "ranks: torchrun started 3 processes (WORLD_SIZE), but no run of this suite has ranks: 3" in result.output
    assert not output.exists()


def test_python_dash_m_lsr1bench_is_the_cli(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lsr1bench", "validate", str(_suite(tmp_path))], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "mlp-mnist-embedded-adam-b60-p2-s0" in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("shard_memory", [True, False])
def test_two_rank_lsr1_run_matches_the_one_rank_run(tmp_path: Path, shard_memory: bool) -> None:
    optimizer = "{name: lsr1, params: {shard_memory: " + str(shard_memory).lower() + "}}"
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(_suite(tmp_path, optimizer=optimizer)), "--output", str(output)])
    assert result.exit_code == 0, result.output
    one = _record(output, "mlp-mnist-embedded-lsr1-b60-s0")
    two = _record(output, "mlp-mnist-embedded-lsr1-b60-p2-s0")
    assert two["status"] == "completed", two["error"]
    assert two["parallel"]["layout"] == ("sharded" if shard_memory else "replicated")
    a = records.read_epochs(output / "dist" / one["run_id"])[-1]
    b = records.read_epochs(output / "dist" / two["run_id"])[-1]
    assert abs(a["accepted_steps"] - b["accepted_steps"]) <= 1
    assert abs(a["rejected_steps"] - b["rejected_steps"]) <= 1
    assert abs(a["test_error"] - b["test_error"]) <= 0.5
    memory_one = one["parallel"]["optimizer_memory_bytes"][0]
    memory_two = two["parallel"]["optimizer_memory_bytes"]
    if shard_memory:
        assert all(m < memory_one for m in memory_two), (memory_one, memory_two)
    assert two["parallel"]["optimizer_collectives"] > 0 and two["parallel"]["optimizer_bytes_communicated"] > 0


def test_failure_message_puts_the_first_report_first_and_names_silent_ranks() -> None:
    from lsr1bench.launch import failure_message

    reports = [
        {"rank": 2, "message": "ValueError: bad shard"},
        {"rank": 0, "message": "RuntimeError: Connection closed by peer"},
        {"rank": 1, "message": "RuntimeError: Connection closed by peer"},
    ]
    assert failure_message(reports, [3], 1, "") == (
        "rank 2: ValueError: bad shard; ranks 0, 1: RuntimeError: Connection closed by peer; "
        "rank 3 reported nothing (hung or stopped by torchrun)"
    )
    assert failure_message([], [0, 1], -9, "killed") == "torch.distributed.run exited with code -9: killed"


@pytest.mark.slow
def test_runs_of_a_rank_count_share_one_launch_and_a_failure_starts_a_new_one(tmp_path: Path, monkeypatch) -> None:
    """Three 2-rank runs, the second of which fails in its third step: the first and third
    complete, the failure is recorded with the ranks' message, and torchrun is started
    twice (once for all three, once more for the run after the failure), not three times."""
    from lsr1bench import launch

    monkeypatch.chdir(Path(__file__).resolve().parent.parent)  # tests.plugin_example imports from here
    launches: list[list[str]] = []
    real_launch = launch._launch

    def counted(specs, *args, **kwargs):
        launches.append([spec.run_id for spec in specs])
        return real_launch(specs, *args, **kwargs)

    monkeypatch.setattr(launch, "_launch", counted)
    suite = _suite(
        tmp_path, ranks="2",
        optimizer='{name: torch.optim.SGD, label: a, params: {lr: 0.01}}, '
        '{name: "tests.plugin_example:ExplodingSGD", label: boom, params: {lr: 0.01}}, '
        '{name: torch.optim.SGD, label: c, params: {lr: 0.02}}',
    )  # fmt: skip
    output = tmp_path / "out"
    result = cli.invoke(app, ["run", str(suite), "--output", str(output)])
    assert result.exit_code == 1, result.output
    ids = ["mlp-mnist-embedded-a-b60-p2-s0", "mlp-mnist-embedded-boom-b60-p2-s0", "mlp-mnist-embedded-c-b60-p2-s0"]
    assert launches == [ids, ids[2:]]
    assert [_record(output, run_id)["status"] for run_id in ids] == ["completed", "failed", "completed"]
    error = _record(output, ids[1])["error"]
    assert "ranks 0, 1: FloatingPointError: step 3 exploded" in error, error


@pytest.mark.slow
def test_sigterm_during_a_two_rank_run_checkpoints_both_ranks_and_the_rerun_resumes_it(tmp_path: Path) -> None:
    """The parent passes the stop to torchrun, which passes it to the ranks: both stop after the
    same step, rank 0 writes the checkpoint, exit 130; the same command resumes to the records
    of a run never stopped."""
    import signal

    suite = _suite(tmp_path, ranks="2", optimizer="lsr1")
    suite.write_text(suite.read_text().replace("epochs: 1", "epochs: 3").replace("[60]", "[10]"))

    def command(out: str) -> list[str]:
        return [sys.executable, "-m", "lsr1bench", "run", str(suite), "--output", str(tmp_path / out)]

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    reference = subprocess.run(command("reference"), capture_output=True, text=True, env=env, timeout=600)
    assert reference.returncode == 0, reference.stdout + reference.stderr
    run_id = "mlp-mnist-embedded-lsr1-b10-p2-s0"
    proc = subprocess.Popen(command("out"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    epochs = tmp_path / "out" / "dist" / run_id / records.EPOCHS_FILE
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (epochs.exists() and len(epochs.read_text().splitlines()) >= 3):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    left = _record(tmp_path / "out", run_id)
    assert left["status"] == "interrupted" and "SIGTERM" in left["error"], left["error"]
    assert (tmp_path / "out" / "dist" / run_id / "checkpoint.pt").exists()
    again = subprocess.run(command("out"), capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    record = _record(tmp_path / "out", run_id)
    assert record["status"] == "completed" and len(record["resumes"]) == 1
    timing = ("train_seconds", "total_seconds")

    def rows(folder: str) -> list[dict]:
        found = records.read_epochs(tmp_path / folder / "dist" / run_id)
        return [{k: v for k, v in row.items() if k not in timing} for row in found]

    assert rows("out") == rows("reference")
