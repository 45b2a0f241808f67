"""L-SR1: limited-memory symmetric rank one, with a trust region or a line search."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._compact import CurvatureMemory, padded_length
from ._counters import OUTCOMES, Counters
from ._distributed import make_coordinates
from ._layout import LocalLayout, make_layout
from ._ls_step import line_search_step
from ._tr_step import trust_region_step
from ._trust_region import MIN_RADIUS
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
            # the older format stored [S; Psi] and S^T S: keep what B reads
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

        def evaluate(out: Tensor, minus: Tensor | None = None) -> tuple[Tensor, Tensor]:
            """Loss and gradient at the current parameters; the gradient (less ``minus``, if
            given) goes into ``out``. The loss stays on the device (no host transfer here)."""
            loss = grad_closure()
            stats.closure_evaluations += 1
            if minus is None:
                self._layout.grad_into(self._params, out, self._views_of)
            else:
                self._layout.grad_minus_into(self._params, out, minus, self._views_of)
            if isinstance(loss, Tensor):
                value = loss.detach().reshape(())
            else:
                value = torch.tensor(float(loss), dtype=torch.float64, device=out.device)
            return loss, value

        g = self._pair_rows()[3]
        try:
            loss, f = evaluate(g)
            if self.param_groups[0]["method"] == "trust_region":
                trust_region_step(self, state, f, g, evaluate)
            else:
                line_search_step(self, state, f, g, evaluate)
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
        difference y and the gradient g at x, so Psi^T [s, psi] and the 4 x 4 Gram of
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


    # --- Algorithm 1 --------------------------------------------------------------------------

    # --- the trust-region step's phases --------------------------------------------------------


    def _restore(self, x_saved: Tensor) -> None:
        self._load_params(x_saved)
        self._moved_from = None


    # --- Algorithm 2 --------------------------------------------------------------------------

    # --- the line search's phases ---------------------------------------------------------------


def _resize_columns(matrix: Tensor, width: int) -> Tensor:
    """``matrix`` with its columns cut or zero-padded to ``width`` (padding columns are zero)."""
    if matrix.shape[1] >= width:
        return matrix[:, :width].clone()
    out = matrix.new_zeros((matrix.shape[0], width))
    out[:, : matrix.shape[1]] = matrix
    return out
