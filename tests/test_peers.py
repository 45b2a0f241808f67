"""The second-order peers, each driven by the step protocol its table entry declares.

One test per protocol (``registry/table.py`` PROTOCOLS): ``closure-backward`` (a closure
called with ``backward=False`` evaluates the loss without touching ``.grad``, for any
optimizer that declares it, and for torchzero's L-SR1), ``create-graph`` (AdaHessian gets
a graph to differentiate; its Hessian-vector products are counted), ``step`` (SOAP and
Shampoo: one closure call, then ``step()``). Tests that need the optional extra skip,
saying so, where it is not installed; a missing package fails ``validate``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lsr1bench import records
from lsr1bench.cli import app
from lsr1bench.grid import expand
from lsr1bench.registry.names import resolved_optimizer_params
from lsr1bench.registry.optimizers import build_optimizer
from lsr1bench.registry.table import OPTIMIZER_TABLE, PEERS_INSTALL, missing_package
from lsr1bench.spec import SpecError, load_suite

REPO = Path(__file__).resolve().parent.parent
cli = CliRunner()

PEERS = [name for name, info in OPTIMIZER_TABLE.items() if info.requires]
needs_torchzero = pytest.mark.skipif(
    missing_package("tz-lsr1-tr") is not None, reason=f"torchzero not installed ({PEERS_INSTALL})"
)
needs_pytorch_optimizer = pytest.mark.skipif(
    missing_package("soap") is not None, reason=f"pytorch-optimizer not installed ({PEERS_INSTALL})"
)


@pytest.fixture(autouse=True)
def _repo_cwd(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)  # plugin paths resolve from the current directory


def run_suite(tmp_path: Path, optimizers: str, batch: int = 1000) -> list[tuple[str, list[dict]]]:
    """``lsr1bench run`` of one epoch of an MLP on embedded MNIST; (run id, epochs rows) per run."""
    suite = tmp_path / "protocol.yaml"
    suite.write_text(
        f"name: protocol\nepochs: 1\nbatch_sizes: [{batch}]\ndevices: cpu\n"
        f"grids:\n  - models: [mlp]\n    datasets: [mnist-embedded]\n    optimizers: {optimizers}\n"
    )
    result = cli.invoke(app, ["run", str(suite), "--output", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    return [(path.name, records.read_epochs(path)) for path, _ in records.iter_runs(tmp_path / "out" / "protocol")]


def tiny(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(40, 6, generator=gen)
    y = (x @ torch.randn(6, 3, generator=gen)).argmax(1)
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3)), x, y


def loop_closure(model, x, y, opt, calls: list):
    """The training loop's closure protocol (runner.py), with every call recorded."""

    def closure(backward: bool = True):
        calls.append(backward)
        if not backward:
            with torch.no_grad():
                return torch.nn.functional.cross_entropy(model(x), y)
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward(create_graph=opt.create_graph)
        return loss

    return closure


# ----------------------------------------------------------------------------- closure-backward


def test_closure_backward_false_evaluates_the_loss_without_touching_grad(tmp_path: Path) -> None:
    """Any optimizer declaring the protocol (here a plugin, by its class attribute) gets the
    loop's closure with ``backward``; False returns the same loss and leaves ``.grad``."""
    from tests import peer_protocols

    peer_protocols.SEEN["backward"].clear()
    [(_, rows)] = run_suite(tmp_path, '[{name: "tests.peer_protocols:BackwardSpy", label: spy}]')
    seen = peer_protocols.SEEN["backward"]
    assert len(seen) == rows[-1]["steps"] == 5  # 5,000 embedded training images at batch 1,000
    for loss, loss_only, same_grads, tracked in seen:
        assert loss_only == pytest.approx(loss, rel=1e-6)  # the same point, the same minibatch
        assert same_grads and not tracked  # .grad untouched, no graph built
    last = rows[-1]
    assert (last["grad_evals"], last["loss_evals"], last["hvp_evals"]) == (5, 5, 0)


