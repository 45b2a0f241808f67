"""Training runs on the embedded MNIST subset: records, divergence, failure, resuming."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from lsr1bench import records, runner, scheduler
from lsr1bench.grid import RunSpec, expand
from lsr1bench.spec import parse_suite


def tiny(label: str = "adam", optimizer: str = "adam", **kw) -> RunSpec:
    base = dict(
        suite="t",
        run_id=f"mlp-mnist-embedded-{label}-b50-s0",
        model="mlp",
        batch_norm=False,
        dataset="mnist-embedded",
        optimizer=optimizer,
        label=label,
        optimizer_params={"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8} if optimizer == "adam" else {"lr": 0.05},
        lr_schedule=None,
        batch_size=50,
        seed=0,
        epochs=2,
        targets=(),
        weight_decay=1e-4,
        train_subset=300,
        test_subset=200,
    )
    base.update(kw)
    return RunSpec(**base)


@pytest.mark.slow  # ~3 s on 2 idle cores, 15 s when they are busy
def test_real_lenet5_run_learns_and_records_everything(tmp_path: Path) -> None:
    suite = parse_suite(
        """
        name: real
        epochs: 2
        train_subset: 600
        test_subset: 300
        targets: {test_error: [60, 1], train_loss: [100, 0.000001]}
        grids:
          - models: [{name: lenet5, batch_norm: true}]
            datasets: [mnist-embedded]
            batch_sizes: [100]
            optimizers: [lsr1]
        """
    )
    (spec,) = expand(suite)
    events: list[dict] = []
    record = runner.train(spec, tmp_path, "cpu", events.append)
    assert record.status == "completed", record.error
    directory = tmp_path / "real" / spec.run_id
    on_disk = records.read_run(directory)
    assert on_disk.spec == spec.to_dict() and on_disk.status == "completed"
    assert on_disk.epochs_completed == 2 and on_disk.finished_at
    assert set(on_disk.versions) >= {"python", "torch", "lsr1bench"}
    assert on_disk.extra["environment"]["float32_matmul_precision"]
    rows = records.read_epochs(directory)
    first_below_60 = next(r["epoch"] for r in rows if r["epoch"] >= 1 and r["test_error"] < 60)
    first_below_100 = next(r["epoch"] for r in rows if r["epoch"] >= 1 and r["train_loss"] < 100)
    assert on_disk.targets_reached == {
        "test_error": {"60": first_below_60, "1": None},
        "train_loss": {"100": first_below_100, "1e-06": None},
    }
    # the per-epoch statistics columns: the model's spectrum and the skip test's cosines
    assert rows[0]["negative_curvature_fraction"] is None and rows[0]["update_cosine_median"] is None
    for r in rows[1:]:
        assert r["min_eigenvalue"] is not None and r["negative_eigenvalues"] >= 0
        assert 0.0 <= r["negative_curvature_fraction"] <= 1.0
        assert 0.0 <= r["update_cosine_p10"] <= r["update_cosine_median"] <= 1.0
        assert (r["min_eigenvalue"] < 0) == (r["negative_eigenvalues"] > 0)
        # would-be skip rates: non-decreasing in r, and on the right side of a half where
        # r is past the median cosine
        rates = [r[c] for c in records.SKIP_RATE_COLUMNS]
        assert all(0.0 <= a <= b <= 1.0 for a, b in zip(rates, rates[1:]))
        for threshold, rate in zip(records.SKIP_RATE_THRESHOLDS, rates):
            if r["update_cosine_median"] < threshold:
                assert rate >= 0.5
            elif r["update_cosine_median"] > threshold:
                assert rate <= 0.5
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    assert rows[2]["train_loss"] < rows[0]["train_loss"]
    assert rows[2]["test_error"] < rows[0]["test_error"] - 20
    assert [r["samples"] for r in rows] == [0, 600, 1200]
    assert [r["steps"] for r in rows] == [0, 6, 12]
    assert rows[2]["grad_evals"] == 2 * 12  # L-SR1: two closure calls per step
    assert rows[2]["accepted_steps"] + rows[2]["rejected_steps"] == 12
    assert rows[2]["radius"] is not None and rows[2]["stored_pairs"] is not None
    assert 0 < rows[1]["train_seconds"] <= rows[1]["total_seconds"]
    assert [e["type"] for e in events] == ["start", "epoch", "epoch", "epoch", "end"]


def test_same_seed_gives_same_start_for_every_optimizer(tmp_path: Path) -> None:
    a = runner.train(tiny("adam"), tmp_path, "cpu")
    b = runner.train(tiny("sgd", "sgd", epochs=1), tmp_path, "cpu")
    assert a.status == b.status == "completed"
    rows_a = records.read_epochs(tmp_path / "t" / a.run_id)
    rows_b = records.read_epochs(tmp_path / "t" / b.run_id)
    for key in ("train_loss", "test_loss", "test_error"):
        assert rows_a[0][key] == rows_b[0][key]
    # the minibatch order comes from its own generator seeded with the run's seed
    order = [list(i) for i in runner._batches(10, 4, torch.Generator().manual_seed(3), torch.device("cpu"))]
    again = [list(i) for i in runner._batches(10, 4, torch.Generator().manual_seed(3), torch.device("cpu"))]
    assert order == again and len(order) == 2 and all(len(i) == 4 for i in order)


def test_a_rerun_reproduces_the_numbers(tmp_path: Path) -> None:
    spec = tiny(epochs=1)
    runner.train(spec, tmp_path / "a", "cpu")
    runner.train(spec, tmp_path / "b", "cpu")
    for side in ("a", "b"):
        assert records.read_run(tmp_path / side / "t" / spec.run_id).status == "completed"
    first = records.read_epochs(tmp_path / "a" / "t" / spec.run_id)
    second = records.read_epochs(tmp_path / "b" / "t" / spec.run_id)
    assert len(first) == len(second) == 2
    for r1, r2 in zip(first, second, strict=True):
        assert (r1["train_loss"], r1["test_error"]) == (r2["train_loss"], r2["test_error"])


def test_divergence_is_recorded_and_the_suite_goes_on(tmp_path: Path) -> None:
    bad = tiny("sgd-huge", "sgd", optimizer_params={"lr": 1e30})
    good = tiny(epochs=1)
    todo = scheduler.plan([bad, good], tmp_path)
    outcome = scheduler.run_suite(todo, tmp_path, ["cpu"])
    assert outcome.statuses == {bad.run_id: "diverged", good.run_id: "completed"}
    record = records.read_run(tmp_path / "t" / bad.run_id)
    assert record.status == "diverged" and "loss became" in record.error
    last = records.read_epochs(tmp_path / "t" / bad.run_id)[-1]
    assert not math.isfinite(last["train_loss"])


def test_an_exception_fails_one_run_and_the_suite_goes_on(tmp_path: Path, monkeypatch) -> None:
    real_build = runner.build_model

    def build(name, **kw):
        if kw["batch_norm"]:
            raise RuntimeError("no such layer")
        return real_build(name, **kw)

    monkeypatch.setattr(runner, "build_model", build)
    broken = tiny("adam", batch_norm=True, run_id="mlp-bn-x")
    good = tiny(epochs=1)
    outcome = scheduler.run_suite(scheduler.plan([broken, good], tmp_path), tmp_path, ["cpu"])
    assert outcome.statuses == {"mlp-bn-x": "failed", good.run_id: "completed"}
    record = records.read_run(tmp_path / "t" / "mlp-bn-x")
    assert record.error == "RuntimeError: no such layer"
    assert "no such layer" in (tmp_path / "t" / "mlp-bn-x" / runner.TRACEBACK_FILE).read_text()


def test_stop_at_targets_and_lr_schedule(tmp_path: Path) -> None:
    spec = tiny("sgd", "sgd", epochs=4, targets=(95.0,), stop_at_targets=True)
    record = runner.train(spec, tmp_path, "cpu")
    assert record.status == "completed" and record.epochs_completed == 1
    assert record.targets_reached == {"test_error": {"95": 1}} and record.extra["stopped_at_targets"]
    # stop_at_targets waits for every target of every metric: a train loss no run reaches
    # keeps it going to the last epoch, though the test error target fell at epoch 1
    spec = tiny("sgd", "sgd", epochs=3, targets={"test_error": (95.0,), "train_loss": (1e-9,)}, stop_at_targets=True)
    record = runner.train(spec, tmp_path / "all", "cpu")
    assert record.epochs_completed == 3 and "stopped_at_targets" not in record.extra
    assert record.targets_reached == {"test_error": {"95": 1}, "train_loss": {"1e-09": None}}
    spec = tiny("sgd", "sgd", epochs=3, targets={"test_error": (95.0,), "train_loss": (100.0,)}, stop_at_targets=True)
    record = runner.train(spec, tmp_path / "both", "cpu")
    assert record.epochs_completed == 1 and record.extra["stopped_at_targets"]

    spec = tiny("momentum", "momentum", optimizer_params={"lr": 0.1, "momentum": 0.9},
                lr_schedule={"milestones": [1, 2], "gamma": 0.1}, epochs=3)  # fmt: skip
    runner.train(spec, tmp_path, "cpu")
    lrs = [r["lr"] for r in records.read_epochs(tmp_path / "t" / spec.run_id)]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.001])


def _interrupt_second_run(after_epoch: int = 1):
    """An event sink that presses Ctrl-C during the second run."""
    started: list[str] = []

    def sink(event: dict) -> None:
        if event["type"] == "start":
            started.append(event["run_id"])
        if event["type"] == "epoch" and len(started) == 2 and event["epoch"] == after_epoch:
            raise KeyboardInterrupt

    return sink


def test_interrupted_suite_resumes_skipping_finished_runs(tmp_path: Path) -> None:
    specs = [tiny(f"r{i}", epochs=2, run_id=f"run-{i}") for i in range(3)]
    outcome = scheduler.run_suite(scheduler.plan(specs, tmp_path), tmp_path, ["cpu"], _interrupt_second_run())
    assert outcome.interrupted
    assert outcome.statuses == {"run-0": "completed", "run-1": "interrupted"}
    assert records.read_run(tmp_path / "t" / "run-1").status == "interrupted"
    assert not (tmp_path / "t" / "run-2").exists()
    first_record = (tmp_path / "t" / "run-0" / "run.json").read_text()

    todo = scheduler.plan(specs, tmp_path)
    assert [(p.action, p.reason) for p in todo] == [("skip", "completed"), ("rerun", "was interrupted"), ("run", "")]
    outcome = scheduler.run_suite([p for p in todo if p.action != "skip"], tmp_path, ["cpu"])
    assert outcome.statuses == {"run-1": "completed", "run-2": "completed"} and not outcome.interrupted
    assert (tmp_path / "t" / "run-0" / "run.json").read_text() == first_record  # untouched
    assert len(records.read_epochs(tmp_path / "t" / "run-1")) == 3


def test_plan_reruns_killed_changed_and_forced_runs(tmp_path: Path) -> None:
    done, killed = tiny("a", run_id="done"), tiny("b", run_id="killed")
    for spec, status in ((done, "completed"), (killed, "running")):
        records.write_run(
            tmp_path / "t" / spec.run_id,
            records.RunRecord(suite="t", run_id=spec.run_id, spec=spec.to_dict(), status=status),
        )
    plan = {p.spec.run_id: (p.action, p.reason) for p in scheduler.plan([done, killed], tmp_path)}
    assert plan == {"done": ("skip", "completed"), "killed": ("rerun", "was running")}
    forced = scheduler.plan([done], tmp_path, force=True)[0]
    assert forced.action == "rerun" and "--force" in forced.reason
    changed = scheduler.plan([replace(done, epochs=5)], tmp_path)[0]
    assert changed.action == "rerun" and "changed" in changed.reason
    moved = scheduler.plan([replace(done, data_root="/elsewhere")], tmp_path)[0]
    assert moved.action == "skip"  # where the files live does not change the results


def test_cli_run_interrupt_then_resume(tmp_path: Path, monkeypatch) -> None:
    from typer.testing import CliRunner

    from lsr1bench.cli import app

    suite = tmp_path / "tiny.yaml"
    suite.write_text(
        "epochs: 1\ntrain_subset: 200\ntest_subset: 100\n"
        "grids: [{models: [mlp], datasets: [mnist-embedded], batch_sizes: [50], optimizers: [adam, sgd, nag]}]\n"
    )
    out = tmp_path / "out"
    real_train = runner.train
    calls: list[str] = []

    def train(spec, output, device, on_event=None):
        calls.append(spec.run_id)
        if len(calls) == 2:
            return real_train(spec, output, device, _raise_on_epoch(on_event))
        return real_train(spec, output, device, on_event)

    monkeypatch.setattr(runner, "train", train)
    cli = CliRunner()
    result = cli.invoke(app, ["run", str(suite), "--output", str(out), "--devices", "cpu"])
    assert result.exit_code == 130, result.output
    assert "Resume with" in result.output and "--devices cpu" in result.output
    statuses = {r.run_id: r.status for _, r in records.iter_runs(out / "tiny")}
    assert statuses == {"mlp-mnist-embedded-adam-b50-s0": "completed", "mlp-mnist-embedded-sgd-b50-s0": "interrupted"}

    monkeypatch.setattr(runner, "train", real_train)
    result = cli.invoke(app, ["run", str(suite), "--output", str(out), "--devices", "cpu"])
    assert result.exit_code == 0, result.output
    assert "1 already done, 2 to run" in result.output
    statuses = {r.run_id: r.status for _, r in records.iter_runs(out / "tiny")}
    assert set(statuses.values()) == {"completed"} and len(statuses) == 3

    result = cli.invoke(app, ["run", str(suite), "--output", str(out), "--dry-run", "--force"])
    assert result.exit_code == 0 and "3 to run" in result.output


def _raise_on_epoch(on_event):
    def sink(event: dict) -> None:
        if on_event:
            on_event(event)
        if event["type"] == "epoch" and event["epoch"] == 1:
            raise KeyboardInterrupt

    return sink


@pytest.mark.slow  # two spawned workers import torch: 6-13 s
def test_cpu_workers_run_in_parallel_processes(tmp_path: Path) -> None:
    specs = [tiny(f"w{i}", epochs=1, run_id=f"w-{i}") for i in range(3)]
    events: list[dict] = []
    outcome = scheduler.run_suite(scheduler.plan(specs, tmp_path), tmp_path, ["cpu", "cpu"], events.append)
    assert outcome.statuses == {f"w-{i}": "completed" for i in range(3)}
    assert sum(e["type"] == "epoch" for e in events) == 6
    for i in range(3):
        assert records.read_run(tmp_path / "t" / f"w-{i}").status == "completed"


def test_resolve_devices() -> None:
    assert scheduler.resolve_devices("cpu") == ["cpu"]
    assert scheduler.resolve_devices("cpu", 3) == ["cpu"] * 3
    if not torch.cuda.is_available():
        assert scheduler.resolve_devices("auto") == ["cpu"]
        with pytest.raises(scheduler.DeviceError):
            scheduler.resolve_devices("cuda:0")
    with pytest.raises(scheduler.DeviceError):
        scheduler.resolve_devices("tpu:0")


def test_a_broken_display_does_not_fail_the_run(tmp_path: Path) -> None:
    def sink(event: dict) -> None:
        raise ValueError("display bug")

    assert runner.train(tiny(epochs=1), tmp_path, "cpu", sink).status == "completed"


def test_running_stats_guard_keeps_batch_norm_statistics_to_the_accepted_point():
    """Trial points evaluated by a second-order step must not move the running statistics;
    the result equals one train-mode forward pass at the final parameters."""
    import copy

    import torch

    from lsr1bench.registry.models import build_model
    from lsr1bench.runner import RunningStatsGuard

    torch.manual_seed(0)
    model = build_model("mlp", batch_norm=True, input_shape=(1, 4, 4), num_classes=3)
    reference = copy.deepcopy(model)
    x = torch.randn(32, 1, 4, 4)
    guard = RunningStatsGuard(model)
    params = list(model.parameters())
    start = [p.detach().clone() for p in params]

    def closure():
        out = model(x).sum()
        out.backward()
        return out

    guarded = guard.protect(closure)
    with torch.no_grad():  # a wild trial point, as a line search may try
        for p in params:
            p.mul_(100.0)
    guarded()
    with torch.no_grad():  # back to (slightly moved) accepted parameters
        for p, p0 in zip(params, start):
            p.copy_(p0 + 0.01)
    guarded()
    guard.update(x)

    with torch.no_grad():
        for p, p0 in zip(reference.parameters(), start):
            p.copy_(p0 + 0.01)
        reference(x)
    for got, want in zip(model.buffers(), reference.buffers()):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("status", "action", "reason"),
    [
        ("completed", "skip", "completed"),
        ("diverged", "skip", "diverged"),  # rerunning a diverged run diverges again
        ("failed", "rerun", "was failed"),
        ("interrupted", "rerun", "was interrupted"),
        ("running", "rerun", "was running"),
    ],
)
def test_plan_for_every_recorded_status(tmp_path: Path, status: str, action: str, reason: str) -> None:
    assert set(records.STATUSES) == {"completed", "diverged", "failed", "interrupted", "running"}
    spec = tiny()
    records.write_run(tmp_path / "t" / spec.run_id,
                      records.RunRecord(suite="t", run_id=spec.run_id, spec=spec.to_dict(), status=status))  # fmt: skip
    (planned,) = scheduler.plan([spec], tmp_path)
    assert (planned.action, planned.reason) == (action, reason)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{not json", "unreadable record"),
        ('["a list"]', "unreadable record"),
        ('{"schema_version": 99, "suite": "t", "run_id": "x", "spec": {}, "status": "completed"}', "schema_version 99"),
        ('{"schema_version": 2, "suite": "t", "run_id": "x", "spec": {}, "status": "done"}', "unknown status"),
    ],
)
def test_plan_reruns_unreadable_records(tmp_path: Path, text: str, reason: str) -> None:
    spec = tiny()
    directory = tmp_path / "t" / spec.run_id
    directory.mkdir(parents=True)
    (directory / records.RUN_FILE).write_text(text)
    (planned,) = scheduler.plan([spec], tmp_path)
    assert planned.action == "rerun" and planned.reason.startswith("unreadable record") and reason in planned.reason


def test_plan_reruns_a_finished_run_whose_recorded_spec_no_longer_parses(tmp_path: Path) -> None:
    spec = tiny()
    outdated = {**spec.to_dict(), "optimiser": "adam"}  # a key this version does not know
    del outdated["optimizer"]
    records.write_run(tmp_path / "t" / spec.run_id,
                      records.RunRecord(suite="t", run_id=spec.run_id, spec=outdated, status="completed"))  # fmt: skip
    (planned,) = scheduler.plan([spec], tmp_path)
    assert (planned.action, planned.reason) == ("rerun", "the suite changed since this run")


def _capture(monkeypatch) -> tuple[list, list]:
    """Keep the run's model, and its parameters after every optimizer step."""
    models: list[torch.nn.Module] = []
    after_steps: list[list[torch.Tensor]] = []
    real_build_model, real_build_optimizer = runner.build_model, runner.build_optimizer

    def build_model(*args, **kwargs):
        models.append(real_build_model(*args, **kwargs))
        return models[-1]

    def build_optimizer(*args, **kwargs):
        optimizer = real_build_optimizer(*args, **kwargs)
        real_step = optimizer.step

        def step(closure):
            loss = real_step(closure)
            after_steps.append([p.detach().clone() for p in models[-1].parameters()])
            return loss

        optimizer.step = step
        return optimizer

    monkeypatch.setattr(runner, "build_model", build_model)
    monkeypatch.setattr(runner, "build_optimizer", build_optimizer)
    return models, after_steps


