"""L-SR1: limited-memory symmetric rank one, with a trust region or a line search."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._compact import (
    CHUNK,
    SMALL,
    CurvatureMemory,
    combine,
    exact_float32_matmul,
    padded_length,
    products,
    residual,
    well_posed,
)
from ._counters import OUTCOMES, Counters
from ._distributed import decision_digest, make_coordinates
from ._layout import LocalLayout, make_layout
from ._line_search import armijo_backtracking, strong_wolfe
from ._trust_region import MIN_RADIUS, decide, model_decrease, solve_subproblem, spectral_form
from .curvature import CurvatureOperator
from .settings import LSR1_SETTINGS
from .settings import check as check_settings

__all__ = ["LSR1", "MIN_RADIUS", "OUTCOMES"]

# Keys of the global state that hold float64 CPU tensors; torch's load_state_dict would
# cast them to the parameters' dtype and device, so they are restored after it.
_SMALL_KEYS = ("gram_sp", "gram_pp", "ss_diag")

# Settings the stored state depends on: the memory's shape (memory), Psi = Y - gamma S
# (gamma), which factors the pairs were checked against (method) and whether S is kept
# (keep_pairs). They cannot change
# under a state; every other setting is read from param_groups[0] at each step.
_STRUCTURAL = ("method", "memory", "gamma", "keep_pairs")
# A value computed as a difference of terms of total size ``size`` is trusted when it is at
# least CANCELLATION_GUARD * eps * size (eps of the parameters' dtype): the chunked products
# are accurate to a few eps, so that leaves about three correct digits. Below it the value
# is formed from the vectors by an extra pass (counted in ``explicit_passes``).
CANCELLATION_GUARD = 1e3

# The k-vectors of a model without pairs; shared (never written), so the step allocates nothing for it.
_NO_PAIRS = torch.zeros(0, dtype=torch.float64)
# last_model_pred: the pred the step was decided on, from the solver's products before the
# trial; last_pred: recomputed from the applied s after it (what rho divides by).
_LAST_KEYS = ("last_rho", "last_pred", "last_model_pred", "last_step_norm", "last_solve_radius", "last_update_cosine")


class LSR1(Optimizer):
    r"""Limited-memory SR1 (Ramamurthy & Duffy, "L-SR1: A Second Order Optimization Method
    for Deep Learning", ICLR 2017 submission), as a ``torch.optim.Optimizer``.

    ``method="trust_region"`` is the paper's Algorithm 1. Each ``step(closure)`` is one
    iteration on the minibatch the closure captures:

    .. math::
        \begin{aligned}
        & s = \arg\min_{\|s\| \le \Delta} g^T s + \tfrac12 s^T B s
              \quad (B = \gamma I + \Psi M \Psi^T,\ \text{solved by OBS}) \\
        & \rho = \frac{f(x) - f(x+s)}{-(g^T s + \frac12 s^T B s)}, \qquad
          x \leftarrow x + s \text{ if } \rho > \eta \\
        & \Delta \leftarrow 2\Delta \text{ if } \rho > 0.75 \text{ and } \|s\| > 0.8\Delta;
          \quad \Delta \leftarrow \Delta/2 \text{ if } \rho < 0.1 \\
        & \text{store } (s, y = g(x+s) - g(x)) \text{ if }
          |s^T(y - Bs)| \ge r \|s\| \|y - Bs\| \text{ (also after a rejected step)}
        \end{aligned}

    The closure is evaluated twice per step, at x and x + s, on the same data, so the
    curvature pair comes from one minibatch. Pairs are dropped, oldest first, while
    Psi^T Psi is not positive definite or M^{-1} is singular (relative tolerance
    ``rank_tol``). ``method="line_search"`` is Algorithm 2 with d = -H g from the
    triangular compact inverse (the paper's N^{-1} = Y^T S - delta Y^T Y is wrong for
    nonsymmetric S^T Y), a fallback to -g when d is not a descent direction, and a
    strong-Wolfe (or backtracking Armijo) search from min(1, 2 alpha_prev).

    Args:
        params: parameters (one group; any shapes; all of one dtype and device).
        method: ``"trust_region"`` (Algorithm 1) or ``"line_search"`` (Algorithm 2).
        memory: number m of stored pairs (capped at the number of parameters).
        gamma: B0 = gamma * I (H0 = I / gamma for the line search); nonzero.
        initial_radius: Delta_0; ``None`` means the norm of the first gradient.
        eta: accept the step when rho > eta (the paper: eta in (0, 1e-3)).
        skip_tol: r of the SR1 skip test (relative, so invariant to rescaling).
        radius_increase, radius_decrease: the factors 2.0 and 0.5.
        increase_threshold, decrease_threshold: rho above which (with a step near the
            boundary) the radius grows, below which it shrinks (0.75 and 0.1).
        boundary_fraction: "near the boundary" means ||s|| > boundary_fraction * Delta.
        max_radius: optional cap on Delta.
        rank_tol: relative tolerance of the pair policy; ``None`` is 100 * machine
            epsilon of the parameters' dtype.
        line_search: ``"strong_wolfe"`` or ``"armijo"`` (line-search method only).
        c1, c2: sufficient-decrease and curvature constants of the line search.
        max_line_search_evaluations: closure calls a line search may spend.
        pair_policy: ``"scaled"`` (default) or ``"paper"``, the pair policy's test (below).
        skip_noise_floor: also skip a pair whose y - B s is at the rounding level of y.
        process_group: a torch.distributed group for data-parallel training (``None``: one
            process, no torch.distributed call). The closure returns the mean loss on this
            rank's equal shard of the global minibatch, gradients averaged by DDP; ``step``
            returns the loss averaged over the group.
        shard_memory: with a group, each rank keeps only its slice of the coordinates of
            the memory (``False``: every rank keeps all of it).
        keep_pairs: also store the s vectors (another ``param_bytes * m``), so that
            ``curvature().pairs()`` and ``.basis()`` can return S; the step never reads them.

    Example::

        opt = LSR1(model.parameters(), memory=5)
        for inputs, targets in loader:
            def closure():
                opt.zero_grad()
                loss = loss_fn(model(inputs), targets)
                loss.backward()
                return loss
            loss = opt.step(closure)
        print(opt.statistics())

    Models with batch norm or dropout see two forward passes per step; keep them in a
    state where both passes compute the same function (e.g. no dropout randomness
    between them) if the ratio rho should be meaningful.

    Cost: memory ``param_bytes * (m + 5)`` on the common path, ``(m + 6)`` once an extra pass
    against cancellation has run (padded to a multiple of 4,096 values): Psi = Y - gamma S
    in one (m x n) ring buffer (the state; B needs nothing else of the pairs, only
    Psi^T Psi, the lower triangle of S^T Psi and ||s_i||^2, kept as k x k float64), four
    work rows (s, psi, y, g), a saved copy of x (so a rejected step restores x bit for bit)
    and one more work row for the explicit passes. ``keep_pairs=True`` adds the (m x n) S.
    With a sharded group the memory and work rows are this rank's slice, and x and the
    all-gathered s are full length. Time per step: three passes over the (m x n) memory
    (Psi^T g, the step s = beta g + Psi w, and the fused Psi^T [s, psi] that gives the new
    pair's Gram row from the vectors) plus O(n) vector work and O(m^3) float64 work on
    k x k matrices. Two blocking device-to-host transfers per step on the common path; a
    fourth pass (and a transfer) forms g_perp or y - B s explicitly only when cancellation
    would make the algebraic value inaccurate. Inner products over n are summed in float64
    over chunks of 4,096 coordinates. All of them go through the layout object
    (``_layout.py``: local, replicated or sharded), so a data-parallel run can shard the
    coordinates and all-reduce only O(m) values; the step never asks which layout it has.

    Options beyond the paper: ``pair_policy="scaled"`` (default) tests the pairs after
    scaling out their lengths; ``"paper"`` is the paper's unscaled test, which in float32
    drops well-conditioned pairs of different lengths. ``skip_noise_floor=True`` also skips
    a pair whose y - B s is at the rounding level of y.

    ``statistics()`` counts every outcome (``steps`` = accepted + rejected +
    nonfinite_points + nonpositive_pred + negligible + aborted; see ``Counters`` in
    ``_counters.py`` for what each counter means) and every fallback; ``curvature()`` returns
    B as an operator; ``update_cosines()`` the skip test's cosines.

    Settings are read from ``param_groups[0]`` at every step (edit them there, as with any
    torch optimizer); ``method``, ``memory``, ``gamma`` and ``keep_pairs`` shape the stored
    state and cannot change during a run, nor differ in a state loaded with
    ``load_state_dict`` (a ValueError names the setting). If the closure raises, the
    parameters are put back at x, the step counts as ``aborted_steps`` and the exception
    propagates. A trial point indistinguishable from x (x + s rounded to x: the same loss
    and gradient) is a ``negligible_steps`` outcome that changes nothing, and the radius
    never shrinks below ``MIN_RADIUS``, so full-batch runs to convergence go on quietly.
    """

    def __init__(
        self,
        params: Any,
        method: str = "trust_region",
        memory: int = 5,
        gamma: float = 1.0,
        initial_radius: float | None = None,
        eta: float = 1e-4,
        skip_tol: float = 1e-8,
        radius_increase: float = 2.0,
        radius_decrease: float = 0.5,
        increase_threshold: float = 0.75,
        decrease_threshold: float = 0.1,
        boundary_fraction: float = 0.8,
        max_radius: float | None = None,
        rank_tol: float | None = None,
        pair_policy: str = "scaled",
        skip_noise_floor: bool = False,
        line_search: str = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.9,
        max_line_search_evaluations: int = 10,
        process_group: Any = None,
        shard_memory: bool = True,
        keep_pairs: bool = False,
    ) -> None:
        # one table of ranges, shared with the suite schema (settings.py)
        check_settings({key: value for key, value in locals().items() if key in LSR1_SETTINGS})
        defaults = dict(
            method=method, memory=memory, gamma=float(gamma), initial_radius=initial_radius, eta=eta,
            skip_tol=skip_tol, radius_increase=radius_increase, radius_decrease=radius_decrease,
            increase_threshold=increase_threshold, decrease_threshold=decrease_threshold,
            boundary_fraction=boundary_fraction, max_radius=max_radius, rank_tol=rank_tol,
            pair_policy=pair_policy, skip_noise_floor=skip_noise_floor, line_search=line_search, c1=c1, c2=c2,
            max_line_search_evaluations=max_line_search_evaluations, keep_pairs=keep_pairs,
        )
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError(
                f"LSR1 supports a single parameter group, got {len(self.param_groups)}: "
                "its curvature pairs span all parameters together"
            )
        self._params: list[Tensor] = self.param_groups[0]["params"]
        if not self._params:
            raise ValueError("LSR1 got an empty parameter list")
        first = self._params[0]
        for p in self._params:
            if p.dtype != first.dtype or p.device != first.device:
                raise ValueError(
                    "LSR1 needs all parameters on one device with one dtype, got "
                    f"{first.dtype}@{first.device} and {p.dtype}@{p.device}"
                )
            if not p.is_floating_point():
                raise ValueError(f"LSR1 needs floating-point parameters, got {p.dtype}")
        self._numels = [p.numel() for p in self._params]
        self._n = sum(self._numels)
        self._layout: LocalLayout = make_layout(self._n, self._numels, process_group, shard_memory)
        # Full flat buffers hold n values, then zeros up to the padded length; a rank's slice
        # of the coordinates is [lo, hi) (everything without a group or when replicated).
        self._n_pad = self._layout.total
        assert self._layout.total >= padded_length(self._n)
        self._work: dict[str, Tensor] = {}
        self._cosines: list[float] = []
        self._step_loss: float | None = None
        self._views: dict[tuple[int, torch.device], list[Tensor]] = {}
        # the saved x while the parameters sit at a trial point (restored if the step aborts)
        self._moved_from: Tensor | None = None
        self._f_trial: Tensor | None = None  # the loss at the trial point, on the device
        self._structure = {key: self.param_groups[0][key] for key in _STRUCTURAL}

    # --- flat work buffers and their per-parameter views ----------------------------------
    def _views_of(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter views of a flat n-vector, cached by storage address."""
        key = (flat.data_ptr(), flat.device)
        views = self._views.get(key)
        if views is None:
            if len(self._views) > 64:  # buffers were replaced (e.g. a loaded state): start over
                self._views.clear()
            sizes = self._numels + ([self._n_pad - self._n] if self._n_pad > self._n else [])
            views = [v.view_as(p) for v, p in zip(torch.split(flat, sizes), self._params)]
            self._views[key] = views
        return views

    def _buffer(self, name: str) -> Tensor:
        buf = self._work.get(name)
        if buf is None:
            first = self._params[0]
            buf = torch.zeros(self._n_pad, dtype=first.dtype, device=first.device)
            self._work[name] = buf
        return buf

    def _local(self, name: str) -> Tensor:
        """A work vector over this rank's coordinates (all of them without sharding)."""
        key = "local_" + name
        buf = self._work.get(key)
        if buf is None:
            first = self._params[0]
            buf = torch.zeros(self._layout.width, dtype=first.dtype, device=first.device)
            self._work[key] = buf
        return buf

    def _full(self, local: Tensor, name: str) -> Tensor:
        """The whole flat vector of which ``local`` is this rank's slice (the layout decides
        whether that takes an all-gather)."""
        return self._layout.full(local, self._buffer(name))

    def _save_params(self, out: Tensor) -> None:
        torch._foreach_copy_(self._views_of(out), [p.detach() for p in self._params])

    def _load_params(self, flat: Tensor) -> None:
        with torch.no_grad():
            torch._foreach_copy_(self._params, self._views_of(flat))

    def _add_to_params(self, flat: Tensor, alpha: float = 1.0) -> None:
        with torch.no_grad():
            torch._foreach_add_(self._params, self._views_of(flat), alpha=alpha)

    # --- state ----------------------------------------------------------------------------
    def _global_state(self) -> dict:
        state = self.state[self._params[0]]
        if "stats" not in state:
            state["stats"] = Counters()
            state["radius"] = None
            state["last_step_length"] = 1.0
        elif not isinstance(state["stats"], Counters):  # a loaded (or edited) plain dict
            state["stats"] = Counters.from_dict(state["stats"])
        for key in _LAST_KEYS:
            state.setdefault(key, None)
        return state

    def _memory(self, state: dict) -> CurvatureMemory:
        m = min(self.param_groups[0]["memory"], self._n)
        state.setdefault("layout", self._layout.describe())
        return CurvatureMemory(state, m, self._layout.width, self._params[0], self.param_groups[0]["keep_pairs"])

    def _trainable_numel(self) -> int:
        """Coordinates that can move (parameters with requires_grad): the space the pairs
        can span."""
        return sum(numel for numel, p in zip(self._numels, self._params) if p.requires_grad)

    def _rank_tol(self) -> float:
        tol = self.param_groups[0]["rank_tol"]
        return tol if tol is not None else 100.0 * torch.finfo(self._params[0].dtype).eps

    def _check_structure(self) -> None:
        """The settings the stored pairs depend on (see ``_STRUCTURAL``) may not change under
        them: refuse a step after one was edited in ``param_groups``."""
        group = self.param_groups[0]
        for key in _STRUCTURAL:
            if group[key] != self._structure[key]:
                raise ValueError(
                    f"LSR1: param_groups[0][{key!r}] is {group[key]!r}, but the optimizer's state (its "
                    f"curvature pairs) was built with {key}={self._structure[key]!r}; {key} cannot change "
                    "during a run: build a new LSR1 to use another value"
                )

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused after construction, as torch.optim.LBFGS refuses several groups: the
        curvature pairs span all parameters together."""
        if self.param_groups:
            raise ValueError(
                "LSR1 supports a single parameter group (like torch.optim.LBFGS, no per-parameter "
                "options): its curvature pairs span all parameters together, so no group can be added"
            )
        super().add_param_group(param_group)

    def statistics(self) -> dict[str, Any]:
        """Counters since construction (or the loaded state), and the last step's values:
        a plain dict of numbers. ``steps`` equals the sum of the ``OUTCOMES`` counters."""
        state = self._global_state()
        out: dict[str, Any] = state["stats"].as_dict()
        out["radius"] = state["radius"]
        for key in _LAST_KEYS:
            out[key] = state[key]
        out["last_step_length"] = state["last_step_length"]
        out["stored_pairs"] = len(state.get("order", []))
        out["method"] = self.param_groups[0]["method"]
        out.update(self._layout.statistics())
        return out

    def memory_bytes(self) -> int:
        """Bytes of the optimizer's own tensors on this rank (memory, Gram matrices, work
        buffers), as allocated so far."""
        tensors = [t for t in self._work.values()]
        for value in self.state[self._params[0]].values():
            if isinstance(value, Tensor):
                tensors.append(value)
        return sum(t.numel() * t.element_size() for t in tensors)

    def update_cosines(self, clear: bool = True) -> list[float]:
        """|s^T r| / (||s|| ||r||) of every SR1 skip test since the last call (r = y - B s, or
        s - H y for the line search), in order; the skip test stores a pair when this
        cosine is at least ``skip_tol``. Not part of the state dict."""
        values = list(self._cosines)
        if clear:
            self._cosines.clear()
        return values

    def curvature(self) -> CurvatureOperator:
        """The quasi-Newton model B = gamma I + Psi M Psi^T of the stored pairs, as an
        operator (a snapshot: later steps do not change it). For the line-search method it
        is the inverse of the H its directions use (same pairs, H0 = I / gamma). Its
        ``pairs()`` needs the s vectors, which the optimizer keeps only with
        ``keep_pairs=True``."""
        state = self._global_state()
        memory = self._memory(state)
        idx = torch.tensor(memory.order, dtype=torch.long, device=memory.buffer.device)

        def full_rows(buffer: Tensor) -> Tensor:  # a collective when sharded: every rank calls it
            return self._layout.full_rows(buffer)[:, : self._n].index_select(0, idx).clone()

        Psi = full_rows(memory.buffer)
        S = full_rows(memory.s_buffer) if memory.s_buffer is not None else None
        return CurvatureOperator(Psi, *memory.grams(), self.param_groups[0]["gamma"], S=S)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        saved0 = state_dict.get("state", {}).get(0)
        if saved0 is not None and "gram_ss" in saved0:
            # the format before issue 22 stored [S; Psi] and S^T S: keep what B reads
            saved0 = dict(saved0)
            m = saved0["gram_ss"].shape[0]
            both, gram_ss = saved0.pop("memory"), saved0.pop("gram_ss")
            saved0["memory"], saved0["ss_diag"] = both[m:], torch.diagonal(gram_ss).clone()
            if self.param_groups[0]["keep_pairs"]:
                saved0["pairs_s"] = both[:m]
            state_dict = {**state_dict, "state": {**state_dict["state"], 0: saved0}}
        saved_groups = state_dict.get("param_groups") or [{}]
        mine_group = self.param_groups[0]
        for key in _STRUCTURAL:
            if key in saved_groups[0] and saved_groups[0][key] != mine_group[key]:
                raise ValueError(
                    f"LSR1.load_state_dict: the state was made with {key}={saved_groups[0][key]!r}, "
                    f"this optimizer has {key}={mine_group[key]!r}; the stored pairs depend on {key}, "
                    f"so build the optimizer with {key}={saved_groups[0][key]!r} to load it"
                )
        saved_layout = state_dict.get("state", {}).get(0, {}).get("layout")
        if saved_layout is not None:
            mine = self._layout.describe()
            if any(saved_layout.get(key) != mine[key] for key in ("world_size", "sharded", "total", "lo", "hi")):
                raise ValueError(
                    f"LSR1.load_state_dict: this state was saved by rank {saved_layout.get('rank')} of "
                    f"{saved_layout.get('world_size')} ({'sharded' if saved_layout.get('sharded') else 'unsharded'}); "
                    f"this optimizer is rank {mine['rank']} of {mine['world_size']} "
                    f"({'sharded' if mine['sharded'] else 'unsharded'}). Move checkpoints between layouts "
                    "with full_state_dict() and load_full_state_dict()"
                )
        super().load_state_dict(state_dict)
        saved = state_dict["state"].get(0, {})
        state = self.state[self._params[0]]
        for key in _SMALL_KEYS:
            if key in saved:
                state[key] = saved[key].detach().to(device="cpu", dtype=torch.float64).clone()
        for key in ("memory", "pairs_s"):
            if key in state:
                # torch's cast is a no-op for a tensor already of the right dtype/device: no aliasing.
                state[key] = state[key].clone()
        if "order" in state:
            state["order"] = [int(i) for i in state["order"]]
        if "stats" in state:
            state["stats"] = Counters.from_dict(state["stats"])

    def state_dict(self) -> dict[str, Any]:
        """torch's state dict, with the counters as a plain dict of ints (so a checkpoint
        loads with ``torch.load(weights_only=True)``)."""
        sd = super().state_dict()
        entry = sd["state"].get(0)
        if entry is not None and isinstance(entry.get("stats"), Counters):
            sd["state"][0] = {**entry, "stats": entry["stats"].as_dict()}
        return sd

    def full_state_dict(self) -> dict[str, Any]:
        """The state in the one-process format (a collective when the memory is sharded):
        loads into ``LSR1`` with any number of ranks via ``load_full_state_dict``, and into a
        one-process ``LSR1`` with plain ``load_state_dict``."""
        import copy

        sd = self.state_dict()
        sd = {"state": copy.deepcopy(sd["state"]), "param_groups": copy.deepcopy(sd["param_groups"])}
        state = sd["state"].get(0)
        single = make_coordinates(self._n, 1, 0, False)
        for key in ("memory", "pairs_s"):
            if state is None or key not in state:
                continue
            state[key] = _resize_columns(self._layout.full_rows(state[key]), single.total)
        if state is not None:
            state["layout"] = single.describe()
        return sd

    def load_full_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``full_state_dict()`` (or a one-process ``state_dict()``) into this rank's
        layout: each rank keeps its slice of the memory's columns."""
        import copy

        sd = {"state": copy.copy(state_dict["state"]), "param_groups": copy.deepcopy(state_dict["param_groups"])}
        state = sd["state"].get(0)
        if state is not None:
            state = dict(state)
            sd["state"][0] = state
            layout = self._layout
            for key in ("memory", "pairs_s"):
                if key in state:
                    full = _resize_columns(state[key], layout.total)
                    state[key] = full[:, layout.lo : layout.hi].clone()
            state["layout"] = layout.describe()
        self.load_state_dict(sd)

    # --- the step -------------------------------------------------------------------------
    @torch.no_grad()
    def step(self, closure: Callable[[], Tensor] | None = None) -> Tensor:  # type: ignore[override]
        """One iteration of Algorithm 1 (or 2); returns the loss at the current point.

        ``closure`` must zero the gradients, compute the loss on a fixed minibatch, call
        ``backward()`` and return the loss; it is called at least twice per step.
        """
        if closure is None:
            raise RuntimeError(
                "LSR1.step needs a closure: it evaluates the loss and gradient at x and at "
                "the trial point on the same minibatch (see the class docstring)"
            )
        grad_closure = torch.enable_grad()(closure)
        state = self._global_state()
        self._check_structure()
        stats = state["stats"]
        stats.steps += 1
        syncs_before = self._layout.syncs
        outcomes_before = stats.outcomes()
        self._moved_from = None

        def evaluate(out: Tensor) -> tuple[Tensor, Tensor]:
            """Loss and gradient at the current parameters; the gradient goes into ``out``.
            The loss stays on the device (no host transfer here)."""
            loss = grad_closure()
            stats.closure_evaluations += 1
            self._layout.grad_into(self._params, out, self._views_of)
            if isinstance(loss, Tensor):
                value = loss.detach().reshape(())
            else:
                value = torch.tensor(float(loss), dtype=torch.float64, device=out.device)
            return loss, value

        g = self._pair_rows()[3]
        try:
            loss, f = evaluate(g)
            if self.param_groups[0]["method"] == "trust_region":
                self._trust_region_step(state, f, g, evaluate)
            else:
                self._line_search_step(state, f, g, evaluate)
        except BaseException:
            # The closure (or anything else) raised mid-step: put x back if the parameters
            # were moved to a trial point, count the step as aborted, and let it propagate.
            if self._moved_from is not None:
                self._load_params(self._moved_from)
                self._moved_from = None
            if stats.outcomes() == outcomes_before:
                stats.aborted_steps += 1
            raise
        finally:
            stats.host_syncs += self._layout.syncs - syncs_before
        return self._layout.step_loss(loss, self._step_loss, self._params[0].dtype)

    # --- pieces shared by both methods ------------------------------------------------------
    def _pair_rows(self) -> Tensor:
        """(4 x n) work rows: the step s (or direction), psi = y - gamma s, the gradient
        difference y and the gradient g at x, so [S; Psi]^T [s, psi] and the 4 x 4 Gram of
        (s, psi, y, g) are one product each."""
        rows = self._work.get("s_psi_y")
        if rows is None:
            first = self._params[0]
            rows = torch.zeros((4, self._layout.width), dtype=first.dtype, device=first.device)
            self._work["s_psi_y"] = rows
        return rows

    def _coefficients(self, c: Tensor, like: Tensor) -> Tensor:
        """float64 host coefficients -> the device, through a pinned buffer and a
        non-blocking copy on CUDA (no blocking transfer)."""
        if like.device.type != "cuda":
            return c.to(dtype=like.dtype)
        key = f"coefficients{c.numel()}"
        staging = self._work.get(key)
        if staging is None:
            staging = torch.empty(c.numel(), dtype=like.dtype, pin_memory=True)
            self._work[key] = staging
        staging.copy_(c)
        return staging.to(like.device, non_blocking=True)

    def _first_products(self, memory: CurvatureMemory, f: Tensor, g: Tensor) -> tuple[float, float, Tensor]:
        """Sync 1: the loss at x, g^T g and [S; Psi]^T g in one transfer (with a group: one
        all-reduce, which also carries the check that every rank's decisions agree)."""
        with exact_float32_matmul(g.device):
            gg = g.unsqueeze(0)
            state = self._global_state()
            digest = decision_digest(state["stats"].as_dict(), state["radius"], memory.k)
            parts = [f.reshape(1).to(SMALL), *self._layout.consistency_parts(digest, g.device)]
            parts.append(products(gg, gg).reshape(1))
            if memory.k > 0:
                parts.append(products(memory.buffer, gg).reshape(-1))
            first = self._layout.consistent(self._layout.gather(parts, means=1), 1, state["stats"].steps)
        self._step_loss = float(first[0])
        return float(first[0]), float(first[1]), first[2:]

    def _second_products(self, memory: CurvatureMemory, f_trial: Tensor | None, rows: Tensor, k: int):
        """Sync 2: [the loss at the trial point,] the 4 x 4 Gram of (s, psi, y, g) and
        [S; Psi]^T [s, psi] (one fused pass over the memory), in one transfer."""
        with exact_float32_matmul(rows.device):
            parts = [] if f_trial is None else [f_trial.reshape(1)]
            parts.append(products(rows, rows))
            if k > 0:
                parts.append(products(memory.buffer, rows[:2]))
            second = self._layout.gather(parts, means=0 if f_trial is None else 1)
        offset = 0 if f_trial is None else 1
        f_t = float(second[0]) if f_trial is not None else None
        gram = second[offset : offset + 16].reshape(4, 4)
        dots = {"ss": float(gram[0, 0]), "sp": float(gram[0, 1]), "sy": float(gram[0, 2]), "gs": float(gram[0, 3]),
                "pp": float(gram[1, 1]), "yy": float(gram[2, 2])}
        slots = memory.slots
        if k > 0:
            both = second[offset + 16 :].reshape(slots, 2)
            s_products, p_products = both[:, 0].clone(), both[:, 1].clone()
        else:
            s_products = p_products = torch.zeros(slots, dtype=torch.float64)
        return f_t, dots, s_products, p_products, bool(torch.isfinite(second).all())

    def _form_step(self, memory: CurvatureMemory, g: Tensor, beta: float, w: Tensor, out: Tensor) -> None:
        """out = beta g + Psi w: one pass over the memory (none without pairs)."""
        with exact_float32_matmul(g.device):
            if memory.k > 0:
                combine(memory.buffer, self._coefficients(memory.psi_combination(w), g), out, base=g, beta=beta)
            else:
                torch.mul(g, beta, out=out)

    def _drop_after_breakdown(self, memory: CurvatureMemory, stats: Counters) -> None:
        """A k x k factorisation failed or gave non-finite values: drop the oldest pair."""
        stats.linalg_failures += 1
        memory.drop_oldest()
        stats.dropped_pairs += 1

    # --- Algorithm 1 --------------------------------------------------------------------------
    def _trust_region_step(self, state: dict, f_device: Tensor, g: Tensor, evaluate) -> None:
        """Algorithm 1, one iteration, as its phases: reduce at x, solve (and form s), trial,
        reduce at the trial point, decide, store."""
        settings, stats = self.param_groups[0], state["stats"]
        memory = self._memory(state)
        at_x = self._reduce_at_x(memory, f_device, g)
        if at_x is None:
            stats.nonfinite_points += 1
            state["last_rho"] = None
            return
        radius = self._radius(state, at_x.gg)
        rows = self._pair_rows()
        model = self._solve_for_step(state, memory, g, at_x.gg, at_x.g_products, radius, rows[0])
        if model is None:
            return
        x_saved = self._trial(evaluate, rows, g, settings["gamma"])
        at_trial = self._reduce_at_trial(memory, f_device, rows, model)
        if at_trial.finite and at_trial.f == at_x.f and at_trial.dots["yy"] == 0.0:
            # x + s rounded to x (same loss, same gradient): nothing to decide or learn.
            stats.negligible_steps += 1
            self._restore(x_saved)
            state["last_rho"] = None
            return
        ss = at_trial.dots["ss"]
        pred = -math.inf
        if at_trial.finite:
            # pred of the s that was applied, from its own products (no cancellation between
            # derived terms)
            pred = model_decrease(at_trial.dots["gs"], ss, at_trial.psi_s, model.m_inv, settings["gamma"])
            state["last_pred"] = pred
            stats.pred_sign_changes += int(not pred > 0.0)  # rounded away: the step is refused
        step_norm = math.sqrt(ss) if at_trial.finite else math.sqrt(model.ss_model)
        f_trial = at_trial.f if at_trial.finite else math.inf
        decision = decide(at_x.f, f_trial, pred, step_norm, radius, settings)
        state["last_rho"] = decision.rho if at_trial.finite else None
        state["last_step_norm"] = step_norm
        if decision.accepted:
            stats.accepted_steps += 1
            self._moved_from = None
        else:
            stats.rejected_steps += 1
            self._restore(x_saved)
        state["radius"] = decision.radius
        if not at_trial.finite:
            stats.nonfinite_trials += 1
            rows.zero_()  # never leave inf/nan in the work rows
            return
        self._store(state, memory, model, at_trial, rows, g)

    # --- the trust-region step's phases --------------------------------------------------------
    def _reduce_at_x(self, memory: CurvatureMemory, f_device: Tensor, g: Tensor) -> _AtX | None:
        """Sync 1 (see ``_first_products``); None when f, g^T g or Psi^T g is not finite."""
        f, gg, g_products = self._first_products(memory, f_device, g)
        if not (math.isfinite(f) and math.isfinite(gg) and bool(torch.isfinite(g_products).all())):
            return None
        return _AtX(f, gg, g_products)

    def _radius(self, state: dict, gg: float) -> float:
        """The trust-region radius; the first step's is ``initial_radius`` or ||g||."""
        if state["radius"] is None:
            initial = self.param_groups[0]["initial_radius"]
            state["radius"] = initial if initial is not None else math.sqrt(gg)
            if not state["radius"] > 0:
                state["radius"] = 1.0
        return state["radius"]

    def _trial(self, evaluate, rows: Tensor, g: Tensor, gamma: float) -> Tensor:
        """x + s on the same minibatch: save x (full length on every rank, so a rejected
        step restores it without a collective), move, evaluate; rows get y = g(x + s) - g
        and psi = y - gamma s. Returns the saved x."""
        s, psi, y = rows[0], rows[1], rows[2]
        x_saved = self._buffer("x")
        self._save_params(x_saved)
        self._moved_from = x_saved
        self._add_to_params(self._full(s, "step"))
        _, self._f_trial = evaluate(y)
        y.sub_(g)
        torch.add(y, s, alpha=-gamma, out=psi)
        return x_saved

    def _reduce_at_trial(self, memory: CurvatureMemory, f_device: Tensor, rows: Tensor, model: _StepModel) -> _AtTrial:
        """Sync 2 (see ``_second_products``), with Psi^T s and Psi^T psi in logical order."""
        f_t, dots, s_products, p_products, finite = self._second_products(memory, self._f_trial, rows, model.k)
        finite = finite and math.isfinite(f_t)
        psi_s = memory.split(s_products) if model.k > 0 else _NO_PAIRS
        psi_psi = memory.split(p_products) if model.k > 0 else _NO_PAIRS
        return _AtTrial(f_t, dots, s_products, p_products, psi_s, psi_psi, finite)

    def _restore(self, x_saved: Tensor) -> None:
        self._load_params(x_saved)
        self._moved_from = None

    def _store(self, state: dict, memory: CurvatureMemory, model: _StepModel, at_trial: _AtTrial, rows: Tensor,
               g: Tensor) -> None:
        """The SR1 skip test |s^T (y - B s)| >= r ||s|| ||y - B s|| with B the model of this
        step (y - B s = psi - Psi M Psi^T s), then the pair policy."""
        gamma, stats = self.param_groups[0]["gamma"], state["stats"]
        s, psi = rows[0], rows[1]
        dots, ss, k = at_trial.dots, at_trial.dots["ss"], model.k
        eps = torch.finfo(s.dtype).eps
        s_dot_r, r_sq, size = residual(dots["sp"], dots["pp"], ss, at_trial.psi_psi, at_trial.psi_s,
                                       model.psi_gram, model.m_inv, 0.0)
        if r_sq <= CANCELLATION_GUARD * eps * size:
            # y - B s is small next to psi: form it explicitly (cancellation).
            r = self._local("r")
            w_s = torch.linalg.solve(model.m_inv, at_trial.psi_s) if k > 0 else _NO_PAIRS
            with exact_float32_matmul(s.device):
                combine(memory.buffer, self._coefficients(memory.psi_combination(-w_s), g), r, base=psi)
                sr_rr = self._layout.gather([products(r.unsqueeze(0), torch.stack([s, r])).reshape(2)])
            s_dot_r, r_sq = float(sr_rr[0]), float(sr_rr[1])
            stats.explicit_passes += 1
        self._maybe_store_pair(
            state, memory, s, psi, at_trial.s_products, at_trial.p_products, (ss, dots["sp"], dots["pp"]), s_dot_r,
            math.sqrt(max(r_sq, 0.0)), math.sqrt(dots["yy"]), math.sqrt(ss),
            lambda: memory.b_policy_inputs(gamma),
        )

    def _solve_for_step(self, state: dict, memory: CurvatureMemory, g: Tensor, gg: float, g_products: Tensor,
                        radius: float, s: Tensor) -> _StepModel | None:
        """Solve this step's trust-region subproblem and form its s (in ``s``); return the
        model it was solved with and ||s||^2 as the solve measured it, or None when the model
        predicts no decrease (no trial point).

        A model that predicts no decrease while g != 0 is inconsistent: it drops its oldest
        pair and is solved again, so the optimizer cannot stall on the same pairs."""
        stats = state["stats"]
        gamma = self.param_groups[0]["gamma"]
        eps = torch.finfo(g.dtype).eps
        device = g.device
        reducer = self._layout
        empty = _NO_PAIRS
        while True:  # until the model predicts a decrease (or no pair is left)
            solved = self._solve_subproblem(memory, stats, g, gg, g_products, radius, s)
            k, psi_gram, m_inv, spectral, psi_g, u, solution, explicit_perp = solved
            state["last_solve_radius"] = radius
            # s = beta (g - Psi u) + Psi c_par (+ perp_unit z in the hard case) = beta g + Psi w.
            beta = solution.perp_scale
            w = spectral.psi_coefficients(solution.par) - beta * u
            clamped = False
            if not (explicit_perp or solution.perp_unit != 0.0):
                # ||s||^2, g^T s and Psi^T s of the vector s = beta g + Psi w itself, from g^T g,
                # Psi^T g and Psi^T Psi: no inverse enters, so they hold to the accuracy of those
                # products even when Psi is ill-conditioned and the solver's eigenbasis is not
                # exactly orthonormal in float32.
                g_w = float(w @ psi_g) if k > 0 else 0.0
                gram_w = psi_gram @ w if k > 0 else empty
                ss_model = beta * beta * gg + 2.0 * beta * g_w + (float(w @ gram_w) if k > 0 else 0.0)
                # Rounding bound of ss_model: each product over n carries a relative error of
                # about sqrt(n) eps of its own size, and the terms may cancel.
                size = beta * beta * gg
                if k > 0:
                    size += 2.0 * abs(beta) * float((w.abs() * psi_g.abs()).sum())
                    size += float(w.abs() @ psi_gram.abs() @ w.abs())
                margin = 4.0 * math.sqrt(min(self._n, CHUNK)) * eps * size
                if ss_model + margin > radius * radius:  # keep s inside the trust region
                    factor = radius / math.sqrt(ss_model + margin)
                    beta, w, gram_w, g_w = beta * factor, w * factor, gram_w * factor, g_w * factor
                    # ||s||^2 of the scaled step, not radius^2: the margin may be a sizable
                    # part of ||s||^2 (large w over an ill-conditioned Psi), and pred's
                    # gamma ||s||^2 can nearly cancel against (Psi^T s)^T M (Psi^T s)
                    # where the pairs saw almost no curvature (y ~ 0): counting radius^2
                    # there turned pred negative and froze issue 10's batch-10000 run.
                    # counted only beyond the margin: within it the scaling is rounding only
                    clamped = ss_model > radius * radius + margin
                    ss_model = ss_model * factor * factor
                gs_model = beta * gg + g_w
                psi_s = beta * psi_g + gram_w if k > 0 else empty
                self._form_step(memory, g, beta, w, s)
            else:
                # Rare paths (g mostly in range(Psi), or the hard case): form s, then measure it.
                self._form_step(memory, g, beta, w, s)
                if solution.perp_unit != 0.0:
                    z = self._unit_orthogonal_to_psi(memory, spectral, gamma, stats.steps, self._local("r"))
                    s.add_(z, alpha=solution.perp_unit)
                with exact_float32_matmul(device):
                    parts = [products(s.unsqueeze(0), torch.stack([s, g])).reshape(2)]
                    if k > 0:
                        parts.append(products(memory.buffer, s.unsqueeze(0)).reshape(-1))
                    measured = reducer.gather(parts)
                stats.explicit_passes += 1
                ss_model, gs_model = float(measured[0]), float(measured[1])
                if k > 0:
                    psi_s = memory.split(measured[2:])
                else:
                    psi_s = empty
                if ss_model > radius * radius:
                    factor = radius / math.sqrt(ss_model)
                    s.mul_(factor)
                    clamped = ss_model > radius * radius * (1.0 + CANCELLATION_GUARD * eps)
                    ss_model, gs_model, psi_s = radius * radius, gs_model * factor, psi_s * factor
            pred = model_decrease(gs_model, ss_model, psi_s, m_inv, gamma)
            state["last_pred"] = state["last_model_pred"] = pred
            # an inconsistent model is solved again below; only the solve the step ends with
            # is counted, so these counters are per step
            if not (memory.k > 0 and gg > 0.0 and not (pred > 0.0 and math.isfinite(pred))):
                stats.newton_iterations += solution.newton_iterations
                stats.newton_unconverged += int(not solution.converged)
                stats.hard_cases += int(solution.hard_case)
                stats.negative_curvature_steps += int(spectral.lambda_min < 0.0)
                stats.step_clamps += int(clamped)
            if not (pred > 0.0 and math.isfinite(pred)):
                if memory.k > 0 and gg > 0.0:
                    # The trust-region minimiser of a consistent model decreases it whenever
                    # g != 0; a step that does not means the pairs' k x k algebra has broken
                    # down (near-singular M^{-1} or Psi^T Psi that the pair policy let
                    # through). Keeping the pairs would repeat this at every step (the state
                    # would never change), so drop the oldest and solve again.
                    stats.inconsistent_models += 1
                    memory.drop_oldest()
                    stats.dropped_pairs += 1
                    continue
                # g = 0 with B positive semidefinite, or rounding: the model predicts no decrease.
                stats.nonpositive_pred += 1
                state["last_rho"] = None
                return None
            return _StepModel(k, psi_gram, m_inv, ss_model)

    def _solve_subproblem(self, memory: CurvatureMemory, stats: Counters, g: Tensor, gg: float, g_products: Tensor,
                          radius: float, s: Tensor) -> _Solved:
        """The k x k algebra of this step's model and its trust-region subproblem's solution;
        a factorisation that fails (or gives non-finite values) drops the oldest pair and tries
        again. ``s`` may be used as work space (g_perp formed explicitly)."""
        gamma = self.param_groups[0]["gamma"]
        eps = torch.finfo(g.dtype).eps
        device = g.device
        reducer = self._layout
        empty = _NO_PAIRS
        while True:
            k = memory.k
            try:
                psi_gram, m_inv = memory.b_factors(gamma)
                spectral = spectral_form(psi_gram, m_inv, gamma, complete=k >= self._trainable_numel())
                psi_g = memory.split(g_products) if k > 0 else empty
                g_par = spectral.parallel_coordinates(psi_g)
                u = spectral.psi_coefficients(g_par)  # Psi u = P_par g_par
                if not (bool(torch.isfinite(g_par).all()) and bool(torch.isfinite(u).all())):
                    raise _Breakdown
                par_sq = float((g_par**2).sum())
                # gg - par_sq loses to cancellation only the digits the products lack
                # (chunked float64 sums); form g_perp explicitly when that leaves too few.
                explicit_perp = par_sq > (1.0 - CANCELLATION_GUARD * eps) * gg
                if not explicit_perp:
                    g_perp_sq = gg - par_sq  # at most one bit lost to cancellation
                else:  # g lies mostly in range(Psi): form g_perp = g - Psi u explicitly
                    with exact_float32_matmul(device):
                        combine(memory.buffer, self._coefficients(memory.psi_combination(-u), g), s, base=g)
                        g_perp_sq = float(reducer.dots([(s, s)])[0])
                    stats.explicit_passes += 1
                solution = solve_subproblem(
                    spectral, g_par, math.sqrt(max(g_perp_sq, 0.0)), radius,
                    zero_tol=100.0 * eps * math.sqrt(gg),
                )
                if not (math.isfinite(solution.model_value) and math.isfinite(solution.perp_scale)):
                    raise _Breakdown
                return _Solved(k, psi_gram, m_inv, spectral, psi_g, u, solution, explicit_perp)
            except (torch.linalg.LinAlgError, _Breakdown):
                if k == 0:
                    raise
                self._drop_after_breakdown(memory, stats)

    def _maybe_store_pair(
        self, state, memory, s, psi, s_products, p_products, diag, numerator, residual_norm,
        reference_norm, other_norm, factors,
    ) -> None:
        """Append (s, y) unless the SR1 skip test says not to; then apply the pair policy.

        The paper's test: store when |numerator| >= r * other_norm * residual_norm, where
        the residual is y - B s (numerator s^T r) or, for the line search, s - H y
        (numerator y^T r). With ``skip_noise_floor`` (not the paper's) a residual at the
        rounding level of ``reference_norm`` (||y||, or ||s||) is also skipped.
        """
        stats = state["stats"]
        stats.skip_tests += 1
        denominator = other_norm * residual_norm
        cosine = abs(numerator) / denominator if denominator > 0.0 else 0.0
        state["last_update_cosine"] = cosine
        self._cosines.append(cosine)
        # a zero denominator (s = 0, or y = B s exactly) leaves the SR1 update undefined: skip
        skip = not (denominator > 0.0 and abs(numerator) >= self.param_groups[0]["skip_tol"] * denominator)
        if self.param_groups[0]["skip_noise_floor"]:
            skip = skip or residual_norm <= 100.0 * torch.finfo(s.dtype).eps * reference_norm
        if skip:
            stats.skipped_updates += 1
            return
        memory.append(s, psi, s_products, p_products, diag)
        tol = self._rank_tol()
        # Only the trust region factors Psi^T Psi (Cholesky); the line search needs N^{-1} alone.
        check_gram = self.param_groups[0]["method"] == "trust_region"
        scaled = self.param_groups[0]["pair_policy"] == "scaled"
        while memory.k > 0:
            if well_posed(*factors(), tol, check_gram=check_gram, scaled=scaled):
                break
            memory.drop_oldest()
            stats.dropped_pairs += 1

    def _unit_orthogonal_to_psi(self, memory, spectral, gamma: float, seed: int, out: Tensor) -> Tensor:
        """A unit vector orthogonal to range(Psi): the hard case with lambda_min = gamma."""
        generator = torch.Generator(device=out.device).manual_seed(1_000_003 + seed)
        full = torch.randn(self._layout.total, generator=generator, device=out.device, dtype=out.dtype)
        full[self._n :] = 0.0  # the padding stays zero
        for piece, p in zip(torch.split(full[: self._n], self._numels), self._params):
            if not p.requires_grad:  # frozen parameters never move, hard cases included
                piece.zero_()
        out.copy_(full[self._layout.lo : self._layout.hi])
        with exact_float32_matmul(out.device):
            if memory.k > 0:
                psi_v = memory.split(self._layout.rows(memory.buffer, out))
                u = spectral.psi_coefficients(spectral.parallel_coordinates(psi_v))
                combine(memory.buffer, self._coefficients(memory.psi_combination(-u), out), out)
            norm_sq = float(self._layout.dots([(out, out)])[0])
        if norm_sq > 0.0:
            out.div_(math.sqrt(norm_sq))
        # else range(Psi) holds every trainable coordinate: no such z; out is zero
        return out

    # --- Algorithm 2 --------------------------------------------------------------------------
    def _line_search_step(self, state: dict, f_device: Tensor, g: Tensor, evaluate) -> None:
        """Algorithm 2, one iteration, as its phases: reduce at x, direction, search, reduce
        at the new point, store."""
        stats = state["stats"]
        memory = self._memory(state)
        at_x = self._reduce_at_x(memory, f_device, g)
        state["last_rho"] = None
        if at_x is None:
            stats.nonfinite_points += 1
            return
        if at_x.gg == 0.0:  # a stationary point: no descent direction exists
            stats.nonpositive_pred += 1
            state["last_pred"] = 0.0
            return
        rows = self._pair_rows()
        inverse, slope = self._direction(state, memory, g, at_x, rows[0])
        result, x_saved, views = self._search(state, evaluate, rows, at_x.f, slope)
        state["last_pred"] = -result.alpha * slope
        if result.alpha <= 0.0:
            stats.rejected_steps += 1
            self._restore(x_saved)
            rows.zero_()
            return
        if not result.last_is_alpha:
            self._line_point(evaluate, rows, views, result.alpha)
        self._moved_from = None
        stats.accepted_steps += 1
        state["last_step_length"] = result.alpha
        gamma = self.param_groups[0]["gamma"]
        y = rows[2].sub_(g)
        s = rows[0].mul_(result.alpha)  # s = alpha d
        torch.add(y, s, alpha=-gamma, out=rows[1])
        _, dots, s_products, p_products, finite = self._second_products(memory, None, rows, inverse.k)
        if not finite:
            stats.nonfinite_trials += 1
            rows.zero_()
            return
        self._store_inverse(state, memory, inverse, rows, g, dots, s_products, p_products)

    # --- the line search's phases ---------------------------------------------------------------
    def _direction(self, state: dict, memory: CurvatureMemory, g: Tensor, at_x: _AtX,
                   direction: Tensor) -> tuple[_InverseModel, float]:
        """d = -H g into ``direction`` (-g when that is no descent direction); returns the
        inverse model it used and the slope g^T d. A k x k failure drops the oldest pair."""
        stats = state["stats"]
        delta = 1.0 / self.param_groups[0]["gamma"]
        while True:
            k = memory.k
            try:
                phi_gram, n_inv = memory.h_factors(delta)
                if k > 0:
                    phi_g = -delta * memory.split(at_x.g_products)  # Phi^T g, Phi = -delta Psi
                    c = torch.linalg.solve(n_inv, phi_g)  # N Phi^T g
                    if not bool(torch.isfinite(c).all()):
                        raise _Breakdown
                break
            except (torch.linalg.LinAlgError, _Breakdown):
                self._drop_after_breakdown(memory, stats)
        complete = k >= self._trainable_numel()
        stats.negative_curvature_steps += int(_has_negative_eigenvalue(phi_gram, n_inv, delta, complete))
        fallback = True
        if k > 0:
            # d = -H g = -delta g - Phi c = -delta g + delta Psi c
            with exact_float32_matmul(g.device):
                combine(memory.buffer, self._coefficients(memory.psi_combination(delta * c), g), direction,
                        base=g, beta=-delta)
            slope = -delta * at_x.gg - float(phi_g @ c)
            fallback = not slope < 0.0
            stats.descent_fallbacks += int(fallback)
        if fallback:
            torch.neg(g, out=direction)
            slope = -at_x.gg
        return _InverseModel(k, phi_gram, n_inv, delta), slope

    def _line_point(self, evaluate, rows: Tensor, views: tuple[list[Tensor], list[Tensor]],
                    alpha: float) -> tuple[float, float]:
        """(f, g^T d) at x + alpha d (the gradient into the y row): one closure call, one sync.
        ``views``: per-parameter views of the saved x and of the full direction."""
        direction, y = rows[0], rows[2]
        torch._foreach_copy_(self._params, views[0])
        torch._foreach_add_(self._params, views[1], alpha=alpha)
        _, f_a = evaluate(y)
        values = self._layout.gather(
            [f_a.reshape(1), products(y.unsqueeze(0), direction.unsqueeze(0)).reshape(1)], means=1
        )
        return float(values[0]), float(values[1])

    def _search(self, state: dict, evaluate, rows: Tensor, f: float, slope: float):
        """The step length along d (strong Wolfe or Armijo), from min(1, 2 alpha_prev);
        returns the search's result, the saved x and the views ``_line_point`` moves along."""
        settings, stats = self.param_groups[0], state["stats"]
        x_saved = self._buffer("x")
        self._save_params(x_saved)
        self._moved_from = x_saved
        views = (self._views_of(x_saved), self._views_of(self._full(rows[0], "step")))  # one all-gather

        def phi(alpha: float) -> tuple[float, float]:
            return self._line_point(evaluate, rows, views, alpha)

        alpha0 = min(1.0, 2.0 * state["last_step_length"]) if stats.steps > 1 else 1.0
        budget = settings["max_line_search_evaluations"]
        if settings["line_search"] == "strong_wolfe":
            result = strong_wolfe(phi, f, slope, alpha0, c1=settings["c1"], c2=settings["c2"], max_evaluations=budget)
        else:
            result = armijo_backtracking(phi, f, slope, alpha0, c1=settings["c1"], max_evaluations=budget)
        stats.line_search_evaluations += result.evaluations
        return result, x_saved, views

    def _store_inverse(self, state: dict, memory: CurvatureMemory, inverse: _InverseModel, rows: Tensor,
                       g: Tensor, dots: dict, s_products: Tensor, p_products: Tensor) -> None:
        """The inverse skip test |y^T (s - H y)| >= r ||y|| ||s - H y||, then the pair policy."""
        stats, gamma = state["stats"], self.param_groups[0]["gamma"]
        s, psi, y = rows[0], rows[1], rows[2]
        k, delta = inverse.k, inverse.delta
        eps = torch.finfo(s.dtype).eps
        ss, sy, yy = dots["ss"], dots["sy"], dots["yy"]
        state["last_step_norm"] = math.sqrt(ss)
        if k > 0:
            psi_s = memory.split(s_products)
            psi_y = memory.split(p_products) + gamma * psi_s  # Psi^T y = Psi^T psi + gamma Psi^T s
            basis_s, basis_y = -delta * psi_s, -delta * psi_y  # Phi^T s, Phi^T y
        else:
            basis_s = basis_y = _NO_PAIRS
        y_dot_r, r_sq, size = residual(sy, ss, yy, basis_s, basis_y, inverse.phi_gram, inverse.n_inv, delta)
        if r_sq <= CANCELLATION_GUARD * eps * size:
            # s - H y = s - delta y - Phi N Phi^T y = s - delta y + delta Psi (N Phi^T y)
            r = self._local("r")
            w_y = torch.linalg.solve(inverse.n_inv, basis_y) if k > 0 else _NO_PAIRS
            with exact_float32_matmul(s.device):
                combine(memory.buffer, self._coefficients(memory.psi_combination(delta * w_y), g), r, base=s)
                r.add_(y, alpha=-delta)
                yr_rr = self._layout.gather([products(r.unsqueeze(0), torch.stack([y, r])).reshape(2)])
            y_dot_r, r_sq = float(yr_rr[0]), float(yr_rr[1])
            stats.explicit_passes += 1
        self._maybe_store_pair(
            state, memory, s, psi, s_products, p_products, (ss, dots["sp"], dots["pp"]), y_dot_r,
            math.sqrt(max(r_sq, 0.0)), math.sqrt(ss), math.sqrt(yy),
            lambda: memory.h_policy_inputs(delta),
        )


