"""What data-parallel L-SR1 costs per rank: memory, traffic and time, beside Adam under the same DDP.

    python benchmarks/distributed.py                          # CPU: P = 1, 2 on gloo
    python benchmarks/distributed.py --device cuda            # GPUs: P = 1, 2, 4, 8 (as many as exist), NCCL
    python benchmarks/distributed.py --device cuda --global-batch 10000 --model lenet5

For each P it starts P processes (spawned, file:// rendezvous, the CPU cores split among
the ranks), wraps the model in DistributedDataParallel and trains a few steps on synthetic
MNIST-shaped data, every rank taking b/P rows of each global minibatch of size b. Per
optimizer (Adam; L-SR1 trust region with its memory sharded and replicated) it prints:

- memory: the optimizer's own tensors on each rank (the largest rank), measured
  (``LSR1.memory_bytes()``; for Adam the bytes of its state), beside the design's formula,
  in values of the parameters' dtype: sharded ((2m+2)/P + 2) n, replicated (2m+4) n,
  Adam 2n;
- traffic per step: the gradients DDP all-reduces (n values per closure call) and the
  optimizer's own (``statistics()["bytes_communicated"]`` and ``["collectives"]``);
- time per step (median over ranks of the mean over steps): the whole step, the part in
  closure calls (forward, backward and DDP's gradient all-reduce), the optimizer's
  collectives (time inside torch.distributed calls made outside the closure), and the
  optimizer's compute (the rest).

Goals: memory per rank <= 1.1 x ((2m+2)/P + 2) n sharded; the optimizer's own
bytes per step independent of n; on GPUs at a global batch of 10,000, L-SR1's scaling
efficiency from P = 1 to 8 within 10% of Adam's.

Without the distributed LSR1 (``LSR1(process_group=...)``), its P > 1 rows say so and
give no numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import tempfile
import time
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from lsr1bench.optim import LSR1
from lsr1bench.registry.models import build_model

COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast")


class CollectiveClock:
    """Time spent in torch.distributed collectives called from Python while ``armed``."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.armed = False
        self.device: torch.device | None = None
        self._saved: dict[str, Any] = {}

    def install(self) -> None:
        for name in COLLECTIVES:
            original = getattr(dist, name)
            self._saved[name] = original
            setattr(dist, name, self._timed(original))

    def _timed(self, original: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.armed:
                return original(*args, **kwargs)
            _sync(self.device)
            start = time.perf_counter()
            out = original(*args, **kwargs)
            _sync(self.device)
            self.seconds += time.perf_counter() - start
            self.calls += 1
            return out

        return timed


def _sync(device: torch.device | None) -> None:
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize(device)


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    if hasattr(optimizer, "memory_bytes"):
        return int(optimizer.memory_bytes())
    tensors = [t for state in optimizer.state.values() for t in state.values() if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in tensors)


def _make_optimizer(kind: str, params: list[torch.Tensor], world: int, memory: int) -> torch.optim.Optimizer | str:
    if kind == "adam":
        return torch.optim.Adam(params, lr=1e-3)
    shard = kind == "lsr1-sharded"
    if world == 1:
        if not shard:
            return "same as lsr1-sharded at P = 1 (one process has no layout)"
        return LSR1(params, memory=memory)
    return LSR1(params, memory=memory, process_group=dist.group.WORLD, shard_memory=shard)


def _time_optimizer(
    kind: str,
    world: int,
    args: argparse.Namespace,
    device: torch.device,
    clock: CollectiveClock,
    xb: torch.Tensor,
    yb: torch.Tensor,
) -> dict[str, Any]:
    """Memory, traffic and time per step of one optimizer on this rank."""
    torch.manual_seed(0)
    model = build_model(args.model, batch_norm=False, input_shape=(1, 28, 28), num_classes=10).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    params = list(model.parameters())
    n = sum(p.numel() for p in params)
    optimizer = _make_optimizer(kind, params, world, args.m)
    if isinstance(optimizer, str):
        return {"kind": kind, "n": n, "note": optimizer}
    closure_seconds = 0.0
    closure_calls = 0

    def closure() -> torch.Tensor:
        nonlocal closure_seconds, closure_calls
        clock.armed = False
        _sync(device)
        start = time.perf_counter()
        optimizer.zero_grad()
        loss = F.cross_entropy(net(xb), yb)
        loss.backward()
        _sync(device)
        closure_seconds += time.perf_counter() - start
        closure_calls += 1
        clock.armed = True
        return loss

    def statistics_now() -> dict[str, Any]:
        return dict(optimizer.statistics()) if hasattr(optimizer, "statistics") else {}

    for _ in range(args.warmup):
        optimizer.step(closure)
    closure_seconds, closure_calls = 0.0, 0
    clock.seconds, clock.calls = 0.0, 0
    before = statistics_now()
    _sync(device)
    started = time.perf_counter()
    for _ in range(args.steps):
        clock.armed = True
        optimizer.step(closure)
        clock.armed = False
    _sync(device)
    total = time.perf_counter() - started
    stats = statistics_now()
    steps = args.steps
    element = params[0].element_size()
    own_calls = stats.get("collectives", 0) - before.get("collectives", 0) if "collectives" in stats else clock.calls
    return {
        "kind": kind,
        "n": n,
        "element": element,
        "memory": _state_bytes(optimizer),
        "grad_bytes": (closure_calls / steps) * n * element if world > 1 else 0,
        "own_bytes": (stats.get("bytes_communicated", 0) - before.get("bytes_communicated", 0)) / steps,
        "own_calls": own_calls / steps,
        "step": total / steps,
        "closure": closure_seconds / steps,
        "collectives": clock.seconds / steps,
    }


def _rank(rank: int, world: int, args: argparse.Namespace, store: str, results: Any) -> None:
    if args.device == "cpu":  # the cores split among the ranks, as lsr1bench run does
        torch.set_num_threads(args.threads or max(1, len(os.sched_getaffinity(0)) // world))
    device = torch.device(args.device, rank) if args.device == "cuda" else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(
        backend, init_method=f"file://{store}", rank=rank, world_size=world, timeout=timedelta(seconds=300)
    )
    clock = CollectiveClock()
    clock.device = device
    clock.install()
    rows = []
    try:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(args.global_batch, 1, 28, 28, generator=generator).to(device)
        y = torch.randint(0, 10, (args.global_batch,), generator=generator).to(device)
        lo, hi = rank * args.global_batch // world, (rank + 1) * args.global_batch // world
        xb, yb = x[lo:hi], y[lo:hi]
        for kind in args.optimizers:
            rows.append(_time_optimizer(kind, world, args, device, clock, xb, yb))
    finally:
        clock.armed = False
        results[rank] = rows
        dist.destroy_process_group()


def formula(kind: str, n: int, world: int, m: int) -> float:
    """The design's optimizer memory per rank, in parameter-sized values."""
    if kind == "adam":
        return 2.0 * n
    if kind == "lsr1-sharded" and world > 1:
        return ((2 * m + 2) / world + 2) * n
    return (2 * m + 4) * n


def measure(world: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    context = mp.get_context("spawn")
    manager = context.Manager()
    results = manager.dict()
    with tempfile.TemporaryDirectory(prefix="lsr1bench-bench-") as tmp:
        store = os.path.join(tmp, "store")
        processes = [context.Process(target=_rank, args=(r, world, args, store, results)) for r in range(world)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(args.timeout)
        hung = [r for r, p in enumerate(processes) if p.is_alive()]
        for p in processes:
            if p.is_alive():
                p.kill()
        if hung or any(p.exitcode for p in processes) or len(results) < world:
            codes = [p.exitcode for p in processes]
            raise SystemExit(f"P={world}: ranks {hung or 'some'} hung or failed (exit codes {codes})")
        per_rank = [results[r] for r in range(world)]
    merged = []
    for rows in zip(*per_rank):
        first = rows[0]
        if "note" in first:
            merged.append(first)
            continue
        out = dict(first)
        out["memory"] = max(r["memory"] for r in rows)
        for key in ("step", "closure", "collectives"):
            out[key] = statistics.median(r[key] for r in rows)
        merged.append(out)
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--ranks", nargs="+", type=int, help="default: 1 2 on CPU; 1 2 4 8 (up to the GPU count)")
    parser.add_argument("--model", default="lenet5", choices=["lenet5", "mlp"])
    parser.add_argument("--global-batch", type=int, default=None, help="default: 200 on CPU, 10000 on GPUs")
    parser.add_argument("--m", type=int, default=5, help="L-SR1 memory")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads per rank (default: cores / P)")
    parser.add_argument("--timeout", type=float, default=600, help="seconds before ranks count as hung")
    parser.add_argument("--optimizers", nargs="+", default=["adam", "lsr1-sharded", "lsr1-replicated"])
    args = parser.parse_args()
    if args.device == "cuda":
        gpus = torch.cuda.device_count()
        if gpus == 0:
            raise SystemExit("--device cuda: no CUDA device here")
        ranks = args.ranks or [p for p in (1, 2, 4, 8) if p <= gpus]
        if max(ranks) > gpus:
            raise SystemExit(f"--ranks {max(ranks)} needs {max(ranks)} GPUs; this machine has {gpus}")
    else:
        ranks = args.ranks or [1, 2]
    args.global_batch = args.global_batch or (10000 if args.device == "cuda" else 200)
    bad = [p for p in ranks if args.global_batch % p]
    if bad:
        raise SystemExit(f"--global-batch {args.global_batch} is not divisible by ranks {bad}")

    print(
        f"model {args.model}, global batch {args.global_batch}, m = {args.m}, device {args.device}, "
        f"{args.steps} timed steps after {args.warmup}"
    )
    header = (
        f"{'P':>2} {'optimizer':<16} {'mem/rank MiB':>12} {'formula MiB':>11} {'ratio':>5} "
        f"{'grad MB/step':>12} {'opt B/step':>10} {'opt coll/step':>13} "
        f"{'step ms':>8} {'closure ms':>10} {'opt compute ms':>14} {'opt coll ms':>11}"
    )
    print(header)
    print("-" * len(header))
    step_times: dict[tuple[str, int], float] = {}
    for world in ranks:
        for row in measure(world, args):
            kind = row["kind"]
            if "note" in row:
                print(f"{world:>2} {kind:<16} {row['note']}")
                continue
            values = formula(kind, row["n"], world, args.m)
            predicted = values * row["element"]
            compute = row["step"] - row["closure"] - row["collectives"]
            step_times[(kind, world)] = row["step"]
            print(
                f"{world:>2} {kind:<16} {row['memory'] / 2**20:>12.3f} {predicted / 2**20:>11.3f} "
                f"{row['memory'] / predicted:>5.2f} {row['grad_bytes'] / 1e6:>12.3f} {row['own_bytes']:>10.0f} "
                f"{row['own_calls']:>13.1f} {row['step'] * 1e3:>8.2f} {row['closure'] * 1e3:>10.2f} "
                f"{compute * 1e3:>14.2f} {row['collectives'] * 1e3:>11.2f}"
            )
    with contextlib.suppress(KeyError, ZeroDivisionError):
        top = max(ranks)
        if top > 1:
            for kind in args.optimizers:
                if (kind, 1) in step_times and (kind, top) in step_times:
                    efficiency = step_times[(kind, 1)] / (top * step_times[(kind, top)])
                    print(f"strong-scaling efficiency P=1 -> {top}, {kind}: {efficiency:.2f}")
    n_note = "n = parameters; formula: sharded ((2m+2)/P + 2) n, replicated (2m+4) n, Adam 2n values"
    print(n_note)


if __name__ == "__main__":
    main()
