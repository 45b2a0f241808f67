"""Curvature pairs in preallocated ring buffers, their Gram matrices, and the one layer
through which every inner product over the n parameters passes.

The compact representations (Byrd, Nocedal & Schnabel 1994, Theorem 5.1; N&W eq. 7.24):

    B = gamma I + Psi M Psi^T,  Psi = Y - gamma S,  M^{-1} = D + L + L^T - gamma S^T S
    H = delta I + Phi N Phi^T,  Phi = S - delta Y,  N^{-1} = D + U + U^T - delta Y^T Y

with S^T Y = L + D + U (strictly lower, diagonal, strictly upper). The paper's Algorithm 2
writes N^{-1} = Y^T S - delta Y^T Y, which equals the triangular form only when S^T Y is
symmetric; stochastic pairs are not, so the triangular form is used.

Storage: one (2m x n) buffer whose first m rows hold s vectors and last m rows y vectors,
in ring slots; a pair that enters overwrites the oldest slot, and one that leaves only
leaves the ``order`` list. S^T S, S^T Y and Y^T Y are kept per slot in float64 and updated
with the new pair's row and column (O(nm) per pair); everything k x k is derived from
them in O(k^2), so no step recomputes an O(nk^2) product.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor

SMALL = torch.float64


@contextlib.contextmanager
def exact_float32_matmul(device: torch.device) -> Iterator[None]:
    """Turn TF32 off for the optimizer's own products on CUDA (TF32 keeps ~10 mantissa
    bits, which breaks the Gram matrices and the secant equation), restoring the user's
    setting for their model afterwards."""
    if device.type != "cuda":
        yield
        return
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


class Reducer:
    """Inner products over the n parameters, returned as small float64 CPU tensors.

    Every reduction over the parameter dimension goes through ``rows`` or ``dots``. A
    data-parallel version shards the n dimension across ranks and overrides ``_finish``
    to all-reduce the (few) small results, leaving the optimizer unchanged.
    """

    def rows(self, matrix: Tensor, vectors: Tensor) -> Tensor:
        """matrix (r x n) times vectors (n,) or (n x c) -> (r,) or (r x c)."""
        return self._finish(matrix @ vectors)

    def dots(self, pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
        """[u_i . v_i] for each pair, in one small tensor (one reduction for a sharded run)."""
        return self._finish(torch.stack([torch.dot(u, v) for u, v in pairs]))

    def _finish(self, small: Tensor) -> Tensor:
        return small.to(device="cpu", dtype=SMALL)


def combine(memory_rows: Tensor, coefficients: Tensor, out: Tensor, base: Tensor | None = None,
            beta: float = 1.0) -> Tensor:
    """out = beta * base + memory_rows^T coefficients (base defaults to out): one pass over
    the rows, no reduction over n."""
    c = coefficients.to(device=memory_rows.device, dtype=memory_rows.dtype)
    if base is None:
        return out.addmv_(memory_rows.T, c)
    return torch.addmv(base, memory_rows.T, c, beta=beta, out=out)


class CurvatureMemory:
    """Up to ``m`` pairs (s, y) in m ring slots with their per-slot Gram matrices.

    The tensors live in the optimizer's state dict (so they round-trip); this class is a
    view of them with the algebra on top.
    """

    def __init__(self, state: dict, m: int, n: int, like: Tensor) -> None:
        if "memory" not in state:
            state["memory"] = torch.zeros((2 * m, n), dtype=like.dtype, device=like.device)
            state["gram_ss"] = torch.zeros((m, m), dtype=SMALL)
            state["gram_sy"] = torch.zeros((m, m), dtype=SMALL)
            state["gram_yy"] = torch.zeros((m, m), dtype=SMALL)
            state["order"] = []
        self.state = state
        self.m = m
        self.slots = m

    # --- storage -------------------------------------------------------------------
    @property
    def buffer(self) -> Tensor:
        """The (2m x n) storage: S slots, then Y slots."""
        return self.state["memory"]

    @property
    def order(self) -> list[int]:
        return self.state["order"]

    @property
    def k(self) -> int:
        return len(self.state["order"])

    def next_slot(self) -> int:
        """Where the next pair goes: an unused slot, else the oldest pair's."""
        if self.k == self.m:
            return self.order[0]
        used = set(self.order)
        return next(slot for slot in range(self.slots) if slot not in used)

    def append(self, s: Tensor, y: Tensor, s_products: Tensor, y_products: Tensor, diag: Tensor) -> None:
        """Store (s, y), the oldest pair leaving when m are stored, and update the Gram
        matrices' row and column for its slot.

        ``s_products`` and ``y_products`` hold (S^T v, Y^T v) over all slots (2m, float64),
        computed before the slot is overwritten; entries of slots holding no pair are
        ignored. ``diag`` = [s.s, s.y, y.y].
        """
        slot = self.next_slot()
        if self.k == self.m:
            self.order.pop(0)
        n_slots = self.slots
        self.buffer[slot].copy_(s)
        self.buffer[n_slots + slot].copy_(y)
        g_ss, g_sy, g_yy = self.state["gram_ss"], self.state["gram_sy"], self.state["gram_yy"]
        g_ss[slot, :] = s_products[:n_slots]
        g_ss[:, slot] = s_products[:n_slots]
        g_sy[:, slot] = y_products[:n_slots]  # s_i . y_new
        g_sy[slot, :] = s_products[n_slots:]  # s_new . y_i
        g_yy[slot, :] = y_products[n_slots:]
        g_yy[:, slot] = y_products[n_slots:]
        g_ss[slot, slot], g_sy[slot, slot], g_yy[slot, slot] = diag[0], diag[1], diag[2]
        self.order.append(slot)

    def drop_oldest(self) -> None:
        self.order.pop(0)

    # --- k x k algebra in logical order (oldest first) ------------------------------
    def _index(self) -> Tensor:
        return torch.tensor(self.order, dtype=torch.long)

    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        idx = self._index()

        def pick(g: Tensor) -> Tensor:
            return g.index_select(0, idx).index_select(1, idx)

        return pick(self.state["gram_ss"]), pick(self.state["gram_sy"]), pick(self.state["gram_yy"])

    def b_factors(self, gamma: float) -> tuple[Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}) for B = gamma I + Psi M Psi^T."""
        ss, sy, yy = self.grams()
        psi_gram = yy - gamma * (sy + sy.T) + gamma**2 * ss
        lower = torch.tril(sy, diagonal=-1)
        m_inv = torch.diag(torch.diagonal(sy)) + lower + lower.T - gamma * ss
        return _sym(psi_gram), _sym(m_inv)

    def h_factors(self, delta: float) -> tuple[Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}) for H = delta I + Phi N Phi^T (the triangular form)."""
        ss, sy, yy = self.grams()
        phi_gram = ss - delta * (sy + sy.T) + delta**2 * yy
        upper = torch.triu(sy, diagonal=1)
        n_inv = torch.diag(torch.diagonal(sy)) + upper + upper.T - delta * yy
        return _sym(phi_gram), _sym(n_inv)

    def b_policy_inputs(self, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}, ||s_i|| ||psi_i||) for ``well_posed``."""
        psi_gram, m_inv = self.b_factors(gamma)
        ss = torch.diagonal(self.grams()[0])
        return psi_gram, m_inv, torch.sqrt(ss.clamp(min=0) * torch.diagonal(psi_gram).clamp(min=0))

    def h_policy_inputs(self, delta: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}, ||y_i|| ||phi_i||) for ``well_posed``."""
        phi_gram, n_inv = self.h_factors(delta)
        yy = torch.diagonal(self.grams()[2])
        return phi_gram, n_inv, torch.sqrt(yy.clamp(min=0) * torch.diagonal(phi_gram).clamp(min=0))

    def split(self, products: Tensor) -> tuple[Tensor, Tensor]:
        """(S^T v, Y^T v) in logical order from buffer @ v (2m,)."""
        idx = self._index()
        return products[: self.slots].index_select(0, idx), products[self.slots :].index_select(0, idx)

    def scatter(self, s_part: Tensor, y_part: Tensor) -> Tensor:
        """Slot-ordered (2m,) vector from logical-order parts; zero for other slots.

        Used both for coefficients (buffer^T c = S s_part + Y y_part) and for products
        (buffer @ v assembled from (S^T v, Y^T v))."""
        c = torch.zeros(2 * self.slots, dtype=SMALL)
        idx = self._index()
        c.index_copy_(0, idx, s_part)
        c.index_copy_(0, idx + self.slots, y_part)
        return c

    def products_of_combination(self, beta: float, s_g: Tensor, y_g: Tensor, s_coef: Tensor,
                                y_coef: Tensor) -> tuple[Tensor, Tensor]:
        """(S^T v, Y^T v) for v = beta g + S s_coef + Y y_coef, from the Gram matrices and
        (S^T g, Y^T g): no pass over the n parameters."""
        ss, sy, yy = self.grams()
        s_v = beta * s_g + ss @ s_coef + sy @ y_coef
        y_v = beta * y_g + sy.T @ s_coef + yy @ y_coef
        return s_v, y_v