class _InverseModel(NamedTuple):
    """The line search's H = delta I + Phi N Phi^T of k pairs (Phi^T Phi, N^{-1})."""

    k: int
    phi_gram: Tensor
    n_inv: Tensor
    delta: float


class _Solved(NamedTuple):
    """One step's model and the solution of its trust-region subproblem."""

    k: int
    psi_gram: Tensor
    m_inv: Tensor
    spectral: Any
    psi_g: Tensor
    u: Tensor
    solution: Any
    explicit_perp: bool


class _AtX(NamedTuple):
    """What the step knows at x after its first sync: f, g^T g and Psi^T g (slot order)."""

    f: float
    gg: float
    g_products: Tensor


class _AtTrial(NamedTuple):
    """What the step knows at x + s after its second sync."""

    f: float | None  # the loss at x + s (averaged over a group)
    dots: dict  # the 4 x 4 Gram of (s, psi, y, g), by name (ss, sp, sy, gs, pp, yy)
    s_products: Tensor  # Psi^T s, slot order
    p_products: Tensor  # Psi^T psi, slot order
    psi_s: Tensor  # Psi^T s, oldest pair first
    psi_psi: Tensor  # Psi^T psi, oldest pair first
    finite: bool


class _StepModel(NamedTuple):
    """The model a step was solved with (k pairs, Psi^T Psi, M^{-1}) and its ||s||^2."""

    k: int
    psi_gram: Tensor
    m_inv: Tensor
    ss_model: float


class _Breakdown(Exception):
    """The k x k algebra produced non-finite values."""


def _has_negative_eigenvalue(gram: Tensor, middle_inv: Tensor, scale: float, complete: bool = False) -> bool:
    """Whether scale I + Omega W Omega^T (W = middle_inv^{-1}, Omega^T Omega = gram) has a
    negative eigenvalue; False when the factors cannot be formed. ``complete``: Omega's
    columns span the whole space, so ``scale`` is no eigenvalue."""
    if scale < 0.0 and not complete:
        return True
    if gram.shape[0] == 0:
        return False
    try:
        return spectral_form(gram, middle_inv, scale, complete=complete).lambda_min < 0.0
    except torch.linalg.LinAlgError:
        return False


def _resize_columns(matrix: Tensor, width: int) -> Tensor:
    """``matrix`` with its columns cut or zero-padded to ``width`` (padding columns are zero)."""
    if matrix.shape[1] >= width:
        return matrix[:, :width].clone()
    out = matrix.new_zeros((matrix.shape[0], width))
    out[:, : matrix.shape[1]] = matrix
    return out
