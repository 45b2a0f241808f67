"""The first-order ablation's settings: LeNet-5's ``init`` and ``loss_reduction``.

What the suite may say and how a bad value is worded, how the settings reach the run spec,
its label and run id (never merged with the default's cells), and what ``loss_reduction:
sum`` does to a step (against gradients computed here by hand) and to the recorded losses.
"""

# ruff: noqa: E501  (suites and the messages they must produce)
from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from lsr1bench import records, runner
from lsr1bench.cli import app
from lsr1bench.grid import RunSpec, expand
from lsr1bench.registry.models import build_model
from lsr1bench.spec import SpecError, parse_suite


def suite(models: str = "[{name: lenet5, batch_norm: true}]", extra: str = "", entry: str = "nag") -> str:
    return textwrap.dedent(
        f"""
        name: abl
        {extra}
        grids:
          - models: {models}
            datasets: [mnist]
            batch_sizes: [500]
            optimizers: [{entry}]
        """
    )


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse_suite(text, source="s.yaml")
    return info.value.problems


# ---------------------------------------------------------------------------- the suite


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            suite("[{name: lenet5, init: kaiming}]"),
            "grids[0].models[0].init: unknown model init 'kaiming'; known: appendix, torch, fc-torch",
        ),
        (
            suite("[{name: lenet5, init: fc_torch}]"),
            "grids[0].models[0].init: unknown model init 'fc_torch' (did you mean 'fc-torch'?); known: appendix, torch, fc-torch",
        ),
        (
            suite("[{name: mlp, init: torch}]"),
            "grids[0].models[0].init: init is for lenet5; mlp has its own initialisation only",
        ),
        (suite(extra="loss_reduction: total"), "loss_reduction: unknown loss reduction 'total'; known: mean, sum"),
        (
            suite(entry="{name: nag, loss_reduction: Sum}"),
            "grids[0].optimizers[0].loss_reduction: unknown loss reduction 'Sum' (did you mean 'sum'?); known: mean, sum",
        ),
    ],
)
def test_a_bad_value_names_the_key_path_and_the_allowed_values(text: str, expected: str) -> None:
    assert problems(text) == [expected]


def test_cli_validate_exits_2_without_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(suite(extra="loss_reduction: avg"))
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit), result.output
    assert "loss_reduction: unknown loss reduction 'avg'; known: mean, sum" in result.output
    assert "Traceback" not in result.output


def test_defaults_leave_the_run_spec_and_its_record_as_they_were() -> None:
    (run,) = expand(parse_suite(suite()))
    assert (run.model_init, run.loss_reduction, run.label) == ("appendix", "mean", "nag")
    assert run.run_id == "lenet5-bn-mnist-nag-b500-s0"
    recorded = run.to_dict()
    assert "model_init" not in recorded and "loss_reduction" not in recorded
    assert RunSpec.from_dict(recorded) == run  # and older records read as the defaults


def test_settings_reach_the_spec_the_label_and_the_run_id() -> None:
    text = suite(
        "[{name: lenet5, batch_norm: true}, {name: lenet5, batch_norm: true, init: fc-torch}]",
        extra="loss_reduction: sum",
        entry="{name: nag, label: nag-appendix-lr, params: {lr: [0.003, 0.03]}}, {name: adam, loss_reduction: mean}",
    )
    runs = {run.run_id: run for run in expand(parse_suite(text))}
    assert sorted(runs) == [
        "lenet5-bn-mnist-adam-b500-s0",
        "lenet5-bn-mnist-adam-init_fc-torch-b500-s0",
        "lenet5-bn-mnist-nag-appendix-lr-init_fc-torch-loss_sum-lr0.003-b500-s0",
        "lenet5-bn-mnist-nag-appendix-lr-init_fc-torch-loss_sum-lr0.03-b500-s0",
        "lenet5-bn-mnist-nag-appendix-lr-loss_sum-lr0.003-b500-s0",
        "lenet5-bn-mnist-nag-appendix-lr-loss_sum-lr0.03-b500-s0",
    ]
    run = runs["lenet5-bn-mnist-nag-appendix-lr-init_fc-torch-loss_sum-lr0.03-b500-s0"]
    assert (run.model_init, run.loss_reduction) == ("fc-torch", "sum")
    assert run.sweep_of == "nag-appendix-lr-init_fc-torch-loss_sum"  # one sweep per variant
    recorded = run.to_dict()
    assert (recorded["model_init"], recorded["loss_reduction"]) == ("fc-torch", "sum")
    assert RunSpec.from_dict(recorded) == run
    assert runs["lenet5-bn-mnist-adam-b500-s0"].loss_reduction == "mean"  # the entry wins


