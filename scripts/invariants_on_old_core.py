"""Run tests/test_lsr1_invariants.py's checks against the optimizer of commit 3e0c45a
(an earlier core), through a shim that exposes its kept state as ``curvature()``; the old
code keeps no pred, so that check is off.

    git worktree add /tmp/old 3e0c45a
    PYTHONPATH=/tmp/old python scripts/invariants_on_old_core.py

Prints, per problem, "passed" or the first invariant that failed.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

import lsr1bench.optim.lsr1 as old
from lsr1bench.registry.datasets import load_dataset
from lsr1bench.registry.models import build_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
old.OUTCOMES = ("accepted_steps", "rejected_steps")  # the old code's only outcomes
import test_lsr1_invariants as T  # noqa: E402 - needs the path and OUTCOMES above


class OldModel:
    """The old state ([S; Y] and S^T S, S^T Y, Y^T Y) in the new operator's terms."""

    def __init__(self, S, Y, ss, sy, yy, gamma):
        self.S, self.Y, self.P, self.gamma = S, Y, Y - gamma * S, gamma
        # exact algebra: S^T Psi = S^T Y - gamma S^T S, Psi^T Psi = ...
        self.kept = (ss, sy - gamma * ss, yy - gamma * (sy + sy.T) + gamma**2 * ss)
        self.k = S.shape[0]

    def basis(self):
        return self.S.clone(), self.P.clone()

    def pairs(self):
        return self.S.clone(), self.Y.clone()

    def grams(self):
        # what the checks compare since S is no longer stored: ||s_i||^2, the lower triangle of S^T Psi, Psi^T Psi
        ss, sp, pp = self.kept
        return torch.diagonal(ss).clone(), torch.tril(sp), pp

    def matvec(self, v):
        v = v.double()
        if self.k == 0:
            return self.gamma * v
        sp = self.kept[1]
        lower = torch.tril(sp, -1)
        m_inv = torch.diag(torch.diagonal(sp)) + lower + lower.T
        return self.gamma * v + self.P.T @ torch.linalg.solve(m_inv, self.P @ v)


class OldLSR1(old.LSR1):
    def curvature(self):
        memory = self._memory(self._global_state())
        idx = torch.tensor(memory.order, dtype=torch.long)
        S = memory.buffer[: memory.slots][idx].double()
        Y = memory.buffer[memory.slots :][idx].double()
        return OldModel(S, Y, *memory.grams(), self.defaults["gamma"])

    def statistics(self):
        stats = super().statistics()
        stats.setdefault("nonpositive_pred", 0)
        stats["last_pred"] = 0.0  # not kept by the old code; the pred check is off
        return stats


def report(name, model, batches):
    opt = OldLSR1(model.parameters(), memory=5)
    try:
        T.check_invariants(model, opt, batches, gram_tol=1e-4, pred_rtol=math.inf)
        print(name, "passed")
    except AssertionError as exc:
        print(name, "FAILED:", str(exc).splitlines()[0])


def main() -> None:
    for batch_norm in (False, True):
        torch.manual_seed(0)
        layers = [nn.Linear(100, 200)] + ([nn.BatchNorm1d(200)] if batch_norm else []) + [nn.Tanh(), nn.Linear(200, 10)]
        model = nn.Sequential(*layers)
        report("mlp-bn" if batch_norm else "mlp", model, T.teacher_problem(seed=1)(model, 300))
    torch.manual_seed(0)
    data = load_dataset("mnist-embedded", train_subset=4000, test_subset=100)
    model = build_model("lenet5", batch_norm=True, input_shape=data.input_shape)
    gen = torch.Generator().manual_seed(0)

    def batches(steps, batch=200):
        for _ in range(steps):
            idx = torch.randint(0, len(data.train_y), (batch,), generator=gen)
            xb, yb = data.train_x[idx], data.train_y[idx]
            yield lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)

    report("lenet5-bn", model, batches(200))


if __name__ == "__main__":
    main()
