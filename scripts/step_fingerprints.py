"""Bit-level fingerprints of L-SR1 runs, to show that a refactor changes no arithmetic.

Prints one line per run: the sha256 of the final parameters' bytes (concatenated in
parameter order) and of ``statistics()`` (as sorted JSON, floats by repr). Two versions
of the optimizer are bit-identical on these runs when every line matches.

Runs: (i) the long float32 runs of tests/test_lsr1_invariants.py (the teacher MLP with
and without batch norm, 300 steps; LeNet-5 on the embedded MNIST subset, 200 steps) and
its float64 run; (ii) a 300-step float32 MLP on the embedded MNIST subset with minibatch
noise, trust region and line search; (iii) 2-rank gloo data-parallel runs (trust region
sharded, line search unsharded), as in tests/test_lsr1_distributed.py.

    PYTHONPATH=. OMP_NUM_THREADS=1 python scripts/step_fingerprints.py [--skip NAME ...]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from datetime import timedelta

import torch
import torch.nn.functional as F
from torch import nn

from lsr1bench.optim import LSR1


def fingerprint(params, opt: LSR1) -> str:
    data = b"".join(p.detach().contiguous().cpu().reshape(-1).view(torch.uint8).numpy().tobytes() for p in params)
    stats = json.dumps(opt.statistics(), sort_keys=True, default=repr)
    return f"params {hashlib.sha256(data).hexdigest()[:16]} stats {hashlib.sha256(stats.encode()).hexdigest()[:16]}"


def run_steps(model: nn.Module, opt: LSR1, losses) -> None:
    for loss_fn in losses:
        def closure(loss_fn=loss_fn):
            opt.zero_grad()
            loss = loss_fn()
            loss.backward()
            return loss

        opt.step(closure)


def teacher_mlp(batch_norm: bool) -> str:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(100, 200)]
    if batch_norm:
        layers.append(nn.BatchNorm1d(200))
    layers += [nn.Tanh(), nn.Linear(200, 10)]
    model = nn.Sequential(*layers)
    opt = LSR1(model.parameters(), memory=5, keep_pairs=True)
    gen = torch.Generator().manual_seed(1)
    n = 4000
    X = torch.randn(n, 100, generator=gen)
    W = torch.randn(100, 10, generator=gen)
    labels = (X @ W + 3.0 * torch.randn(n, 10, generator=gen)).argmax(1)

    def losses():
        for _ in range(300):
            idx = torch.randint(0, n, (1000,), generator=gen)
            xb, yb = X[idx], labels[idx]
            yield lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)

    run_steps(model, opt, losses())
    return fingerprint(model.parameters(), opt)


def lenet5() -> str:
    from lsr1bench.registry.datasets import load_dataset
    from lsr1bench.registry.models import build_model

    torch.manual_seed(0)
    data = load_dataset("mnist-embedded", train_subset=4000, test_subset=100)
    model = build_model("lenet5", batch_norm=True, input_shape=data.input_shape)
    opt = LSR1(model.parameters(), memory=5, keep_pairs=True)
    gen = torch.Generator().manual_seed(0)

    def losses():
        for _ in range(200):
            idx = torch.randint(0, len(data.train_y), (200,), generator=gen)
            xb, yb = data.train_x[idx], data.train_y[idx]
            yield lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)

    run_steps(model, opt, losses())
    return fingerprint(model.parameters(), opt)


def float64_mlp() -> str:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(100, 50), nn.Tanh(), nn.Linear(50, 10)).double()
    opt = LSR1(model.parameters(), memory=5, keep_pairs=True)
    gen = torch.Generator().manual_seed(2)
    X = torch.randn(2000, 100, generator=gen, dtype=torch.float64)
    labels = (X @ torch.randn(100, 10, generator=gen, dtype=torch.float64)).argmax(1)

    def losses():
        for _ in range(60):
            idx = torch.randint(0, 2000, (500,), generator=gen)
            yield lambda idx=idx: F.cross_entropy(model(X[idx]), labels[idx])

    run_steps(model, opt, losses())
    return fingerprint(model.parameters(), opt)


def mnist_mlp(method: str) -> str:
    from lsr1bench.registry.datasets import load_dataset

    data = load_dataset("mnist-embedded", train_subset=4000, test_subset=100)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.Tanh(), nn.Linear(64, 10))
    opt = LSR1(model.parameters(), method=method, memory=5)
    gen = torch.Generator().manual_seed(3)

    def losses():
        for _ in range(300):
            idx = torch.randint(0, len(data.train_y), (100,), generator=gen)
            xb, yb = data.train_x[idx], data.train_y[idx]
            yield lambda xb=xb, yb=yb: F.cross_entropy(model(xb), yb)

    run_steps(model, opt, losses())
    return fingerprint(model.parameters(), opt)


# --- 2-rank gloo ---------------------------------------------------------------------------
DP_STEPS, DP_BATCH = 30, 60


def _dp_rank(rank: int, world: int, store: str, out: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=60))
    try:
        gen = torch.Generator().manual_seed(1)
        X = torch.randn(DP_STEPS * DP_BATCH, 7, generator=gen, dtype=torch.float64)
        labels = (X[:, :3] + torch.randn(DP_STEPS * DP_BATCH, 3, generator=gen, dtype=torch.float64)).argmax(1)
        lines = []
        for method, shard in (("trust_region", True), ("trust_region", False), ("line_search", True)):
            torch.manual_seed(0)
            model = nn.Sequential(nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, 3)).double()
            ddp = DDP(model)
            opt = LSR1(ddp.parameters(), method=method, memory=4, process_group=dist.group.WORLD,
                       shard_memory=shard)
            for step in range(DP_STEPS):
                lo = step * DP_BATCH + rank * DP_BATCH // world
                hi = step * DP_BATCH + (rank + 1) * DP_BATCH // world
                xb, yb = X[lo:hi], labels[lo:hi]

                def closure(xb=xb, yb=yb, opt=opt, ddp=ddp):
                    opt.zero_grad()
                    loss = F.cross_entropy(ddp(xb), yb)
                    loss.backward()
                    return loss

                opt.step(closure)
            lines.append(f"dp_{method}_{'sharded' if shard else 'replicated'}_rank{rank}: "
                         + fingerprint(model.parameters(), opt))
        with open(out, "w") as fh:
            fh.write("\n".join(lines))
    finally:
        dist.destroy_process_group()


def data_parallel() -> list[str]:
    import multiprocessing as mp

    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="fingerprints-") as tmp:
        store = os.path.join(tmp, "store")
        outs = [os.path.join(tmp, f"rank{r}.txt") for r in range(2)]
        procs = [context.Process(target=_dp_rank, args=(r, 2, store, outs[r])) for r in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(300)
            if p.exitcode != 0:
                raise SystemExit(f"a data-parallel rank failed (exit code {p.exitcode})")
        return [line for o in outs for line in open(o).read().splitlines()]


RUNS = {
    "teacher_mlp": lambda: teacher_mlp(False),
    "teacher_mlp_bn": lambda: teacher_mlp(True),
    "lenet5_mnist": lenet5,
    "float64_mlp": float64_mlp,
    "mnist_mlp_trust_region": lambda: mnist_mlp("trust_region"),
    "mnist_mlp_line_search": lambda: mnist_mlp("line_search"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", nargs="*", default=[], choices=[*RUNS, "data_parallel"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, run in RUNS.items():
        if name not in args.skip:
            print(f"{name}: {run()}", flush=True)
    if "data_parallel" not in args.skip:
        for line in data_parallel():
            print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
