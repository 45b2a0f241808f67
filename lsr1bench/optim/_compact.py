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


def combine(memory_rows: Tensor, coefficients: Tensor, out: Tensor) -> Tensor:
    """out += memory_rows^T coefficients, one pass over the (r x n) rows; no reduction over n."""
    return out.addmv_(memory_rows.T, coefficients.to(device=memory_rows.device, dtype=memory_rows.dtype))


class CurvatureMemory:
    """Up to ``m`` pairs (s, y) in ring slots with their per-slot Gram matrices.

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

    # --- storage -------------------------------------------------------------------
    @property
    def buffer(self) -> Tensor:
        return self.state["memory"]

    @property
    def order(self) -> list[int]:
        return self.state["order"]

    @property
    def k(self) -> int:
        return len(self.state["order"])

    def s_rows(self) -> Tensor:
        return self.buffer[: self.m]

    def y_rows(self) -> Tensor:
        return self.buffer[self.m :]

    def free_slot(self) -> int:
        """The slot the next pair goes into: a never-used one, else the oldest's."""
        used = set(self.order)
        for slot in range(self.m):
            if slot not in used:
                return slot
        return self.order[0]

    def append(
        self, s: Tensor, y: Tensor, s_products: Tensor, y_products: Tensor, diag: Tensor
    ) -> int:
        """Store (s, y) in a slot, updating the Gram matrices' row and column for it.

        ``s_products`` = buffer @ s and ``y_products`` = buffer @ y (each 2m, float64),
        computed before the slot is overwritten; ``diag`` = [s.s, s.y, y.y]. Returns how
        many pairs were dropped to make room (0 or 1).
        """
        dropped = 0
        if self.k == self.m:
            self.order.pop(0)
            dropped = 1
        slot = self.free_slot()
        m = self.m
        self.s_rows()[slot].copy_(s)
        self.y_rows()[slot].copy_(y)
        g_ss, g_sy, g_yy = self.state["gram_ss"], self.state["gram_sy"], self.state["gram_yy"]
        g_ss[slot, :] = s_products[:m]
        g_ss[:, slot] = s_products[:m]
        g_sy[:, slot] = y_products[:m]  # s_i . y_new
        g_sy[slot, :] = s_products[m:]  # s_new . y_i
        g_yy[slot, :] = y_products[m:]
        g_yy[:, slot] = y_products[m:]
        g_ss[slot, slot], g_sy[slot, slot], g_yy[slot, slot] = diag[0], diag[1], diag[2]
        self.order.append(slot)
        return dropped

    def drop_oldest(self) -> None:
        self.order.pop(0)

    def clear(self) -> None:
        self.order.clear()

    # --- k x k algebra in logical order (oldest first) ------------------------------
    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        idx = torch.tensor(self.order, dtype=torch.long)
        pick = lambda g: g.index_select(0, idx).index_select(1, idx)  # noqa: E731
        return pick(self.state["gram_ss"]), pick(self.state["gram_sy"]), pick(self.state["gram_yy"])

    def b_factors(self, gamma: float) -> tuple[Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}) for B = gamma I + Psi M Psi^T."""
        ss, sy, yy = self.grams()
        psi_gram = yy - gamma * (sy + sy.T) + gamma**2 * ss
        lower = torch.tril(sy, diagonal=-1)
        m_inv = torch.diag(torch.diagonal(sy)) + lower + lower.T - gamma * ss
        return _sym(psi_gram), _sym(m_inv)

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

    def h_factors(self, delta: float) -> tuple[Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}) for H = delta I + Phi N Phi^T (the triangular form)."""
        ss, sy, yy = self.grams()
        phi_gram = ss - delta * (sy + sy.T) + delta**2 * yy
        upper = torch.triu(sy, diagonal=1)
        n_inv = torch.diag(torch.diagonal(sy)) + upper + upper.T - delta * yy
        return _sym(phi_gram), _sym(n_inv)

    def split(self, products: Tensor) -> tuple[Tensor, Tensor]:
        """(S^T v, Y^T v) in logical order from buffer @ v (2m,)."""
        idx = torch.tensor(self.order, dtype=torch.long)
        return products[: self.m].index_select(0, idx), products[self.m :].index_select(0, idx)

    def coefficients(self, s_coef: Tensor, y_coef: Tensor) -> Tensor:
        """Slot-ordered (2m,) coefficients so that buffer^T c = S s_coef + Y y_coef."""
        c = torch.zeros(2 * self.m, dtype=SMALL)
        idx = torch.tensor(self.order, dtype=torch.long)
        c.index_copy_(0, idx, s_coef)
        c.index_copy_(0, idx + self.m, y_coef)
        return c


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