# ---------------------------------------------------------------------------- training with sum


def spec(**kw) -> RunSpec:
    base = dict(
        suite="t",
        run_id="mlp-mnist-embedded-sgd-b40-s0",
        model="mlp",
        batch_norm=False,
        dataset="mnist-embedded",
        optimizer="sgd",
        label="sgd",
        optimizer_params={"lr": 0.01},
        lr_schedule=None,
        batch_size=40,  # the whole training subset: one step
        seed=0,
        epochs=1,
        weight_decay=1e-2,
        train_subset=40,
        test_subset=100,
    )
    base.update(kw)
    return RunSpec(**base)


def one_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: RunSpec) -> tuple[list[torch.Tensor], dict]:
    """Train ``run`` (one step); the parameters after it and the epoch-1 row."""
    models: list[torch.nn.Module] = []
    real = runner.build_model

    def build(*args, **kwargs):
        models.append(real(*args, **kwargs))
        return models[-1]

    monkeypatch.setattr(runner, "build_model", build)
    record = runner.train(run, tmp_path / run.loss_reduction, "cpu")
    assert record.status == "completed", record.error
    rows = records.read_epochs(tmp_path / run.loss_reduction / "t" / run.run_id)
    assert rows[-1]["steps"] == 1
    return [p.detach().clone() for p in models[0].parameters()], rows[-1]


def start_point(run: RunSpec) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    data = runner.load_data(run, "cpu")
    runner.seed_everything(run.seed)
    model = build_model("mlp", batch_norm=False, input_shape=data.input_shape, num_classes=data.num_classes)
    return model, data.train_x, data.train_y


def test_a_summed_sgd_step_against_gradients_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = spec(loss_reduction="sum")
    after, row = one_step(tmp_path, monkeypatch, run)
    model, x, y = start_point(run)
    params = list(model.parameters())
    l2 = sum((p**2).sum() for p in params) * run.weight_decay / 2
    summed = F.cross_entropy(model(x), y, reduction="sum") + l2
    grads = torch.autograd.grad(summed, params)
    for got, p, g in zip(after, params, grads, strict=True):
        torch.testing.assert_close(got, p.detach() - 0.01 * g, rtol=1e-5, atol=1e-6)
    # the record stays a per-example mean: mean cross-entropy + L2 at the start point
    with torch.no_grad():
        mean = float(F.cross_entropy(model(x), y) + l2)
    assert row["train_loss"] == pytest.approx(mean, rel=1e-5)
    assert mean < summed.item() / 10  # (a b = 40 times larger loss would fail the line above)


def test_sum_with_lr_a_is_mean_with_lr_a_times_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without L2 (which sum leaves as it is), the summed step is the mean's at b times the rate."""
    summed, summed_row = one_step(tmp_path, monkeypatch, spec(loss_reduction="sum", weight_decay=0.0))
    mean, mean_row = one_step(tmp_path, monkeypatch, spec(optimizer_params={"lr": 0.01 * 40}, weight_decay=0.0))
    for a, b in zip(summed, mean, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert summed_row["test_loss"] == pytest.approx(mean_row["test_loss"], rel=1e-4)
    assert summed_row["train_loss"] == pytest.approx(mean_row["train_loss"], rel=1e-6)  # same start point


def test_data_parallel_sum_is_the_global_minibatch_sum() -> None:
    """P ranks each take b / P rows and DDP averages their gradients: the average must be the
    gradient of the cross-entropy summed over all b rows."""
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    run = spec(loss_reduction="sum", weight_decay=1e-3)
    whole = torch.autograd.grad(runner.minibatch_objective(model(x), y, model, run, 1), list(model.parameters()))
    halves = [
        torch.autograd.grad(runner.minibatch_objective(model(x[s]), y[s], model, run, 2), list(model.parameters()))
        for s in (slice(0, 4), slice(4, 8))
    ]
    for g, a, b in zip(whole, *halves, strict=True):
        torch.testing.assert_close((a + b) / 2, g, rtol=1e-5, atol=1e-6)
