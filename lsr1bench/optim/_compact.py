"""Curvature pairs in preallocated ring buffers, their Gram matrices, and the one layer
through which every inner product over the n parameters passes.

The compact representations (Byrd, Nocedal & Schnabel 1994, Theorem 5.1; N&W eq. 7.24):

    B = gamma I + Psi M Psi^T,  Psi = Y - gamma S,  M^{-1} = D + L + L^T - gamma S^T S
    H = delta I + Phi N Phi^T,  Phi = S - delta Y,  N^{-1} = D + U + U^T - delta Y^T Y

with S^T Y = L + D + U (strictly lower, diagonal, strictly upper). The paper's Algorithm 2
writes N^{-1} = Y^T S - delta Y^T Y, which equals the triangular form only when S^T Y is
symmetric; stochastic pairs are not, so the triangular form is used.

Storage: one (2m x n) buffer whose first m rows hold s vectors and last m rows
psi = y - gamma s vectors, in ring slots; a pair that enters overwrites the oldest slot,
and one that leaves only leaves the ``order`` list. S^T S, S^T Psi and Psi^T Psi are kept
per slot in float64. A new pair's row and column are inner products of the stored vectors
with the new (s, psi), computed in the one fused pass [S; Psi]^T [s, psi] that the step
makes anyway (never a recurrence on derived values, whose rounding errors would compound
from pair to pair); everything k x k is derived from the kept matrices in O(k^2), so no
step recomputes an O(nk^2) product.
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
    """The one place where values computed over the n parameters reach the host.

    ``gather`` takes device tensors (partial inner products, losses), concatenates them
    as float64 on the device and copies the result to the host in ONE blocking transfer;
    ``syncs`` counts those transfers. A step makes two on its common path: one after the
    gradient at x, one after the trial point. A data-parallel version overrides
    ``_reduce`` to all-reduce the small concatenated vector before the copy, so every
    reduction over n costs the group one collective of O(m) float64 values.
    """

    def __init__(self) -> None:
        self.syncs = 0

    def gather(self, parts: list[Tensor], *, means: int = 0) -> Tensor:
        """[parts...] flattened into one float64 CPU vector (one blocking transfer).

        The first ``means`` entries are averages over the data (losses), the rest are
        sums over the parameters (inner products); a sharded reducer treats them so.
        """
        flat = torch.cat([p.detach().reshape(-1).to(SMALL) for p in parts])
        flat = self._reduce(flat, means)
        self.syncs += 1
        return flat.to("cpu")

    def _reduce(self, flat: Tensor, means: int) -> Tensor:
        return flat

    # Compatibility helpers for one-off products (tests, rare paths); each is one transfer.
    def rows(self, matrix: Tensor, vector: Tensor) -> Tensor:
        """matrix (r x n) times a vector (n,) -> (r,), float64 CPU."""
        return self.gather([products(matrix, vector.unsqueeze(0))]).reshape(-1)

    def dots(self, pairs: list[tuple[Tensor, Tensor]]) -> Tensor:
        """[u_i . v_i] for each pair, in one small float64 CPU tensor."""
        return self.gather([products(u.unsqueeze(0), v.unsqueeze(0)).reshape(1) for u, v in pairs])


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
    """Up to ``m`` pairs in m ring slots, stored as (s, psi = y - gamma s), with their
    per-slot Gram matrices S^T S, S^T Psi and Psi^T Psi.

    Storing Psi rather than Y is what keeps B accurate in float32: Psi^T Psi and M^{-1}
    are then inner products of stored vectors, while forming them from S^T S, S^T Y and
    Y^T Y cancels whenever y is close to gamma s (||psi|| << ||y||, common in training),
    multiplying the float32 rounding of those products by (||y|| / ||psi||)^2. Y is
    never needed: M^{-1} = D + L + L^T of S^T Psi (S^T S cancels out), and for the
    inverse, Phi = S - Y / gamma = -Psi / gamma.

    The tensors live in the optimizer's state dict (so they round-trip); this class is a
    view of them with the algebra on top.
    """

    def __init__(self, state: dict, m: int, n: int, like: Tensor) -> None:
        if "memory" not in state:
            state["memory"] = torch.zeros((2 * m, n), dtype=like.dtype, device=like.device)
            state["gram_ss"] = torch.zeros((m, m), dtype=SMALL)
            state["gram_sp"] = torch.zeros((m, m), dtype=SMALL)
            state["gram_pp"] = torch.zeros((m, m), dtype=SMALL)
            state["order"] = []
        self.state = state
        self.m = m
        self.slots = m

    # --- storage -------------------------------------------------------------------
    @property
    def buffer(self) -> Tensor:
        """The (2m x n) storage: S slots, then Psi slots."""
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

    def append(self, s: Tensor, psi: Tensor, s_products: Tensor, psi_products: Tensor, diag) -> None:
        """Store (s, psi), the oldest pair leaving when m are stored, and set the Gram
        matrices' row and column for its slot.

        ``s_products`` and ``psi_products`` are ``buffer @ s`` and ``buffer @ psi``
        (2m, float64: S^T v then Psi^T v over all slots), computed from the stored vectors
        before the slot is overwritten; entries of slots holding no pair are ignored.
        ``diag`` = [s.s, s.psi, psi.psi].
        """
        slot = self.next_slot()
        if self.k == self.m:
            self.order.pop(0)
        n_slots = self.slots
        self.buffer[slot].copy_(s)
        self.buffer[n_slots + slot].copy_(psi)
        g_ss, g_sp, g_pp = self.state["gram_ss"], self.state["gram_sp"], self.state["gram_pp"]
        g_ss[slot, :] = s_products[:n_slots]
        g_ss[:, slot] = s_products[:n_slots]
        g_sp[:, slot] = psi_products[:n_slots]  # s_i . psi_new
        g_sp[slot, :] = s_products[n_slots:]  # s_new . psi_i
        g_pp[slot, :] = psi_products[n_slots:]
        g_pp[:, slot] = psi_products[n_slots:]
        g_ss[slot, slot], g_sp[slot, slot], g_pp[slot, slot] = float(diag[0]), float(diag[1]), float(diag[2])
        self.order.append(slot)

    def push(self, s: Tensor, y: Tensor, gamma: float) -> None:
        """Append the pair (s, y) computing every product itself (tests, tools)."""
        psi = y - gamma * s
        both = torch.stack([s, psi])
        prods = products(self.buffer, both).cpu()
        diag = [float(s @ s), float(s @ psi), float(psi @ psi)]
        self.append(s, psi, prods[:, 0], prods[:, 1], diag)

    def drop_oldest(self) -> None:
        self.order.pop(0)

    # --- k x k algebra in logical order (oldest first) ------------------------------
    def _index(self) -> Tensor:
        return torch.tensor(self.order, dtype=torch.long)

    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        """(S^T S, S^T Psi, Psi^T Psi), k x k float64, oldest pair first."""
        idx = self._index()

        def pick(g: Tensor) -> Tensor:
            return g.index_select(0, idx).index_select(1, idx)

        return pick(self.state["gram_ss"]), pick(self.state["gram_sp"]), pick(self.state["gram_pp"])

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
        """||y_i|| = ||psi_i + gamma s_i|| from the Gram diagonals."""
        ss, sp, pp = (torch.diagonal(g) for g in self.grams())
        return torch.sqrt((pp + 2.0 * gamma * sp + gamma * gamma * ss).clamp(min=0))

    def b_policy_inputs(self, gamma: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Psi^T Psi, M^{-1}, ||s_i|| ||psi_i||) for ``well_posed``."""
        psi_gram, m_inv = self.b_factors(gamma)
        ss = torch.diagonal(self.grams()[0])
        return psi_gram, m_inv, torch.sqrt(ss.clamp(min=0) * torch.diagonal(psi_gram).clamp(min=0))

    def h_policy_inputs(self, delta: float) -> tuple[Tensor, Tensor, Tensor]:
        """(Phi^T Phi, N^{-1}, ||y_i|| ||phi_i||) for ``well_posed``."""
        phi_gram, n_inv = self.h_factors(delta)
        yy = self.y_norms(1.0 / delta) ** 2
        return phi_gram, n_inv, torch.sqrt(yy * torch.diagonal(phi_gram).clamp(min=0))

    def split(self, products: Tensor) -> tuple[Tensor, Tensor]:
        """(S^T v, Psi^T v) in logical order from buffer @ v (2m,)."""
        idx = self._index()
        return products[: self.slots].index_select(0, idx), products[self.slots :].index_select(0, idx)

    def scatter(self, s_part: Tensor, psi_part: Tensor) -> Tensor:
        """Slot-ordered (2m,) coefficients from logical-order parts, zero for other slots,
        so that buffer^T c = S s_part + Psi psi_part."""
        c = torch.zeros(2 * self.slots, dtype=SMALL)
        idx = self._index()
        c.index_copy_(0, idx, s_part)
        c.index_copy_(0, idx + self.slots, psi_part)
        return c

    def psi_combination(self, psi_part: Tensor) -> Tensor:
        """Coefficients c with buffer^T c = Psi psi_part."""
        return self.scatter(torch.zeros_like(psi_part), psi_part)


def b_factors(ss: Tensor, sp: Tensor, pp: Tensor) -> tuple[Tensor, Tensor]:
    """(Psi^T Psi, M^{-1}) of B = gamma I + Psi M Psi^T from S^T S, S^T Psi, Psi^T Psi
    (oldest first).

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