@pytest.mark.parametrize("method", ["lsr1", "lbfgs"])
def test_batch_norm_statistics_are_one_forward_per_accepted_step(tmp_path: Path, monkeypatch, method: str) -> None:
    """The runner's second-order steps evaluate trial points; the running statistics must equal
    a replay of one train-mode forward per step, at the parameters each step ended on."""
    models, after_steps = _capture(monkeypatch)
    spec = tiny(method, method, optimizer_params={}, batch_norm=True, epochs=1, train_subset=200, batch_size=50)
    record = runner.train(spec, tmp_path, "cpu")
    assert record.status == "completed", record.error
    assert len(after_steps) == 4
    rows = records.read_epochs(tmp_path / "t" / spec.run_id)
    assert rows[-1]["grad_evals"] > rows[-1]["steps"]  # trial points were evaluated

    data = runner.load_data(spec, "cpu")
    runner.seed_everything(spec.seed)
    from lsr1bench.registry.models import build_model

    replica = build_model("mlp", batch_norm=True, input_shape=data.input_shape, num_classes=data.num_classes)
    replica.train()
    order = torch.Generator().manual_seed(spec.seed)
    with torch.no_grad():
        for index, params in zip(runner._batches(len(data.train_y), 50, order, torch.device("cpu")), after_steps,
                                 strict=True):  # fmt: skip
            for p, value in zip(replica.parameters(), params):
                p.copy_(value)
            replica(data.train_x[index])
    got = dict(models[0].named_buffers())
    want = dict(replica.named_buffers())
    assert got.keys() == want.keys() and any(k.endswith("num_batches_tracked") for k in got)
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=0, msg=name)
        if name.endswith("num_batches_tracked"):
            assert int(got[name]) == 4


