"""Optimizer name -> ``TrainOptimizer``: a torch optimizer with one closure-based step.

Every optimizer takes one training step as ``loss = opt.step(closure)``, where the closure
zeroes the gradients, runs forward and backward on ONE fixed minibatch and returns the
loss tensor. First-order methods call it once per step; second-order methods call it as
often as they need (L-SR1 twice; L-BFGS once plus its line search plus one call for the
same-minibatch curvature pair). The wrapper counts every call, so ``closure_evaluations``
is the number of forward+backward passes, comparable across methods.

Weight decay is never handed to an optimizer: the runner puts the L2 term
(``models.l2_penalty``) in the loss, so all methods minimise the same objective and no
method decays twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from lsr1bench import records
from lsr1bench.registry.names import LAYOUT_OPTIONS, OPTIMIZER_DEFAULTS, OPTIMIZERS, SECOND_ORDER
from lsr1bench.registry.plugins import is_import_path, optimizer_class, plugin_protocol, resolve
from lsr1bench.registry.table import OPTIMIZER_TABLE, check_optimizer_params, missing_package

__all__ = ["TrainOptimizer", "LBFGSTrainOptimizer", "build_optimizer", "known_optimizers"]

# The training loop's closure: ``closure()`` or ``closure(backward=True)`` runs forward and
# backward on the step's minibatch; ``closure(backward=False)`` (or ``closure(False)``) runs
# the forward pass only, without gradients, and leaves ``.grad`` as it was.
Closure = Callable[..., Tensor]

# torch.optim.LBFGS's default evaluation budget for its default max_iter=20 is 25 calls; one
# step here is one L-BFGS iteration, so allow the strong-Wolfe search the same 24 extra
# evaluations. (With torch's default for max_iter=1, max_eval=1, the search could not make
# a single evaluation beyond the start point.)
LBFGS_MAX_EVALUATIONS = 25


def known_optimizers() -> list[str]:
    """The registered optimizer names, sorted."""
    return sorted(OPTIMIZERS)


class TrainOptimizer:
    """One torch optimizer behind a common closure-based step.

    ``optimizer``: the ``torch.optim.Optimizer`` (attach LR schedulers to it).
    ``second_order``: whether the method is L-SR1 / L-BFGS (calls the closure many times).
    ``closure_evaluations``: cumulative number of closure calls that ran backward (the
    ``grad_evals`` column); ``loss_evaluations``: calls with ``backward=False`` (forward
    only, ``loss_evals``); ``hvp_evaluations``: Hessian-vector products (``hvp_evals``).
    ``protocol``: how the step is driven (``table.PROTOCOLS``); ``create_graph``: whether
    the loop's backward keeps the graph (the ``create-graph`` protocol).
    ``reduces_loss``: whether ``step`` returns the loss averaged over a process group
    itself (distributed L-SR1); otherwise a data-parallel closure must return it averaged.
    """

    def __init__(
        self,
        name: str,
        optimizer: torch.optim.Optimizer,
        second_order: bool,
        reduces_loss: bool = False,
        sharded: bool = False,
        protocol: str = "closure",
    ) -> None:
        self.name = name
        self.protocol = protocol
        self.create_graph = protocol == "create-graph"
        self.loss_evaluations = 0
        self.hvp_evaluations = 0
        self.optimizer = optimizer
        self.second_order = second_order
        self.reduces_loss = reduces_loss
        self.sharded = sharded
        self.closure_evaluations = 0
        self.steps = 0
        # counters at the last ``epoch_curvature`` call (per-epoch differences)
        self._curvature_steps = 0
        self._negative_steps = 0
        # skip-test cosines of the epoch in progress that a checkpoint carried over
        self._carried_cosines: list[float] = []

    # ``state_dict`` / ``load_state_dict``: the torch optimizer's own state (its public
    # state dict, or ``full_state_dict`` for one whose state is split over ranks) plus this
    # wrapper's counters, so a run resumed from a checkpoint continues bit for bit.
    _COUNTERS: tuple[str, ...] = (
        "closure_evaluations", "loss_evaluations", "hvp_evaluations", "steps", "_curvature_steps", "_negative_steps",
    )

    def state_dict(self, full: bool = False) -> dict[str, Any]:
        """Everything a resumed run needs. ``full``: the one-process form of a state split
        over ranks (``full_state_dict``, a collective: every rank must call it)."""
        opt = self.optimizer
        inner = opt.full_state_dict() if full and hasattr(opt, "full_state_dict") else opt.state_dict()
        cosines = list(self._carried_cosines)
        if hasattr(opt, "update_cosines"):
            cosines += opt.update_cosines(clear=False)
        return {
            "optimizer": inner,
            "full": bool(full and hasattr(opt, "full_state_dict")),
            "counters": {name: getattr(self, name) for name in self._COUNTERS},
            "epoch_cosines": cosines,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (into this rank's layout if ``full``)."""
        opt = self.optimizer
        if state.get("full") and hasattr(opt, "load_full_state_dict"):
            opt.load_full_state_dict(state["optimizer"])
        else:
            opt.load_state_dict(state["optimizer"])
        for name, value in state["counters"].items():
            setattr(self, name, value)
        if hasattr(opt, "update_cosines"):
            opt.update_cosines(clear=True)
        self._carried_cosines = [float(v) for v in state.get("epoch_cosines", [])]

    def layout(self, world_size: int) -> str:
        """Where the optimizer's state lives: one process, or each of P ranks (all or a share)."""
        if world_size == 1:
            return "single"
        return "sharded" if self.sharded else "replicated"

    def memory_bytes(self) -> int:
        """Bytes of the optimizer's own tensors on this rank (L-SR1 reports its own)."""
        if hasattr(self.optimizer, "memory_bytes"):
            return int(self.optimizer.memory_bytes())
        return _state_bytes(self.optimizer.state.values())

    def _counted(self, closure: Closure) -> Closure:
        def counted(backward: bool = True) -> Tensor:
            if backward:
                self.closure_evaluations += 1
                return closure()
            self.loss_evaluations += 1
            return closure(backward=False)

        return counted

    def step(self, closure: Closure) -> float:
        """One optimizer step on the closure's minibatch; the loss at the start point."""
        loss = self.optimizer.step(self._counted(closure))
        self.steps += 1
        return _as_float(loss)

    def statistics(self) -> dict[str, Any]:
        """Cumulative counters; L-SR1's own statistics for ``lsr1`` / ``lsr1-ls``."""
        if hasattr(self.optimizer, "statistics"):
            stats = dict(self.optimizer.statistics())
        else:
            stats = {"steps": self.steps}
        stats["closure_evaluations"] = self.closure_evaluations
        return stats

    def epoch_curvature(self) -> dict[str, Any]:
        """L-SR1's model at this point and its skip tests since the last call (empty for
        optimizers without ``curvature()``): the per-epoch curvature columns."""
        opt = self.optimizer
        if not hasattr(opt, "curvature"):
            return {}
        stats = opt.statistics()
        steps = stats["steps"] - self._curvature_steps
        negative_steps = stats["negative_curvature_steps"] - self._negative_steps
        self._curvature_steps, self._negative_steps = stats["steps"], stats["negative_curvature_steps"]
        model = opt.curvature()
        eigenvalues = model_eigenvalues(model)
        gamma_multiplicity = model.n - model.k
        negative = sum(1 for v in eigenvalues[: model.k] if v < 0.0)
        negative += gamma_multiplicity if model.gamma < 0.0 else 0
        cosines = self._carried_cosines + opt.update_cosines()
        self._carried_cosines = []
        out: dict[str, Any] = {
            "min_eigenvalue": min(eigenvalues) if eigenvalues else None,
            "negative_eigenvalues": negative,
            "negative_curvature_fraction": negative_steps / steps if steps > 0 else None,
            "update_cosine_p10": None,
            "update_cosine_median": None,
        }
        if cosines:
            values = torch.tensor(cosines, dtype=torch.float64)
            out["update_cosine_p10"] = float(torch.quantile(values, 0.1))
            out["update_cosine_median"] = float(torch.quantile(values, 0.5))
            for r, column in zip(records.SKIP_RATE_THRESHOLDS, records.SKIP_RATE_COLUMNS):
                out[column] = float((values < r).sum()) / len(cosines)
        return out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, {type(self.optimizer).__name__})"


