"""L-SR1: limited-memory symmetric rank one, with a trust region or a line search."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._compact import CurvatureMemory, Reducer, combine, exact_float32_matmul, residual, well_posed
from ._line_search import armijo_backtracking, strong_wolfe
from ._trust_region import solve_subproblem, spectral_form

_METHODS = ("trust_region", "line_search")
_LINE_SEARCHES = ("strong_wolfe", "armijo")
# Keys of the global state that hold float64 CPU tensors; torch's load_state_dict would
# cast them to the parameters' dtype and device, so they are restored after it.
_SMALL_KEYS = ("gram_ss", "gram_sy", "gram_yy")

_STAT_KEYS = (
    "steps",
    "accepted_steps",
    "rejected_steps",
    "skipped_updates",
    "dropped_pairs",
    "closure_evaluations",
    "hard_cases",
    "newton_iterations",
    "descent_fallbacks",
    "line_search_evaluations",
    "nonfinite_trials",
)


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

    Cost: memory ``param_bytes * (2m + 4)``: S and Y in one (2m x n) ring buffer, plus
    the gradient, the trial gradient difference y, the step s and a saved copy of x (so a
    rejected step restores x bit for bit). Time per step: three passes over the ring
    buffer (Psi^T g, the step s = beta g + Psi w, and the Gram row of y) plus about
    eighteen O(n) vector passes and O(m^3) float64 work on k x k matrices; the Gram row of
    s and the SR1 residual y - B s come from k x k algebra. A fourth pass forms g_perp or
    y - B s explicitly, only when cancellation would make the algebraic value inaccurate
    (g mostly in range(Psi), or y - B s small next to y). All reductions over the n
    parameters go through one ``Reducer``, so a data-parallel version shards S and Y and
    all-reduces only k-vectors.
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
        line_search: str = "strong_wolfe",
        c1: float = 1e-4,
        c2: float = 0.9,
        max_line_search_evaluations: int = 10,
    ) -> None:
        if method not in _METHODS:
            raise ValueError(f"Invalid method: {method!r} (expected one of {_METHODS})")
        if isinstance(memory, bool) or not isinstance(memory, int) or memory < 1:
            raise ValueError(f"Invalid memory: {memory!r} (expected an integer >= 1)")
        if not (isinstance(gamma, (int, float)) and math.isfinite(gamma) and gamma != 0):
            raise ValueError(f"Invalid gamma: {gamma!r} (expected a finite nonzero number)")
        if initial_radius is not None and not (math.isfinite(initial_radius) and initial_radius > 0):
            raise ValueError(f"Invalid initial_radius: {initial_radius!r} (expected > 0 or None)")
        if max_radius is not None and not (max_radius > 0):
            raise ValueError(f"Invalid max_radius: {max_radius!r} (expected > 0 or None)")
        if not 0.0 <= eta < 1.0:
            raise ValueError(f"Invalid eta: {eta!r} (expected 0 <= eta < 1)")
        if not 0.0 <= skip_tol < 1.0:
            raise ValueError(f"Invalid skip_tol: {skip_tol!r} (expected 0 <= skip_tol < 1)")
        if not radius_increase >= 1.0:
            raise ValueError(f"Invalid radius_increase: {radius_increase!r} (expected >= 1)")
        if not 0.0 < radius_decrease < 1.0:
            raise ValueError(f"Invalid radius_decrease: {radius_decrease!r} (expected 0 < value < 1)")
        if not 0.0 <= decrease_threshold < increase_threshold:
            raise ValueError(
                f"Invalid thresholds: decrease_threshold={decrease_threshold!r} must be >= 0 and "
                f"below increase_threshold={increase_threshold!r}"
            )
        if not 0.0 < boundary_fraction <= 1.0:
            raise ValueError(f"Invalid boundary_fraction: {boundary_fraction!r} (expected 0 < value <= 1)")
        if rank_tol is not None and not 0.0 < rank_tol < 1.0:
            raise ValueError(f"Invalid rank_tol: {rank_tol!r} (expected 0 < value < 1 or None)")
        if line_search not in _LINE_SEARCHES:
            raise ValueError(f"Invalid line_search: {line_search!r} (expected one of {_LINE_SEARCHES})")
        if not 0.0 < c1 < c2 < 1.0:
            raise ValueError(f"Invalid line search constants: c1={c1!r}, c2={c2!r} (expected 0 < c1 < c2 < 1)")
        if not isinstance(max_line_search_evaluations, int) or max_line_search_evaluations < 1:
            raise ValueError(f"Invalid max_line_search_evaluations: {max_line_search_evaluations!r}")
        defaults = dict(
            method=method, memory=memory, gamma=float(gamma), initial_radius=initial_radius, eta=eta,
            skip_tol=skip_tol, radius_increase=radius_increase, radius_decrease=radius_decrease,
            increase_threshold=increase_threshold, decrease_threshold=decrease_threshold,
            boundary_fraction=boundary_fraction, max_radius=max_radius, rank_tol=rank_tol,
            line_search=line_search, c1=c1, c2=c2,
            max_line_search_evaluations=max_line_search_evaluations,
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
        self._reducer = Reducer()
        self._work: dict[str, Tensor] = {}
        self._views: dict[tuple[int, torch.device], list[Tensor]] = {}

    # --- flat work buffers and their per-parameter views ----------------------------------
    def _views_of(self, flat: Tensor) -> list[Tensor]:
        """Per-parameter views of a flat n-vector, cached by storage address."""
        key = (flat.data_ptr(), flat.device)
        views = self._views.get(key)
        if views is None:
            if len(self._views) > 64:  # buffers were replaced (e.g. a loaded state): start over
                self._views.clear()
            views = [v.view_as(p) for v, p in zip(torch.split(flat, self._numels), self._params)]
            self._views[key] = views
        return views

    def _buffer(self, name: str) -> Tensor:
        buf = self._work.get(name)
        if buf is None:
            first = self._params[0]
            buf = torch.empty(self._n, dtype=first.dtype, device=first.device)
            self._work[name] = buf
        return buf

    def _gather_grad(self, out: Tensor) -> Tensor:
        views = self._views_of(out)
        grads = [p.grad for p in self._params]
        if any(g is None for g in grads):
            for view, grad in zip(views, grads):
                if grad is None:
                    view.zero_()
            pairs = [(v, g) for v, g in zip(views, grads) if g is not None]
            if pairs:
                torch._foreach_copy_([v for v, _ in pairs], [g for _, g in pairs])
        else:
            if any(g.is_sparse for g in grads):
                raise RuntimeError("LSR1 does not support sparse gradients")
            torch._foreach_copy_(views, grads)
        return out

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
            state["stats"] = {key: 0 for key in _STAT_KEYS}
            state["radius"] = None
            state["last_rho"] = None
            state["last_step_length"] = 1.0
        return state

    def _memory(self, state: dict) -> CurvatureMemory:
        m = min(self.defaults["memory"], self._n)
        return CurvatureMemory(state, m, self._n, self._params[0])

    def _rank_tol(self) -> float:
        tol = self.defaults["rank_tol"]
        return tol if tol is not None else 100.0 * torch.finfo(self._params[0].dtype).eps

    def statistics(self) -> dict[str, Any]:
        """Counters since construction (or the loaded state): a plain dict of numbers."""
        state = self._global_state()
        out: dict[str, Any] = dict(state["stats"])
        out["radius"] = state["radius"]
        out["last_rho"] = state["last_rho"]
        out["last_step_length"] = state["last_step_length"]
        out["stored_pairs"] = len(state.get("order", []))
        out["method"] = self.defaults["method"]
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        saved = state_dict["state"].get(0, {})
        state = self.state[self._params[0]]
        for key in _SMALL_KEYS:
            if key in saved:
                state[key] = saved[key].detach().to(device="cpu", dtype=torch.float64).clone()
        if "memory" in state:
            # torch's cast is a no-op for a tensor already of the right dtype/device: no aliasing.
            state["memory"] = state["memory"].clone()
        if "order" in state:
            state["order"] = [int(i) for i in state["order"]]

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
        stats = state["stats"]
        stats["steps"] += 1

        def evaluate(out: Tensor) -> tuple[Tensor, float]:
            """Loss and gradient at the current parameters; the gradient goes into ``out``."""
            loss = grad_closure()
            stats["closure_evaluations"] += 1
            value = float(loss.detach()) if isinstance(loss, Tensor) else float(loss)
            self._gather_grad(out)
            return loss, value

        g = self._buffer("g")
        loss, f = evaluate(g)
        if self.defaults["method"] == "trust_region":
            self._trust_region_step(state, f, g, evaluate)
        else:
            self._line_search_step(state, f, g, evaluate)
        return loss

    def _trust_region_step(self, state: dict, f: float, g: Tensor, evaluate) -> None:
        d = self.defaults
        stats = state["stats"]
        memory = self._memory(state)
        reducer = self._reducer
        gamma = d["gamma"]
        device = g.device
        k = memory.k
        with exact_float32_matmul(device):
            g_products = reducer.rows(memory.buffer, g) if k > 0 else None
        gg = float(reducer.dots([(g, g)])[0])
        if not (math.isfinite(f) and math.isfinite(gg)):
            stats["rejected_steps"] += 1
            stats["nonfinite_trials"] += 1
            return
        if state["radius"] is None:
            state["radius"] = d["initial_radius"] if d["initial_radius"] is not None else math.sqrt(gg)
            if not state["radius"] > 0:
                state["radius"] = 1.0
        radius = state["radius"]
        empty = torch.zeros(0, dtype=torch.float64)

        with exact_float32_matmul(device):
            psi_gram, m_inv = memory.b_factors(gamma)
            spectral = spectral_form(psi_gram, m_inv, gamma)
            s_g, y_g = memory.split(g_products) if k > 0 else (empty, empty)
            psi_g = y_g - gamma * s_g
            g_par = spectral.parallel_coordinates(psi_g)
            u = spectral.psi_coefficients(g_par)  # Psi u = P_par g_par
            s = self._buffer("s")
            par_sq = float((g_par**2).sum())
            if par_sq <= 0.5 * gg:
                g_perp_sq = gg - par_sq  # at most one bit lost to cancellation
            else:  # g lies mostly in range(Psi): form g_perp explicitly
                combine(memory.buffer, memory.scatter(gamma * u, -u), s, base=g)
                g_perp_sq = float(reducer.dots([(s, s)])[0])
            eps = torch.finfo(g.dtype).eps
            solution = solve_subproblem(
                spectral, g_par, math.sqrt(max(g_perp_sq, 0.0)), radius,
                zero_tol=100.0 * eps * math.sqrt(gg),
            )
            stats["newton_iterations"] += solution.newton_iterations
            stats["hard_cases"] += int(solution.hard_case)
            pred = -solution.model_value
            if not pred > 0.0:
                # g = 0 and B positive semidefinite: x is a stationary point of the model.
                state["last_rho"] = None
                return
            # s = beta (g - Psi u) + Psi c_par (+ perp_unit z in the hard case)
            #   = beta g + Psi w, one pass over the memory.
            beta = solution.perp_scale
            w = spectral.psi_coefficients(solution.par) - beta * u
            if k > 0:
                combine(memory.buffer, memory.scatter(-gamma * w, w), s, base=g, beta=beta)
            else:
                torch.mul(g, beta, out=s)
            x_saved = self._buffer("x")
            if solution.perp_unit != 0.0:
                z = self._unit_orthogonal_to_psi(memory, spectral, gamma, stats["steps"], x_saved)
                s.add_(z, alpha=solution.perp_unit)
                s_products = reducer.rows(memory.buffer, s) if k > 0 else None
            elif k > 0:
                s_products = memory.scatter(*memory.products_of_combination(beta, s_g, y_g, -gamma * w, w))
            else:
                s_products = None

        # Trial point x + s on the same minibatch.
        self._save_params(x_saved)
        self._add_to_params(s)
        y = self._buffer("y")
        _, f_trial = evaluate(y)
        y.sub_(g)
        ss_sy_yy = reducer.dots([(s, s), (s, y), (y, y)])
        finite = math.isfinite(f_trial) and bool(torch.isfinite(ss_sy_yy).all())
        rho = (f - f_trial) / pred if finite else -math.inf
        state["last_rho"] = rho if finite else None
        if rho > d["eta"]:
            stats["accepted_steps"] += 1
        else:
            stats["rejected_steps"] += 1
            self._load_params(x_saved)
        step_norm = math.sqrt(float(ss_sy_yy[0])) if finite else solution.step_norm
        if rho > d["increase_threshold"]:
            if step_norm > d["boundary_fraction"] * radius:
                radius *= d["radius_increase"]
        elif rho < d["decrease_threshold"]:
            radius *= d["radius_decrease"]
        if d["max_radius"] is not None:
            radius = min(radius, d["max_radius"])
        state["radius"] = radius
        if not finite:
            stats["nonfinite_trials"] += 1
            return

        ss, sy, yy = (float(v) for v in ss_sy_yy)
        with exact_float32_matmul(device):
            if k > 0:
                y_products = reducer.rows(memory.buffer, y)
                s_s, y_s = memory.split(s_products)
                s_y, y_y = memory.split(y_products)
                basis_s, basis_y = y_s - gamma * s_s, y_y - gamma * s_y
            else:
                basis_s = basis_y = empty
                s_products = y_products = torch.zeros(2 * memory.slots, dtype=torch.float64)
            # SR1 skip test |s^T (y - B s)| >= r ||s|| ||y - B s||.
            s_dot_r, r_sq, size = residual(sy, yy, ss, basis_y, basis_s, psi_gram, m_inv, gamma)
            if r_sq <= 1e-2 * size:
                # y - B s is small next to y and B s: form it explicitly (cancellation).
                r = x_saved  # x is restored or no longer needed
                w_s = torch.linalg.solve(m_inv, basis_s) if k > 0 else empty
                combine(memory.buffer, memory.scatter(gamma * w_s, -w_s), r, base=y)
                r.add_(s, alpha=-gamma)
                sr_rr = reducer.dots([(s, r), (r, r)])
                s_dot_r, r_sq = float(sr_rr[0]), float(sr_rr[1])
            self._maybe_store_pair(
                state, memory, s, y, s_products, y_products, (ss, sy, yy), s_dot_r,
                math.sqrt(max(r_sq, 0.0)), math.sqrt(yy), math.sqrt(ss),
                lambda: memory.b_policy_inputs(gamma),
            )

    def _maybe_store_pair(
        self, state, memory, s, y, s_products, y_products, diag, numerator, residual_norm,
        reference_norm, other_norm, factors,
    ) -> None:
        """Append (s, y) unless the SR1 skip test says not to; then apply the pair policy.

        The test is |numerator| >= r * other_norm * residual_norm (N&W eq. 6.26), where the
        residual is y - B s (or s - H y). A residual at the rounding level of
        ``reference_norm`` (||y||, or ||s||) means the model already explains the pair: its
        direction is noise, and storing it would add an arbitrary rank-one term.
        """
        stats = state["stats"]
        noise_floor = 100.0 * torch.finfo(s.dtype).eps * reference_norm
        if (
            numerator == 0.0
            or residual_norm <= noise_floor
            or not abs(numerator) >= self.defaults["skip_tol"] * other_norm * residual_norm
        ):
            stats["skipped_updates"] += 1
            return
        memory.append(s, y, s_products, y_products, torch.tensor(diag, dtype=torch.float64))
        tol = self._rank_tol()
        # Only the trust region factors Psi^T Psi (Cholesky); the line search needs N^{-1} alone.
        check_gram = self.defaults["method"] == "trust_region"
        while memory.k > 0:
            if well_posed(*factors(), tol, check_gram=check_gram):
                break
            memory.drop_oldest()
            stats["dropped_pairs"] += 1

    def _unit_orthogonal_to_psi(self, memory, spectral, gamma: float, seed: int, out: Tensor) -> Tensor:
        """A unit vector orthogonal to range(Psi): the hard case with lambda_min = gamma."""
        generator = torch.Generator(device=out.device).manual_seed(1_000_003 + seed)
        out.copy_(torch.randn(out.shape, generator=generator, device=out.device, dtype=out.dtype))
        if memory.k > 0:
            s_v, y_v = memory.split(self._reducer.rows(memory.buffer, out))
            u = spectral.psi_coefficients(spectral.parallel_coordinates(y_v - gamma * s_v))
            combine(memory.buffer, memory.scatter(gamma * u, -u), out)
        out.div_(math.sqrt(float(self._reducer.dots([(out, out)])[0])))
        return out

    def _line_search_step(self, state: dict, f: float, g: Tensor, evaluate) -> None:
        d = self.defaults
        stats = state["stats"]
        memory = self._memory(state)
        reducer = self._reducer
        delta = 1.0 / d["gamma"]
        device = g.device
        k = memory.k
        gg = float(reducer.dots([(g, g)])[0])
        if not (math.isfinite(f) and math.isfinite(gg)):
            stats["rejected_steps"] += 1
            stats["nonfinite_trials"] += 1
            return
        if gg == 0.0:  # a stationary point: no descent direction exists
            state["last_rho"] = None
            return
        empty = torch.zeros(0, dtype=torch.float64)
        direction = self._buffer("s")
        phi_gram, n_inv = memory.h_factors(delta)
        fallback = True
        with exact_float32_matmul(device):
            if k > 0:
                s_g, y_g = memory.split(reducer.rows(memory.buffer, g))
                phi_g = s_g - delta * y_g
                c = torch.linalg.solve(n_inv, phi_g)  # N Phi^T g
                # d = -H g = -delta g - Phi c = -delta g - S c + delta Y c
                combine(memory.buffer, memory.scatter(-c, delta * c), direction, base=g, beta=-delta)
                slope = -delta * gg - float(phi_g @ c)
                fallback = not slope < 0.0
                stats["descent_fallbacks"] += int(fallback)
        if fallback:
            torch.neg(g, out=direction)
            slope = -gg

        x_saved = self._buffer("x")
        self._save_params(x_saved)
        x_views, d_views = self._views_of(x_saved), self._views_of(direction)
        y = self._buffer("y")

        def phi(alpha: float) -> tuple[float, float]:
            torch._foreach_copy_(self._params, x_views)
            torch._foreach_add_(self._params, d_views, alpha=alpha)
            _, f_a = evaluate(y)
            return f_a, float(reducer.dots([(y, direction)])[0])

        alpha0 = min(1.0, 2.0 * state["last_step_length"]) if stats["steps"] > 1 else 1.0
        if d["line_search"] == "strong_wolfe":
            result = strong_wolfe(
                phi, f, slope, alpha0, c1=d["c1"], c2=d["c2"],
                max_evaluations=d["max_line_search_evaluations"],
            )
        else:
            result = armijo_backtracking(
                phi, f, slope, alpha0, c1=d["c1"], max_evaluations=d["max_line_search_evaluations"]
            )
        stats["line_search_evaluations"] += result.evaluations
        state["last_rho"] = None
        if result.alpha <= 0.0:
            stats["rejected_steps"] += 1
            self._load_params(x_saved)
            return
        stats["accepted_steps"] += 1
        state["last_step_length"] = result.alpha
        if not result.last_is_alpha:
            phi(result.alpha)
        y.sub_(g)
        s = direction.mul_(result.alpha)  # s = alpha d
        ss_sy_yy = reducer.dots([(s, s), (s, y), (y, y)])
        if not bool(torch.isfinite(ss_sy_yy).all()):
            return
        ss, sy, yy = (float(v) for v in ss_sy_yy)
        with exact_float32_matmul(device):
            y_products = reducer.rows(memory.buffer, y) if k > 0 else None
            if k > 0 and not fallback:
                # s = alpha (-delta g - S c + delta Y c): its products from the Gram matrices.
                s_products = memory.scatter(*memory.products_of_combination(
                    -delta * result.alpha, s_g, y_g, -result.alpha * c, delta * result.alpha * c))
            elif k > 0:
                s_products = memory.scatter(-result.alpha * s_g, -result.alpha * y_g)
            else:
                s_products = y_products = torch.zeros(2 * memory.slots, dtype=torch.float64)
            if k > 0:
                s_s, y_s = memory.split(s_products)
                s_y, y_y = memory.split(y_products)
                basis_s, basis_y = s_s - delta * y_s, s_y - delta * y_y
            else:
                basis_s = basis_y = empty
            # Inverse skip test |y^T (s - H y)| >= r ||y|| ||s - H y||.
            y_dot_r, r_sq, size = residual(sy, ss, yy, basis_s, basis_y, phi_gram, n_inv, delta)
            if r_sq <= 1e-2 * size:
                r = x_saved
                w_y = torch.linalg.solve(n_inv, basis_y) if k > 0 else empty
                combine(memory.buffer, memory.scatter(-w_y, delta * w_y), r, base=s)
                r.add_(y, alpha=-delta)
                yr_rr = reducer.dots([(y, r), (r, r)])
                y_dot_r, r_sq = float(yr_rr[0]), float(yr_rr[1])
            self._maybe_store_pair(
                state, memory, s, y, s_products, y_products, (ss, sy, yy), y_dot_r,
                math.sqrt(max(r_sq, 0.0)), math.sqrt(ss), math.sqrt(yy),
                lambda: memory.h_policy_inputs(delta),
            )