def test_epoch_0_is_the_train_objective_at_the_start_and_leaves_batch_norm_as_it_was(tmp_path: Path) -> None:
    from lsr1bench.registry.models import build_model, l2_penalty

    data = runner.load_data(tiny(train_subset=230), "cpu")
    runner.seed_everything(0)
    model = build_model("mlp", batch_norm=True, input_shape=data.input_shape, num_classes=data.num_classes)
    model.train()
    before = {k: v.clone() for k, v in model.named_buffers()}
    value = runner._initial_objective(model, data, 50, 1e-4)
    for name, buffer in model.named_buffers():
        torch.testing.assert_close(buffer, before[name], rtol=0, atol=0, msg=name)
    # by hand: batches 0-50, ..., 150-230 (the remainder joins the last), batch statistics
    reference = build_model("mlp", batch_norm=True, input_shape=data.input_shape, num_classes=data.num_classes)
    reference.load_state_dict(model.state_dict())
    reference.train()
    total = 0.0
    with torch.no_grad():
        for lo, hi in ((0, 50), (50, 100), (100, 150), (150, 230)):
            logits = reference(data.train_x[lo:hi])
            total += torch.nn.functional.cross_entropy(logits, data.train_y[lo:hi], reduction="sum").item()
        expected = total / 230 + l2_penalty(reference, 1e-4).item()
    assert value == pytest.approx(expected, rel=1e-6)
    # and the runner records exactly that value as epoch 0's train loss
    record = runner.train(tiny(epochs=1, train_subset=230, batch_norm=True), tmp_path, "cpu")
    assert record.status == "completed"
    assert records.read_epochs(tmp_path / "t" / record.run_id)[0]["train_loss"] == pytest.approx(value, rel=1e-6)


@pytest.mark.slow  # resnet20 on CPU: a few seconds
@pytest.mark.parametrize(("model", "optimizer"), [("cifar_lenet", "lsr1"), ("resnet20", "adam")])
def test_one_epoch_on_synthetic_cifar10(tmp_path: Path, model: str, optimizer: str) -> None:
    params = {} if optimizer == "lsr1" else {"lr": 1e-3}
    spec = tiny(optimizer, optimizer, model=model, batch_norm=True, dataset="synthetic-cifar10", epochs=1,
                train_subset=200, test_subset=100, batch_size=100, optimizer_params=params,
                run_id=f"{model}-bn-synthetic-cifar10-{optimizer}")  # fmt: skip
    record = runner.train(spec, tmp_path, "cpu")
    assert record.status == "completed", record.error
    assert record.extra["data"]["train_examples"] == 200 and record.extra["data"]["steps_per_epoch"] == 2
    rows = records.read_epochs(tmp_path / "t" / spec.run_id)
    assert [r["epoch"] for r in rows] == [0, 1] and rows[1]["samples"] == 200 and rows[1]["steps"] == 2
    for r in rows:
        assert math.isfinite(r["train_loss"]) and math.isfinite(r["test_loss"]) and 0 <= r["test_error"] <= 100