@needs_torchzero
def test_torchzero_lsr1_calls_the_closure_without_backward_and_each_call_is_counted() -> None:
    for name in ("tz-lsr1-tr", "tz-lsr1-ls"):
        model, x, y = tiny()
        opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "mnist"))
        assert opt.protocol == "closure-backward" and opt.second_order
        calls: list[bool] = []
        start = torch.nn.functional.cross_entropy(model(x), y).item()
        for _ in range(6):
            opt.step(loop_closure(model, x, y, opt, calls))
        assert torch.nn.functional.cross_entropy(model(x), y).item() < start
        assert opt.closure_evaluations == calls.count(True)
        assert opt.loss_evaluations == calls.count(False)
    # the trust region evaluates the trial point's loss only: one backward=False per step
    model, x, y = tiny()
    opt = build_optimizer("tz-lsr1-tr", model.parameters(), resolved_optimizer_params("tz-lsr1-tr", "mnist"))
    calls = []
    opt.step(loop_closure(model, x, y, opt, calls))
    assert False in calls


# ----------------------------------------------------------------------------- create-graph


def test_create_graph_protocol_keeps_the_graph_and_counts_hvps(tmp_path: Path) -> None:
    from tests import peer_protocols

    peer_protocols.SEEN["create_graph"].clear()
    [(_, rows)] = run_suite(tmp_path, '[{name: "tests.peer_protocols:CreateGraphSpy", label: spy}]')
    assert peer_protocols.SEEN["create_graph"] == [True] * 5
    last = rows[-1]
    assert (last["grad_evals"], last["loss_evals"], last["hvp_evals"]) == (5, 0, 5)


@needs_pytorch_optimizer
def test_adahessian_gets_a_graph_and_its_hessian_diagonal_is_exact_on_a_diagonal_quadratic() -> None:
    """f(x) = 0.5 sum d_i x_i^2: Hutchinson's z * (H z) with Rademacher z is d exactly, since
    H = diag(d) and z_i^2 = 1; so one HVP per step gives AdaHessian the true diagonal."""
    d = torch.tensor([1.0, 2.0, 4.0, 8.0], dtype=torch.float64)
    x = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = build_optimizer("adahessian", [x], resolved_optimizer_params("adahessian", "mnist"))
    assert opt.protocol == "create-graph" and opt.create_graph and not opt.second_order

    def closure(backward: bool = True):
        x.grad = None
        loss = 0.5 * (d * x * x).sum()
        loss.backward(create_graph=opt.create_graph)
        return loss

    for _ in range(3):
        opt.step(closure)
    state = opt.optimizer.state[x]
    torch.testing.assert_close(state["hessian"], d, rtol=0.0, atol=1e-12)
    assert (opt.closure_evaluations, opt.hvp_evaluations, opt.loss_evaluations) == (3, 3, 0)
    assert x.grad is None  # the graph held by .grad is released after each step

    # without create_graph there is no graph to differentiate: AdaHessian's step fails
    y = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    plain = build_optimizer("adahessian", [y], resolved_optimizer_params("adahessian", "mnist"))

    def no_graph():
        y.grad = None
        loss = 0.5 * (d * y * y).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="does not require grad"):
        plain.step(no_graph)


# ----------------------------------------------------------------------------- plain step()


@needs_pytorch_optimizer
@pytest.mark.parametrize("name", ["soap", "shampoo"])
def test_soap_and_shampoo_get_one_closure_call_then_a_plain_step(name: str, monkeypatch) -> None:
    model, x, y = tiny()
    opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "mnist"))
    assert opt.protocol == "step" and not opt.create_graph
    step_args: list[tuple] = []
    inner_step = opt.optimizer.step
    monkeypatch.setattr(opt.optimizer, "step", lambda *a, **k: (step_args.append((a, k)), inner_step(*a, **k))[1])
    calls: list[bool] = []
    start = torch.nn.functional.cross_entropy(model(x), y).item()
    for _ in range(5):
        opt.step(loop_closure(model, x, y, opt, calls))
    assert calls == [True] * 5 and step_args == [((), {})] * 5
    assert opt.closure_evaluations == 5 and opt.loss_evaluations == opt.hvp_evaluations == 0
    assert torch.nn.functional.cross_entropy(model(x), y).item() < start
    for group in opt.optimizer.param_groups:  # the L2 term is in the loss, never in the optimizer
        assert group["weight_decay"] == 0.0


# ----------------------------------------------------------------------------- missing packages


