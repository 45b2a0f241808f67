"""The L-SR1 model as an operator: ``LSR1.curvature()`` returns a :class:`CurvatureOperator`.

B = gamma I + Psi M Psi^T with Psi = Y - gamma S and M^{-1} = D + L + L^T - gamma S^T S
(S^T Y = L + D + U). The operator holds a snapshot of the stored vectors (S and Psi) and
of the Gram matrices the optimizer keeps, so it is the B the next step will use, and it
stays valid while training goes on.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._compact import b_factors
from ._trust_region import spectral_form


class CurvatureOperator:
    """B of the stored pairs: ``pairs()``, ``matvec(v)``, ``eigenvalues()``.

    ``k`` pairs (0 <= k <= m) of n-vectors; B has the k eigenvalues of ``eigenvalues()``
    on range(Psi) and the eigenvalue gamma on its orthogonal complement (n - k times).
    """

    def __init__(self, S: Tensor, Psi: Tensor, ss: Tensor, sp: Tensor, pp: Tensor, gamma: float) -> None:
        self._S, self._Psi = S, Psi
        self.gamma = float(gamma)
        self._grams = (ss.clone(), sp.clone(), pp.clone())
        self._psi_gram, self._m_inv = b_factors(ss, sp, pp)

    @property
    def k(self) -> int:
        """Number of stored pairs."""
        return int(self._S.shape[0])

    @property
    def n(self) -> int:
        """Number of parameters (the length of every vector)."""
        return int(self._S.shape[1])

    def pairs(self) -> tuple[Tensor, Tensor]:
        """(S, Y): (k x n) tensors in the parameters' dtype and device, oldest pair first.

        The optimizer stores psi = y - gamma s; Y is formed as Psi + gamma S here, so it
        equals the y of each pair up to the rounding of that sum."""
        return self._S.clone(), self._Psi + self.gamma * self._S

    def basis(self) -> tuple[Tensor, Tensor]:
        """(S, Psi): the vectors the optimizer stores, (k x n), oldest pair first."""
        return self._S.clone(), self._Psi.clone()

    def grams(self) -> tuple[Tensor, Tensor, Tensor]:
        """The Gram matrices the optimizer keeps, (S^T S, S^T Psi, Psi^T Psi), float64 (k x k)."""
        return tuple(g.clone() for g in self._grams)  # type: ignore[return-value]

    def matvec(self, v: Tensor) -> Tensor:
        """B v for a flat n-vector ``v`` (computed in float64, returned in v's dtype)."""
        if v.dim() != 1 or v.numel() != self.n:
            raise ValueError(f"matvec expects a flat vector of {self.n} values, got shape {tuple(v.shape)}")
        v64 = v.to(device=self._S.device, dtype=torch.float64)
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
        return f"CurvatureOperator(k={self.k}, n={self.n}, gamma={self.gamma})"