def residual(a_dot_b: float, a_dot_a: float, b_dot_b: float, basis_a: Tensor, basis_b: Tensor,
             basis_gram: Tensor, middle_inv: Tensor, scale: float) -> tuple[float, float, float]:
    """Quasi-Newton residual r = a - (scale I + Omega W Omega^T) b without forming r.

    With (a, b) = (y, s), Omega = Psi, W = M, scale = gamma this is y - B s (trust region);
    with (a, b) = (s, y), Omega = Phi, W = N, scale = delta it is s - H y (line search).
    ``basis_a`` = Omega^T a, ``basis_b`` = Omega^T b. Returns (b.r, ||r||^2, ||a||^2 + ||Qb||^2)
    where Q = scale I + Omega W Omega^T; the last is the size the cancellation in ||r||^2
    is measured against.
    """
    if basis_b.numel():
        w = torch.linalg.solve(middle_inv, basis_b)
        b_omega_w = float(basis_b @ w)
        a_omega_w = float(basis_a @ w)
        w_gram_w = float(w @ basis_gram @ w)
    else:
        b_omega_w = a_omega_w = w_gram_w = 0.0
    b_dot_r = a_dot_b - scale * b_dot_b - b_omega_w
    qb_sq = scale**2 * b_dot_b + 2.0 * scale * b_omega_w + w_gram_w
    r_sq = a_dot_a - 2.0 * (scale * a_dot_b + a_omega_w) + qb_sq
    return b_dot_r, r_sq, a_dot_a + qb_sq


