"""The L-SR1 model as an operator: ``LSR1.curvature()`` returns a :class:`CurvatureOperator`.

B = gamma I + Psi M Psi^T with Psi = Y - gamma S and M^{-1} = D + L + L^T - gamma S^T S
(S^T Y = L + D + U), which is D + L + L^T of S^T Psi. The operator holds a snapshot of
the stored psi vectors (and of the s vectors when the optimizer keeps them,
``keep_pairs=True``) and of the Gram entries the optimizer keeps, so it is the B the next
step will use, and it stays valid while training goes on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._compact import b_factors
from ._trust_region import spectral_form


class CurvatureOperator:
    """B of the stored pairs: ``matvec(v)``, ``eigenvalues()``, ``grams()``, and with the
    s vectors kept (``LSR1(..., keep_pairs=True)``) ``pairs()`` and ``basis()``.

    ``k`` pairs (0 <= k <= m) of n-vectors; B has the k eigenvalues of ``eigenvalues()``
    on range(Psi) and the eigenvalue gamma on its orthogonal complement (n - k times;
    when k = n there is no complement).
    """

    def __init__(self, Psi: Tensor, ss: Tensor, sp: Tensor, pp: Tensor, gamma: float,
                 S: Tensor | None = None) -> None:
        self._Psi, self._S = Psi, S
        self.gamma = float(gamma)
        self._grams = (ss.clone(), sp.clone(), pp.clone())
        self._psi_gram, self._m_inv = b_factors(ss, sp, pp)

    @property
    def k(self) -> int:
        """Number of stored pairs."""
        return int(self._Psi.shape[0])

    @property
    def n(self) -> int:
        """Number of parameters (the length of every vector)."""
        return int(self._Psi.shape[1])

    def _s_vectors(self) -> Tensor:
        if self._S is None:
            raise RuntimeError(
                "CurvatureOperator.pairs()/basis() need the s vectors, which the optimizer stores "
                "only when built with keep_pairs=True (it costs another m x n tensor); B itself "
                "(matvec, eigenvalues, grams, psi) needs only Psi"
            )
        return self._S

    def pairs(self) -> tuple[Tensor, Tensor]:
        """(S, Y): (k x n) tensors in the parameters' dtype and device, oldest pair first.
        Needs ``keep_pairs=True``.

        The optimizer stores psi = y - gamma s; Y is formed as Psi + gamma S here, so it
        equals the y of each pair up to the rounding of that sum."""
        S = self._s_vectors()
        return S.clone(), self._Psi + self.gamma * S

    def basis(self) -> tuple[Tensor, Tensor]:
        """(S, Psi): the vectors behind B, (k x n), oldest pair first. Needs ``keep_pairs=True``."""
        return self._s_vectors().clone(), self._Psi.clone()

    def psi(self) -> Tensor:
        """Psi = Y - gamma S, (k x n), oldest pair first: what the optimizer stores."""
        return self._Psi.clone()

    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        """What the optimizer keeps of the Gram matrices, float64, oldest pair first:
        (||s_i||^2 (k,), S^T Psi's lower triangle and diagonal (k x k, zeros above: entry
        (i, j), i >= j, is s_i . psi_j), Psi^T Psi (k x k))."""
        return tuple(g.clone() for g in self._grams)  # type: ignore[return-value]

    def matvec(self, v: Tensor) -> Tensor:
        """B v for a flat n-vector ``v`` (computed in float64, returned in v's dtype)."""
        if v.dim() != 1 or v.numel() != self.n:
            raise ValueError(f"matvec expects a flat vector of {self.n} values, got shape {tuple(v.shape)}")
        v64 = v.to(device=self._Psi.device, dtype=torch.float64)
        out = self.gamma * v64
        if self.k > 0:
            psi = self._Psi.to(torch.float64)
            coefficients = torch.linalg.solve(self._m_inv, (psi @ v64).cpu()).to(psi.device)
            out = out + psi.T @ coefficients
        return out.to(device=v.device, dtype=v.dtype)

    def eigenvalues(self) -> Tensor:
        """The k eigenvalues of B on range(Psi), ascending, float64 (every other one is gamma).

        Raises ``torch.linalg.LinAlgError`` if Psi^T Psi is not positive definite, which
        the optimizer's pair policy prevents for the trust-region method."""
        return spectral_form(self._psi_gram, self._m_inv, self.gamma).lambda_par.clone()

    def __repr__(self) -> str:
        return f"CurvatureOperator(k={self.k}, n={self.n}, gamma={self.gamma}, pairs={self._S is not None})"
