"""Optimizer registry: every name steps, closure counting, L-BFGS forgetting and pairs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lsr1bench.registry.models import l2_penalty
from lsr1bench.registry.names import OPTIMIZERS, SECOND_ORDER, resolved_optimizer_params
from lsr1bench.registry.optimizers import (
    LBFGSTrainOptimizer,
    TrainOptimizer,
    build_optimizer,
)
from lsr1bench.registry.table import OPTIMIZER_TABLE, missing_package


def optimizer_names() -> list:
    """The built-in names; the peers of the optional extra are tested in test_peers.py by protocol."""
    return sorted(name for name in OPTIMIZERS if not OPTIMIZER_TABLE[name].requires)


def tiny_problem(seed: int = 0, batches: int = 1, batch_size: int = 32):
    """A small float64 classification problem: a 6-8-3 tanh network and fixed minibatches."""
    gen = torch.Generator().manual_seed(seed)
    teacher = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    data = []
    for _ in range(batches):
        x = torch.randn(batch_size, 6, generator=gen, dtype=torch.float64)
        data.append((x, (x @ teacher).argmax(1)))
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    return model, data


def make_closure(model: nn.Module, x: torch.Tensor, y: torch.Tensor, weight_decay: float = 0.0):
    def closure() -> torch.Tensor:
        model.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y) + l2_penalty(model, weight_decay)
        loss.backward()
        return loss

    return closure


def loss_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return nn.functional.cross_entropy(model(x), y).item()


def flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def flat_gradient(model: nn.Module, point: torch.Tensor, x, y) -> torch.Tensor:
    """Gradient of the minibatch loss at ``point``, computed on a separate copy of the model."""
    import copy

    twin = copy.deepcopy(model)
    torch.nn.utils.vector_to_parameters(point.clone(), twin.parameters())
    twin.zero_grad()
    nn.functional.cross_entropy(twin(x), y).backward()
    return torch.cat([p.grad.reshape(-1) for p in twin.parameters()])


# --------------------------------------------------------------------------- every name


@pytest.mark.parametrize("name", optimizer_names())
def test_every_optimizer_builds_and_a_step_lowers_the_loss(name):
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "mnist"))
    assert isinstance(opt, TrainOptimizer)
    assert isinstance(opt.optimizer, torch.optim.Optimizer)
    assert opt.second_order == (name in SECOND_ORDER)
    before = loss_of(model, x, y)
    closure = make_closure(model, x, y)
    calls: list[int] = []

    def counted():
        calls.append(1)
        return closure()

    returned = opt.step(counted)
    assert isinstance(returned, float)
    assert returned == pytest.approx(before, rel=1e-12)  # the loss at the start point
    assert loss_of(model, x, y) < before
    assert opt.closure_evaluations == len(calls) >= 1
    stats = opt.statistics()
    assert isinstance(stats, dict)
    assert stats["closure_evaluations"] == len(calls)


@pytest.mark.parametrize("name", optimizer_names())
def test_a_few_steps_keep_lowering_the_loss(name):
    model, [(x, y)] = tiny_problem(seed=1)
    opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "cifar10"))
    before = loss_of(model, x, y)
    closure = make_closure(model, x, y)
    for _ in range(12):
        opt.step(closure)
    assert loss_of(model, x, y) < before


@pytest.mark.parametrize("name", ["sgd", "momentum", "nag", "adadelta", "adam"])
def test_first_order_methods_call_the_closure_once_per_step(name):
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "mnist"))
    calls = []
    closure = make_closure(model, x, y)

    def watched():
        calls.append(1)
        return closure()

    for _ in range(7):
        opt.step(watched)
    assert opt.closure_evaluations == len(calls) == 7
    assert opt.statistics() == {"steps": 7, "closure_evaluations": 7}


@pytest.mark.parametrize("name", ["lsr1", "lsr1-ls"])
def test_lsr1_closure_count_matches_the_calls(name):
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer(name, model.parameters(), resolved_optimizer_params(name, "mnist"))
    calls = []
    closure = make_closure(model, x, y)

    def watched():
        calls.append(1)
        return closure()

    for _ in range(4):
        opt.step(watched)
    assert opt.closure_evaluations == len(calls)
    assert opt.statistics()["closure_evaluations"] == len(calls)
    assert opt.optimizer.statistics()["steps"] == 4


def test_the_torch_optimizers_get_the_resolved_hyperparameters():
    model, _ = tiny_problem()
    nag = build_optimizer("nag", model.parameters(), resolved_optimizer_params("nag", "mnist"))
    group = nag.optimizer.param_groups[0]
    assert group["lr"] == 0.003 and group["momentum"] == 0.9 and group["nesterov"] is True
    momentum = build_optimizer(
        "momentum", model.parameters(), resolved_optimizer_params("momentum", "cifar10")
    )
    group = momentum.optimizer.param_groups[0]
    assert group["lr"] == 0.01 and group["momentum"] == 0.9 and group["nesterov"] is False
    lbfgs = build_optimizer(
        "lbfgs", model.parameters(), resolved_optimizer_params("lbfgs", "mnist")
    )
    group = lbfgs.optimizer.param_groups[0]
    assert group["max_iter"] == 1 and group["history_size"] == 5
    assert group["line_search_fn"] == "strong_wolfe"
    assert isinstance(lbfgs, LBFGSTrainOptimizer) and lbfgs.forget_every == 5


def test_an_lr_scheduler_attaches_to_the_torch_optimizer():
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer("lbfgs", model.parameters(), {"line_search": None, "lr": 0.5})
    scheduler = torch.optim.lr_scheduler.MultiStepLR(opt.optimizer, milestones=[1], gamma=0.1)
    opt.step(make_closure(model, x, y))
    scheduler.step()
    assert opt.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)


def test_unknown_names_and_keys_are_errors():
    model, _ = tiny_problem()
    with pytest.raises(ValueError) as info:
        build_optimizer("rmsprop", model.parameters(), {})
    for name in OPTIMIZERS:
        assert name in str(info.value)
    with pytest.raises(ValueError, match="nesterov"):
        build_optimizer("sgd", model.parameters(), {"lr": 0.1, "nesterov": True})
    with pytest.raises(ValueError, match="learning rate"):
        build_optimizer("sgd", model.parameters(), {"lr": None})
    with pytest.raises(ValueError, match="line_search"):
        build_optimizer("lbfgs", model.parameters(), {"line_search": "backtracking"})


# --------------------------------------------------------------------------- weight decay


@pytest.mark.parametrize("name", sorted(n for n in OPTIMIZERS if missing_package(n) is None))
def test_weight_decay_is_never_given_to_an_optimizer(name):
    model, _ = tiny_problem()
    hyper = resolved_optimizer_params(name, "mnist")
    with pytest.raises(ValueError, match="part of the loss"):
        build_optimizer(name, model.parameters(), {**hyper, "weight_decay": 1e-4})
    opt = build_optimizer(name, model.parameters(), hyper)
    for group in opt.optimizer.param_groups:
        assert group.get("weight_decay", 0) == 0


def test_weight_decay_in_the_loss_is_applied_once():
    # Loss = L2 term only: one SGD step gives p <- p - lr * wd * p, not lr * 2 wd * p.
    model, _ = tiny_problem()
    start = flat(model)
    lr, wd = 0.1, 0.01
    opt = build_optimizer("sgd", model.parameters(), {"lr": lr})

    def closure():
        model.zero_grad()
        loss = l2_penalty(model, wd)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(flat(model), start * (1 - lr * wd), rtol=1e-12, atol=1e-15)


# --------------------------------------------------------------------------- L-BFGS


def test_lbfgs_counts_the_extra_pair_evaluation():
    model, batches = tiny_problem(batches=2)
    opt = build_optimizer("lbfgs", model.parameters(), {"line_search": None, "lr": 0.1})
    closures = [make_closure(model, x, y) for x, y in batches]
    expected = 0
    for step in range(12):
        opt.step(closures[step % 2])
        # fresh starts (steps 1, 6, 11) make one call; the others add one at x_k for the pair
        expected += 1 if step % 5 == 0 else 2
        assert opt.closure_evaluations == expected
    stats = opt.statistics()
    assert stats["steps"] == 12 and stats["forgettings"] == 2
    assert stats["closure_evaluations"] == expected


def test_lbfgs_forgets_its_history_every_five_steps():
    model, batches = tiny_problem(batches=3)
    opt = build_optimizer("lbfgs", model.parameters(), {"line_search": None, "lr": 0.1})
    closures = [make_closure(model, x, y) for x, y in batches]
    state = opt.optimizer.state[next(iter(model.parameters()))]
    stored = []
    for step in range(1, 16):
        opt.step(closures[step % 3])
        stored.append(len(state["old_dirs"]))
        assert state["n_iter"] == (step - 1) % 5 + 1  # torch's own counter restarts too
    # pairs are formed at the 2nd..5th step after each fresh start
    assert stored == [0, 1, 2, 3, 4] * 3
    assert opt.statistics()["forgettings"] == 2
    assert opt.statistics()["stored_pairs"] == 4


def test_lbfgs_without_forgetting_fills_its_memory():
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer(
        "lbfgs", model.parameters(), {"line_search": None, "lr": 0.1, "forget_every": None}
    )
    closure = make_closure(model, x, y)
    for _ in range(10):
        opt.step(closure)
    assert opt.statistics()["forgettings"] == 0
    assert opt.statistics()["stored_pairs"] == 5


@pytest.mark.parametrize("line_search", [None, "strong_wolfe"])
def test_lbfgs_pair_uses_one_minibatch(line_search):
    # Step 1 on minibatch A moves x0 -> x1; step 2 runs on minibatch B. The stored pair must
    # be s = x1 - x0 and y = g_B(x1) - g_B(x0), both gradients on B, computed here on a
    # separate copy of the model.
    model, [(xa, ya), (xb, yb)] = tiny_problem(seed=2, batches=2)
    opt = build_optimizer("lbfgs", model.parameters(), {"line_search": line_search, "lr": 0.5})
    x0 = flat(model)
    opt.step(make_closure(model, xa, ya))
    x1 = flat(model)
    assert not torch.equal(x0, x1)
    opt.step(make_closure(model, xb, yb))

    state = opt.optimizer.state[next(iter(model.parameters()))]
    assert len(state["old_dirs"]) == 1
    y_stored, s_stored = state["old_dirs"][-1], state["old_stps"][-1]
    y_same_batch = flat_gradient(model, x1, xb, yb) - flat_gradient(model, x0, xb, yb)
    torch.testing.assert_close(s_stored, x1 - x0, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(y_stored, y_same_batch, rtol=1e-10, atol=1e-12)
    # and it is not what plain torch LBFGS would store (gradients of two minibatches)
    y_mixed = flat_gradient(model, x1, xb, yb) - flat_gradient(model, x0, xa, ya)
    assert (y_mixed - y_same_batch).norm() > 0.1 * y_same_batch.norm()
    # the pair evaluation did not move the parameters
    assert opt.statistics()["skipped_updates"] == 0


def test_lbfgs_step_that_does_not_move_stores_no_pair():
    # A zero gradient stops torch's LBFGS before it moves; the next pair must be skipped
    # rather than built from a step that was never taken.
    model, [(x, y)] = tiny_problem()
    opt = build_optimizer("lbfgs", model.parameters(), {"line_search": None, "lr": 0.1})
    closure = make_closure(model, x, y)
    opt.step(closure)

    def flat_loss():
        model.zero_grad()
        loss = (flat(model) * 0).sum() + sum((p * 0).sum() for p in model.parameters())
        loss.backward()
        return loss

    before = flat(model)
    opt.step(flat_loss)
    torch.testing.assert_close(flat(model), before, rtol=0, atol=0)
    opt.step(closure)
    state = opt.optimizer.state[next(iter(model.parameters()))]
    # across the stalled step s = 0 (the wrapper zeroes torch's t) and y = 0 (same
    # minibatch, same point), so torch's y^T s > 1e-10 test rejects the pair
    assert len(state["old_dirs"]) == 0
    assert opt.statistics()["skipped_updates"] == 1