def model_eigenvalues(model: Any) -> list[float]:
    """The distinct eigenvalue slots of an L-SR1 model B (a ``CurvatureOperator``): its k
    eigenvalues on range(Psi), then gamma once when k < n (its multiplicity is n - k).
    Empty when Psi^T Psi is not positive definite (the eigenvalues are then undefined)."""
    try:
        eigenvalues = [float(v) for v in model.eigenvalues()]
    except torch.linalg.LinAlgError:
        eigenvalues = []
    if model.n > model.k:
        eigenvalues.append(model.gamma)
    return eigenvalues


class LBFGSTrainOptimizer(TrainOptimizer):
    """``torch.optim.LBFGS`` (one iteration per step) as the paper's L-BFGS baseline.

    Two changes to plain ``LBFGS(max_iter=1)`` in a minibatch loop:

    * Forgetting: the whole L-BFGS state (pairs, scaling, last direction) is cleared every
      ``forget_every`` steps, so steps ``forget_every * j + 1`` start afresh from the
      steepest-descent direction (with torch's first-iteration step length
      ``min(1, 1/|g|_1) * lr``), and the memory holds at most ``forget_every - 1`` pairs.
    * Same-minibatch pairs: torch forms ``y = g(x_{k+1}) - prev_flat_grad`` where
      ``prev_flat_grad`` is the gradient it saw at ``x_k`` - on minibatch ``B_k``, while
      ``g(x_{k+1})`` is on ``B_{k+1}``. That ``y`` is mostly minibatch noise. Before each
      step (except fresh starts) this wrapper evaluates the new minibatch's gradient at
      the previous iterate ``x_k`` and puts it in ``prev_flat_grad``, so
      ``y = g_B(x_{k+1}) - g_B(x_k)`` with ``B = B_{k+1}`` and ``s = x_{k+1} - x_k``.
      It costs one more closure call per step (counted) and one flat copy of the
      parameters. In train mode that call also updates batch-norm running statistics once
      more, at ``x_k``; the line search's calls do the same.

    This relies on torch's internal state keys; they are checked once against a small
    quadratic and any mismatch raises ``RuntimeError``.
    """

    def __init__(self, optimizer: torch.optim.LBFGS, forget_every: int | None) -> None:
        super().__init__("lbfgs", optimizer, second_order=True)
        _check_torch_lbfgs_internals()
        self.forget_every = forget_every
        self.forgettings = 0
        self.skipped_updates = 0
        self._params: list[Tensor] = list(optimizer.param_groups[0]["params"])
        self._previous_point: Tensor | None = None

    @property
    def _state(self) -> dict[str, Any]:
        return self.optimizer.state[self._params[0]]

    def forget(self) -> None:
        """Clear the L-BFGS memory; the next step starts from steepest descent."""
        self._state.clear()
        self._previous_point = None
        self.forgettings += 1

    def step(self, closure: Closure) -> float:
        counted = self._counted(closure)
        if self.forget_every and self.steps > 0 and self.steps % self.forget_every == 0:
            self.forget()
        state = self._state
        pair_expected = state.get("n_iter", 0) >= 1 and self._previous_point is not None
        if pair_expected:
            for key in ("prev_flat_grad", "d", "t"):
                if key not in state:
                    raise RuntimeError(
                        f"torch.optim.LBFGS state lacks {key!r} after a step: its internals "
                        "changed, so the same-minibatch pair fix in lsr1bench cannot work"
                    )
            state["prev_flat_grad"].copy_(self._gradient_at(self._previous_point, counted))
        last_pair = state["old_dirs"][-1] if state.get("old_dirs") else None
        iterations_before = state.get("n_iter", 0)
        start = _flat_params(self._params)

        loss = self.optimizer.step(counted)
        self.steps += 1

        state = self._state
        moved = not torch.equal(start, _flat_params(self._params))
        if not moved and "t" in state:
            # torch stopped before moving (tolerance or a zero-length line search): make the
            # next pair's s = d * t zero so torch skips it instead of storing a step never taken.
            state["t"] = 0.0
        iterated = state.get("n_iter", 0) > iterations_before
        if pair_expected and iterated:
            dirs = state.get("old_dirs") or []
            if not dirs or dirs[-1] is last_pair:
                self.skipped_updates += 1
        self._previous_point = start
        return _as_float(loss)

    def _gradient_at(self, point: Tensor, closure: Closure) -> Tensor:
        """The closure's flat gradient at ``point``; the parameters are restored afterwards."""
        current = _flat_params(self._params)
        _set_flat_params(self._params, point)
        try:
            with torch.enable_grad():
                closure()
            return _flat_grad(self._params)
        finally:
            _set_flat_params(self._params, current)

    _COUNTERS = (*TrainOptimizer._COUNTERS, "forgettings", "skipped_updates", "_previous_point")

    def memory_bytes(self) -> int:
        extra = [self._previous_point] if self._previous_point is not None else []
        return super().memory_bytes() + _state_bytes(extra)

    def statistics(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "forgettings": self.forgettings,
            "closure_evaluations": self.closure_evaluations,
            "stored_pairs": len(self._state.get("old_dirs") or []),
            "skipped_updates": self.skipped_updates,
        }


