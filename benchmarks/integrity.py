"""Does L-SR1 stay L-SR1 over a long float32 stochastic run? Public API only.

    python benchmarks/integrity.py [--steps 300] [--model mlp|mlp-bn]

The problem: an MLP 100-200-10 (tanh, 22,210 float32 parameters), cross-entropy
on 4,000 random inputs with noisy linear-teacher labels, a fresh minibatch of 1,000 every
step, ``LSR1(model.parameters(), memory=5)``, one thread. It prints how many trial steps
left the trust region they were solved in (||x_trial - x|| against the radius before the
step), the worst ratio, and the pair policy's drops and the skip test's skips. Runs against
any version of the optimizer (it reads only ``statistics()`` and the parameters).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from lsr1bench.optim import LSR1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--model", choices=["mlp", "mlp-bn"], default="mlp")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1)
    X = torch.randn(4000, 100, generator=gen)
    labels = (X @ torch.randn(100, 10, generator=gen) + 3.0 * torch.randn(4000, 10, generator=gen)).argmax(1)
    layers: list[nn.Module] = [nn.Linear(100, 200)]
    if args.model == "mlp-bn":
        layers.append(nn.BatchNorm1d(200))
    model = nn.Sequential(*layers, nn.Tanh(), nn.Linear(200, 10))
    params = list(model.parameters())
    opt = LSR1(params, memory=5)
    outside, worst = 0, 0.0
    for _ in range(args.steps):
        idx = torch.randint(0, 4000, (1000,), generator=gen)
        points: list[torch.Tensor] = []

        def closure(idx=idx, points=points):
            opt.zero_grad()
            points.append(torch.cat([p.detach().reshape(-1).double() for p in params]))
            loss = F.cross_entropy(model(X[idx]), labels[idx])
            loss.backward()
            return loss

        radius = opt.statistics()["radius"]
        opt.step(closure)
        if radius is None or len(points) < 2:
            continue
        ratio = float((points[1] - points[0]).norm()) / radius
        worst = max(worst, ratio)
        outside += int(ratio > 1 + 1e-5)
    stats = opt.statistics()
    print(f"{args.model}: {stats['steps']} steps, {stats['accepted_steps']} accepted, "
          f"{outside} trial steps outside the trust region (worst ||s|| / radius = {worst:.4f}), "
          f"{stats['dropped_pairs']} pairs dropped, {stats['skipped_updates']} updates skipped")


if __name__ == "__main__":
    main()