def _sym(a: Tensor) -> Tensor:
    return 0.5 * (a + a.T)


def well_posed(
    gram: Tensor, middle_inv: Tensor, pair_norms: Tensor, rank_tol: float, *, check_gram: bool
) -> bool:
    """The pair policy's test, invariant to the lengths of the individual pairs.

    Gram = Psi^T Psi (or Phi^T Phi) must be positive definite after scaling to unit
    diagonal, so columns of very different lengths are not mistaken for dependent ones.
    The middle matrix M^{-1} (or N^{-1}), whose (i, j) entry scales like
    ||s_i|| ||psi_j||, is scaled by 1/sqrt(||s_i|| ||psi_i||) on both sides (``pair_norms``
    holds ||s_i|| ||psi_i||) and must have its smallest eigenvalue magnitude above
    ``rank_tol`` times its largest. Radii that change by 2x per step make pairs of very
    different lengths; an unscaled test would drop well-conditioned pairs for that.
    """
    if middle_inv.shape[0] == 0:
        return True
    if not (bool(torch.isfinite(gram).all()) and bool(torch.isfinite(middle_inv).all())):
        return False
    if not bool((pair_norms > 0).all()):
        return False
    if check_gram:
        scale = torch.diagonal(gram).rsqrt()
        normalized = gram * scale[:, None] * scale[None, :]
        if float(torch.linalg.eigvalsh(normalized)[0]) <= rank_tol:
            return False
    scale = pair_norms.rsqrt()
    ev = torch.linalg.eigvalsh(middle_inv * scale[:, None] * scale[None, :]).abs()
    return float(ev.min()) > rank_tol * float(ev.max())