def build_optimizer(
    name: str,
    params: Iterable[Tensor] | Iterable[dict],
    hyper: Mapping[str, Any],
    process_group: Any = None,
) -> TrainOptimizer:
    """Build optimizer ``name`` over ``params`` with the resolved hyperparameters ``hyper``.

    ``hyper`` is normally ``names.resolved_optimizer_params(name, dataset, overrides)``;
    keys it lacks take the registry defaults, keys the registry does not know raise
    ``ValueError`` (as does ``weight_decay``, which belongs in the loss).

    ``process_group``: the ranks of a data-parallel run (gradients are averaged by DDP
    before the optimizer sees them). L-SR1 is handed the group (its inner products and
    loss values are reduced over it, ``shard_memory`` picks its layout); the other
    methods need nothing more, their state being replicated.
    """
    if is_import_path(name):
        return _plugin_optimizer(name, params, hyper)
    if name not in OPTIMIZERS:
        raise ValueError(
            f"unknown optimizer {name!r}; known optimizers: {', '.join(known_optimizers())}"
        )
    if OPTIMIZER_TABLE[name].requires:
        return _peer_optimizer(name, params, _resolve(name, hyper))
    hyper = dict(hyper)
    layout = dict(LAYOUT_OPTIONS.get(name, {}))
    layout.update({key: hyper.pop(key) for key in list(hyper) if key in layout})
    hp = _resolve(name, hyper)
    params = list(params)

    if name in ("lsr1", "lsr1-ls"):
        try:
            from lsr1bench.optim import LSR1
        except ImportError as err:  # the optimizer package is built alongside this one
            raise RuntimeError(f"optimizer {name!r} needs lsr1bench.optim.LSR1: {err}") from err
        method = OPTIMIZER_TABLE[name].fixed["method"]
        if process_group is None:
            return TrainOptimizer(name, LSR1(params, method=method, **hp), second_order=True)
        shard = bool(layout["shard_memory"])
        lsr1 = LSR1(params, method=method, process_group=process_group, shard_memory=shard, **hp)
        return TrainOptimizer(name, lsr1, second_order=True, reduces_loss=True, sharded=shard)

    if name == "lbfgs":
        line_search, forget_every = hp["line_search"], hp["forget_every"]
        lbfgs = torch.optim.LBFGS(
            params,
            lr=hp["lr"],
            max_iter=1,
            max_eval=LBFGS_MAX_EVALUATIONS if line_search else 1,
            history_size=int(hp["memory"]),
            line_search_fn=line_search,
        )
        return LBFGSTrainOptimizer(lbfgs, forget_every=forget_every)

    optimizer: torch.optim.Optimizer
    if name == "sgd":
        optimizer = torch.optim.SGD(params, lr=hp["lr"])
    elif name == "momentum":
        optimizer = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"])
    elif name == "nag":
        optimizer = torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"], nesterov=True)
    elif name == "adadelta":
        optimizer = torch.optim.Adadelta(params, lr=hp["lr"], rho=hp["rho"], eps=hp["eps"])
    elif name == "adam":
        optimizer = torch.optim.Adam(params, lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])
    else:  # pragma: no cover - names.OPTIMIZERS and this function are kept in step
        raise ValueError(f"optimizer {name!r} is registered in names.py but has no factory")
    return TrainOptimizer(name, optimizer, second_order=name in SECOND_ORDER)


