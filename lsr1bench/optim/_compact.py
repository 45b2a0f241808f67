"""Curvature pairs in preallocated ring buffers, their Gram matrices, and the chunked
float64 products every inner product over the n parameters is made of (the layout,
``_layout.py``, reduces them).

The compact representations (Byrd, Nocedal & Schnabel 1994, Theorem 5.1; N&W eq. 7.24):

    B = gamma I + Psi M Psi^T,  Psi = Y - gamma S,  M^{-1} = D + L + L^T - gamma S^T S
    H = delta I + Phi N Phi^T,  Phi = S - delta Y,  N^{-1} = D + U + U^T - delta Y^T Y

with S^T Y = L + D + U (strictly lower, diagonal, strictly upper). The paper's Algorithm 2
writes N^{-1} = Y^T S - delta Y^T Y, which equals the triangular form only when S^T Y is
symmetric; stochastic pairs are not, so the triangular form is used.

Storage: one (m x n) buffer of psi = y - gamma s vectors in ring slots (S is never read
by the step, so it is kept only on request); a pair that enters overwrites the oldest
slot, and one that leaves only leaves the ``order`` list. Psi^T Psi, the lower triangle of
S^T Psi and ||s_i||^2 are kept per slot in float64. A new pair's row is inner products of
the stored vectors with the new (s, psi), computed in the one fused pass Psi^T [s, psi]
that the step makes anyway (never a recurrence on derived values, whose rounding errors
would compound from pair to pair); everything k x k is derived from the kept matrices in
O(k^2), so no step recomputes an O(nk^2) product.
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


# Inner products over n are summed in chunks of this many coordinates: each chunk's dot
# product runs in the parameters' dtype (BLAS), the chunks are added in float64. In float32
# a plain GEMV over n = 4e5 correlated coordinates is off by ~1e-5 of |a||b|; chunked, by
# ~1e-8, which is what lets B, pred and ||s|| hold to the tolerances the optimizer promises
# (the compact form cancels: an eigenvalue 0.02 of B is gamma = 1 minus 0.98). Flat buffers
# are padded with zeros to a multiple of the chunk (see ``padded_length``).
CHUNK = 4096


def padded_length(n: int) -> int:
    """The length of the optimizer's flat buffers: n, rounded up to a multiple of CHUNK
    when n exceeds it (the padding holds zeros and never changes)."""
    return n if n <= CHUNK else -(-n // CHUNK) * CHUNK


def products(matrix: Tensor, columns: Tensor) -> Tensor:
    """matrix (r x N) times columns (c x N) transposed -> (r x c) float64 on the device,
    summed chunk by chunk (one pass over ``matrix``)."""
    r, width = matrix.shape
    c = columns.shape[0]
    if matrix.dtype == SMALL or width <= CHUNK or width % CHUNK:
        return (matrix @ columns.T).to(SMALL)
    blocks = width // CHUNK
    partial = torch.bmm(matrix.view(r, blocks, CHUNK).transpose(0, 1), columns.view(c, blocks, CHUNK).permute(1, 2, 0))
    return partial.sum(0, dtype=SMALL)


def combine(memory_rows: Tensor, coefficients: Tensor, out: Tensor, base: Tensor | None = None,
            beta: float = 1.0) -> Tensor:
    """out = beta * base + memory_rows^T coefficients (base defaults to out): one pass over
    the rows, no reduction over n."""
    c = coefficients.to(device=memory_rows.device, dtype=memory_rows.dtype)
    if base is None:
        return out.addmv_(memory_rows.T, c)
    return torch.addmv(base, memory_rows.T, c, beta=beta, out=out)


class CurvatureMemory:
    """Up to ``m`` pairs in m ring slots, stored as psi = y - gamma s only, with what B
    needs of their Gram matrices: Psi^T Psi, the lower triangle and diagonal of S^T Psi
    (newer s against older psi) and the diagonal ||s_i||^2.

    B = gamma I + Psi M Psi^T reads nothing else: M^{-1} = D + L + L^T of S^T Psi (the
    -gamma S^T S of the textbook form cancels against S^T Y = S^T Psi + gamma S^T S), and
    for the inverse Phi = S - Y / gamma = -Psi / gamma. The s vectors themselves are kept
    (in a second (m x n) buffer) only with ``keep_pairs``, for ``curvature().pairs()``.
    The new pair's row of S^T Psi is Psi^T s, a product of the stored vectors that the
    step's fused pass Psi^T [s, psi] gives (never a recurrence on derived values).

    Storing Psi rather than Y is what keeps B accurate in float32: Psi^T Psi and M^{-1}
    are then inner products of stored vectors, while forming them from S^T S, S^T Y and
    Y^T Y cancels whenever y is close to gamma s (||psi|| << ||y||, common in training).

    The tensors live in the optimizer's state dict (so they round-trip); this class is a
    view of them with the algebra on top.
    """

    def __init__(self, state: dict, m: int, n: int, like: Tensor, keep_pairs: bool = False) -> None:
        if "memory" not in state:
            state["memory"] = torch.zeros((m, n), dtype=like.dtype, device=like.device)
            state["gram_sp"] = torch.zeros((m, m), dtype=SMALL)
            state["gram_pp"] = torch.zeros((m, m), dtype=SMALL)
            state["ss_diag"] = torch.zeros(m, dtype=SMALL)
            state["order"] = []
            if keep_pairs:
                state["pairs_s"] = torch.zeros((m, n), dtype=like.dtype, device=like.device)
        self.state = state
        self.m = m
        self.slots = m

    # --- storage -------------------------------------------------------------------
    @property
    def buffer(self) -> Tensor:
        """The (m x n) storage of the psi vectors, in ring slots."""
        return self.state["memory"]

    @property
    def s_buffer(self) -> Tensor | None:
        """The (m x n) s vectors when the optimizer keeps them (``keep_pairs``), else None."""
        return self.state.get("pairs_s")

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

    def append(self, s: Tensor, psi: Tensor, psi_s: Tensor, psi_psi: Tensor, diag) -> None:
        """Store psi (and s with ``keep_pairs``), the oldest pair leaving when m are stored,
        and set the kept Gram entries for its slot.

        ``psi_s`` and ``psi_psi`` are ``buffer @ s`` and ``buffer @ psi`` (m, float64, slot
        order), computed from the stored vectors before the slot is overwritten; entries of
        slots holding no pair are ignored. ``diag`` = [s.s, s.psi, psi.psi].
        """
        slot = self.next_slot()
        if self.k == self.m:
            self.order.pop(0)
        self.buffer[slot].copy_(psi)
        if self.s_buffer is not None:
            self.s_buffer[slot].copy_(s)
        g_sp, g_pp = self.state["gram_sp"], self.state["gram_pp"]
        g_sp[slot, :] = psi_s  # s_new . psi_i: the new pair's row (it is the newest)
        g_sp[:, slot] = 0.0  # s_i . psi_new (i older) is never read; zero, not stale
        g_pp[slot, :] = psi_psi
        g_pp[:, slot] = psi_psi
        self.state["ss_diag"][slot] = float(diag[0])
        g_sp[slot, slot], g_pp[slot, slot] = float(diag[1]), float(diag[2])
        self.order.append(slot)

    def push(self, s: Tensor, y: Tensor, gamma: float) -> None:
        """Append the pair (s, y) computing every product itself (tests, tools)."""
        psi = y - gamma * s
        prods = products(self.buffer, torch.stack([s, psi])).cpu()
        diag = [float(s @ s), float(s @ psi), float(psi @ psi)]
        self.append(s, psi, prods[:, 0], prods[:, 1], diag)

    def drop_oldest(self) -> None:
        self.order.pop(0)

    # --- k x k algebra in logical order (oldest first) ------------------------------
    def _index(self) -> Tensor:
        return torch.tensor(self.order, dtype=torch.long)

    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        """(diag S^T S (k,), S^T Psi with only its lower triangle and diagonal (k x k, zeros
        above), Psi^T Psi (k x k)), float64, oldest pair first."""
        idx = self._index()

        def pick(g: Tensor) -> Tensor:
            return g.index_select(0, idx).index_select(1, idx)

        return self.state["ss_diag"].index_select(0, idx), torch.tril(pick(self.state["gram_sp"])), \
            pick(self.state["gram_pp"])

    def b_factors(self, gamma: float) -> tuple[Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}) for B = gamma I + Psi M Psi^T."""
        return b_factors(*self.grams())

    def h_factors(self, delta: float) -> tuple[Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}) for H = delta I + Phi N Phi^T, delta = 1 / gamma.

        With Phi = -delta Psi: Phi^T Phi = delta^2 Psi^T Psi, and the triangular form
        N^{-1} = D + U + U^T - delta Y^T Y of S^T Y = L + D + U works out to
        -(M^{-1} + delta Psi^T Psi)."""
        psi_gram, m_inv = self.b_factors(1.0 / delta)
        return _sym(delta * delta * psi_gram), _sym(-(m_inv + delta * psi_gram))

    def y_norms(self, gamma: float) -> Tensor:
        """||y_i|| = ||psi_i + gamma s_i|| from the kept diagonals."""
        ss, sp, pp = self.grams()
        sp, pp = torch.diagonal(sp), torch.diagonal(pp)
        return torch.sqrt((pp + 2.0 * gamma * sp + gamma * gamma * ss).clamp(min=0))

    def b_policy_inputs(self, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}, ||s_i|| ||psi_i||) for ``well_posed``."""
        psi_gram, m_inv = self.b_factors(gamma)
        ss = self.grams()[0]
        return psi_gram, m_inv, torch.sqrt(ss.clamp(min=0) * torch.diagonal(psi_gram).clamp(min=0))

    def h_policy_inputs(self, delta: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}, ||y_i|| ||phi_i||) for ``well_posed``."""
        phi_gram, n_inv = self.h_factors(delta)
        yy = self.y_norms(1.0 / delta) ** 2
        return phi_gram, n_inv, torch.sqrt(yy * torch.diagonal(phi_gram).clamp(min=0))

    def split(self, products: Tensor) -> Tensor:
        """Psi^T v in logical order from buffer @ v (m, slot order)."""
        return products[: self.slots].index_select(0, self._index())

    def psi_combination(self, psi_part: Tensor) -> Tensor:
        """Slot-ordered coefficients c (m,) with buffer^T c = Psi psi_part, zero for slots
        holding no pair."""
        c = torch.zeros(self.slots, dtype=SMALL)
        c.index_copy_(0, self._index(), psi_part.to(SMALL))
        return c


def b_factors(ss: Tensor, sp: Tensor, pp: Tensor) -> tuple[Tensor, Tensor]:
    """(Psi^T Psi, M^{-1}) of B = gamma I + Psi M Psi^T from S^T S (or only its diagonal:
    it is not read), S^T Psi (only its lower triangle and diagonal are read) and Psi^T Psi,
    oldest first.

    M^{-1} = D + L + L^T - gamma S^T S with S^T Y = L + D + U; since S^T Y = S^T Psi +
    gamma S^T S and S^T S is symmetric, this is D + L + L^T of S^T Psi alone."""
    lower = torch.tril(sp, diagonal=-1)
    m_inv = torch.diag(torch.diagonal(sp)) + lower + lower.T
    return _sym(pp), _sym(m_inv)


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
    gram: Tensor, middle_inv: Tensor, pair_norms: Tensor, rank_tol: float, *, check_gram: bool,
    scaled: bool = False,
) -> bool:
    """The pair policy's test: may the stored pairs define B (or H)?

    The paper's rule (Algorithm 1, lines 31-39; Algorithm 2, lines 24-31), with the
    textbook numerical reading of its two conditions: Psi^T Psi (or Phi^T Phi) is positive
    definite when its smallest eigenvalue exceeds ``rank_tol`` times its largest, and
    M^{-1} (or N^{-1}) is nonsingular when its smallest eigenvalue magnitude exceeds
    ``rank_tol`` times its largest.

    ``scaled=True`` (the optimizer's ``pair_policy="scaled"``, not the paper's) first
    scales both matrices so they do not depend on the lengths of the individual pairs:
    Gram to unit diagonal, and the middle matrix, whose (i, j) entry scales like
    ||s_i|| ||psi_j||, by 1/sqrt(||s_i|| ||psi_i||) on both sides (``pair_norms`` holds
    ||s_i|| ||psi_i||). Pairs of very different lengths then are not mistaken for
    dependent ones.
    """
    if middle_inv.shape[0] == 0:
        return True
    if not (bool(torch.isfinite(gram).all()) and bool(torch.isfinite(middle_inv).all())):
        return False
    if scaled and not bool((pair_norms > 0).all()):
        return False
    if check_gram:
        if scaled:
            scale = torch.diagonal(gram).clamp(min=1e-300).rsqrt()
            normalized = gram * scale[:, None] * scale[None, :]
            if float(torch.linalg.eigvalsh(normalized)[0]) <= rank_tol:
                return False
        else:
            ev = torch.linalg.eigvalsh(gram)
            if not float(ev[0]) > rank_tol * float(ev[-1]):
                return False
    middle = middle_inv
    if scaled:
        scale = pair_norms.rsqrt()
        middle = middle_inv * scale[:, None] * scale[None, :]
    ev = torch.linalg.eigvalsh(middle).abs()
    return float(ev.min()) > rank_tol * float(ev.max())