@pytest.mark.parametrize(("name", "module"), [("soap", "pytorch_optimizer"), ("tz-lsr1-tr", "torchzero")])
def test_a_peer_whose_package_is_missing_fails_validate_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, module: str
) -> None:
    # the package made unimportable: a None entry in sys.modules makes any import of it fail
    for loaded in [m for m in sys.modules if m == module or m.startswith(module + ".")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, module, None)
    suite = tmp_path / "peer.yaml"
    suite.write_text(
        f"name: peer\nepochs: 1\nbatch_sizes: [1000]\ngrids:\n  - models: [mlp]\n"
        f"    datasets: [mnist-embedded]\n    optimizers: [lsr1, {name}]\n"
    )
    for command in (["validate", str(suite)], ["run", str(suite), "--output", str(tmp_path / "out")]):
        result = cli.invoke(app, command)
        assert result.exit_code == 2, result.output
        assert f"grids[0].optimizers[1].name: {name} needs the optional package '{module}'" in result.output
        assert 'pip install -e ".[peers]"' in result.output
        assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # nothing trained, nothing written
    # a tool that needs only the run list (docs/tools/peers.py) reads it without the package,
    # and every other check still holds
    assert [r.run_id for r in expand(load_suite(suite, check_packages=False))] == [
        f"mlp-mnist-embedded-{label}-b1000-s0" for label in ("lsr1", name)
    ]
    suite.write_text(suite.read_text().replace("epochs: 1", "epochs: 0"))
    with pytest.raises(SpecError, match="epochs"):
        load_suite(suite, check_packages=False)


def test_a_plugin_declaring_an_unknown_protocol_is_refused_by_validate(tmp_path: Path) -> None:
    suite = tmp_path / "bad.yaml"
    suite.write_text(
        "name: bad\nepochs: 1\nbatch_sizes: [1000]\ngrids:\n  - models: [mlp]\n    datasets: [mnist-embedded]\n"
        '    optimizers: [{name: "tests.peer_protocols:BadProtocol", label: bad}]\n'
    )
    result = cli.invoke(app, ["validate", str(suite)])
    assert result.exit_code == 2, result.output
    assert "lsr1bench_protocol must be one of 'step', 'closure', 'closure-backward', 'create-graph', got 'hvp'" in (
        " ".join(result.output.split())
    )


def test_every_peer_documents_its_protocol_and_package() -> None:
    assert PEERS == ["tz-lsr1-tr", "tz-lsr1-ls", "soap", "shampoo", "adahessian"]
    protocols = {name: OPTIMIZER_TABLE[name].protocol for name in PEERS}
    assert protocols == {
        "tz-lsr1-tr": "closure-backward",
        "tz-lsr1-ls": "closure-backward",
        "soap": "step",
        "shampoo": "step",
        "adahessian": "create-graph",
    }


# ----------------------------------------------------------------------------- CI smoke


@pytest.mark.slow
@needs_torchzero
@needs_pytorch_optimizer
def test_the_peers_smoke_suite_runs_every_protocol_and_reports_a_tuned_sweep(tmp_path: Path) -> None:
    """suites/peers-smoke.yaml: one epoch of each peer on embedded MNIST (5 steps at batch 1000
    after 500 images are held out: 4,500 // 1,000 = 4 steps)."""
    out = tmp_path / "out"
    result = cli.invoke(app, ["run", str(REPO / "suites" / "peers-smoke.yaml"), "--output", str(out)])
    assert result.exit_code == 0, result.output
    last = {path.name: records.read_epochs(path)[-1] for path, _ in records.iter_runs(out / "peers-smoke")}
    assert len(last) == 7
    row = {name.removeprefix("mlp-mnist-embedded-").removesuffix("-b1000-s0"): r for name, r in last.items()}
    assert all(r["steps"] == 4 for r in row.values())
    assert (row["adahessian"]["grad_evals"], row["adahessian"]["hvp_evals"]) == (4, 4)
    assert (row["shampoo"]["grad_evals"], row["soap-lr0.001"]["grad_evals"]) == (4, 4)
    assert row["tz-lsr1-tr"]["loss_evals"] >= 4 and row["tz-lsr1-tr"]["grad_evals"] == 4
    assert row["lsr1"]["grad_evals"] == 8 and row["lsr1"]["loss_evals"] == 0  # two closure calls a step
    report = cli.invoke(app, ["report", str(out / "peers-smoke")])
    assert report.exit_code == 0, report.output
    assert "soap (tuned)" in report.output