class HessianTrainOptimizer(TrainOptimizer):
    """An optimizer driven by the ``create-graph`` protocol (AdaHessian): the loop's backward
    keeps the graph, and ``step(closure)`` takes ``hvps_per_update`` Hessian-vector products
    every ``hvp_period`` steps (from the first), each counted in ``hvp_evaluations``; the
    closure's one forward + backward is counted as one gradient evaluation as usual."""

    def __init__(self, name: str, optimizer: torch.optim.Optimizer, hvps_per_update: int, hvp_period: int) -> None:
        super().__init__(name, optimizer, second_order=False, protocol="create-graph")
        self.hvps_per_update = hvps_per_update
        self.hvp_period = hvp_period

    def step(self, closure: Closure) -> float:
        if self.steps % self.hvp_period == 0:
            self.hvp_evaluations += self.hvps_per_update
        loss = self.optimizer.step(self._counted(closure))
        self.steps += 1
        # the gradients hold a graph (create_graph): free it now, not at the next zero_grad
        self.optimizer.zero_grad(set_to_none=True)
        return _as_float(loss)


def _peer_optimizer(name: str, params: Iterable[Tensor] | Iterable[dict], hp: Mapping[str, Any]) -> TrainOptimizer:
    """A peer of the optional extra (``table.py``), driven by the protocol its record declares."""
    info = OPTIMIZER_TABLE[name]
    problem = missing_package(name)
    if problem is not None:  # validation reports it first; a direct call gets the same words
        raise RuntimeError(problem)
    kwargs = {**hp, **info.fixed}
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    optimizer = resolve(info.cls)(list(params), **kwargs)
    return _driven(name, optimizer, info.protocol, info.second_order, info.hvps_per_update, info.hvp_period)


def _driven(
    name: str, optimizer: Any, protocol: str, second_order: bool, hvps_per_update: int = 0, hvp_period: int = 1
) -> TrainOptimizer:
    """The wrapper that drives ``optimizer`` by ``protocol`` (a key of ``table.PROTOCOLS``)."""
    if protocol == "step":
        return FirstOrderPluginOptimizer(name, optimizer, second_order=False, protocol="step")
    if protocol == "create-graph":
        return HessianTrainOptimizer(name, optimizer, hvps_per_update, hvp_period)
    return TrainOptimizer(name, optimizer, second_order=second_order, protocol=protocol)


class FirstOrderPluginOptimizer(TrainOptimizer):
    """A plugin optimizer whose ``step`` takes no closure: the closure runs once, then ``step()``.

    That is the ordinary training loop, so an optimizer that ignores a closure still gets
    its gradients; the one call is counted like any other.
    """

    def step(self, closure: Closure) -> float:
        loss = self._counted(closure)()
        self.optimizer.step()
        self.steps += 1
        return _as_float(loss)


def _plugin_optimizer(path: str, params: Iterable[Tensor] | Iterable[dict], hyper: Mapping[str, Any]) -> TrainOptimizer:
    """``cls(params, **hyper)`` for the Optimizer subclass at ``path``.

    If its ``step`` requires a closure (as L-BFGS does) it is driven like the second-order
    methods: the closure, called as often as it wants on one minibatch, is counted, and
    the runner guards the batch-norm statistics. Otherwise like the first-order ones.
    """
    cls = optimizer_class(path)
    optimizer = cls(list(params), **dict(hyper))
    protocol = plugin_protocol(cls, path)
    if protocol == "create-graph":
        per_update = int(getattr(cls, "lsr1bench_hvps_per_step", 1))
        return HessianTrainOptimizer(path, optimizer, per_update, 1)
    return _driven(path, optimizer, protocol, second_order=protocol != "step")


def _resolve(name: str, hyper: Mapping[str, Any]) -> dict[str, Any]:
    defaults = OPTIMIZER_DEFAULTS[name]
    if "weight_decay" in hyper:
        raise ValueError(
            "weight_decay is not an optimizer parameter here: the L2 term is part of the "
            "loss (RunSpec.weight_decay), so every optimizer minimises the same objective"
        )
    unknown = sorted(set(hyper) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown hyperparameter(s) for {name!r}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(defaults))}"
        )
    resolved = {**defaults, **hyper}
    if "lr" in resolved and resolved["lr"] is None:
        raise ValueError(
            f"{name!r} needs a learning rate: resolve it with names.resolved_optimizer_params"
        )
    # the ranges of table.py, which the suite schema checks too (LSR1 checks its own table)
    problems = check_optimizer_params(name, resolved)
    if problems:
        raise ValueError(f"{name}: " + "; ".join(message for _, message in problems))
    return resolved


# --------------------------------------------------------------------------- flat helpers


def _state_bytes(values: Iterable[Any]) -> int:
    """Bytes of the tensors in optimizer state (dicts and lists of tensors are walked)."""
    total = 0
    for value in values:
        if isinstance(value, Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, Mapping):
            total += _state_bytes(value.values())
        elif isinstance(value, (list, tuple)):
            total += _state_bytes(value)
    return total


def _as_float(loss: Tensor | float) -> float:
    return float(loss.detach()) if isinstance(loss, Tensor) else float(loss)


def _flat_params(params: list[Tensor]) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in params])


def _set_flat_params(params: list[Tensor], flat: Tensor) -> None:
    offset = 0
    with torch.no_grad():
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


def _flat_grad(params: list[Tensor]) -> Tensor:
    """Flat gradient in parameter order, zeros where a gradient is missing (as torch's LBFGS)."""
    return torch.cat(
        [
            p.grad.detach().reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1)
            for p in params
        ]
    )


_LBFGS_CHECKED = False


def _check_torch_lbfgs_internals() -> None:
    """Check, once, that torch's LBFGS forms ``y = g - state['prev_flat_grad']``.

    Runs two steps on f(x) = 0.5 * x^T diag(1, 2) x with a planted ``prev_flat_grad`` and
    checks the stored pair is built from it. Raises ``RuntimeError`` if not.
    """
    global _LBFGS_CHECKED
    if _LBFGS_CHECKED:
        return
    x = torch.tensor([1.0, 1.0], dtype=torch.float64, requires_grad=True)
    scale = torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt = torch.optim.LBFGS([x], lr=0.5, max_iter=1, history_size=5)

    def closure() -> Tensor:
        opt.zero_grad()
        loss = 0.5 * (scale * x * x).sum()
        loss.backward()
        return loss

    problem = "torch.optim.LBFGS internals changed"
    opt.step(closure)
    state = opt.state[x]
    needed = ("n_iter", "d", "t", "old_dirs", "old_stps", "prev_flat_grad")
    missing = [key for key in needed if key not in state]
    if missing:
        raise RuntimeError(f"{problem}: state lacks {missing}; the lbfgs baseline needs them")
    # a planted gradient that still gives y^T s > 0, so torch stores the pair
    planted = state["prev_flat_grad"] + 0.1
    state["prev_flat_grad"].copy_(planted)
    expected_y = scale * x.detach() - planted
    opt.step(closure)
    dirs = state.get("old_dirs")
    if not dirs or not torch.allclose(dirs[-1], expected_y, rtol=1e-12, atol=1e-12):
        raise RuntimeError(
            f"{problem}: it no longer builds y from state['prev_flat_grad'], so the "
            "same-minibatch pair fix in lsr1bench would be silently wrong"
        )
    _LBFGS_CHECKED = True
