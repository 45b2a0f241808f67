"""Run a function on P real processes joined by gloo (file:// rendezvous), with a timeout.

``run_ranks(fn, P, *args)`` starts P ``spawn`` processes, each with one torch thread and
``init_process_group("gloo", init_method="file://...")``, calls ``fn(rank, P, *args)``
and returns the P results in rank order. A rank that raises has its traceback re-raised
here; ranks still running at the deadline are killed and named.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import tempfile
import traceback
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

COLLECTIVE_TIMEOUT_S = 60


def _child(fn: Callable[..., Any], rank: int, world: int, store: str, out: str, args: tuple) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    result: dict[str, Any]
    try:
        dist.init_process_group(
            "gloo",
            init_method=f"file://{store}",
            rank=rank,
            world_size=world,
            timeout=timedelta(seconds=COLLECTIVE_TIMEOUT_S),
        )
        try:
            result = {"value": fn(rank, world, *args)}
        finally:
            dist.destroy_process_group()
    except BaseException:  # noqa: BLE001 - sent to the parent
        result = {"error": traceback.format_exc()}
    Path(out).write_bytes(pickle.dumps(result))


def run_ranks(fn: Callable[..., Any], world: int, *args: Any, timeout: float = 240) -> list[Any]:
    context = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="lsr1bench-spawn-") as tmp:
        store = os.path.join(tmp, "store")
        outs = [os.path.join(tmp, f"rank{r}.pkl") for r in range(world)]
        processes = [
            context.Process(target=_child, args=(fn, r, world, store, outs[r], args), daemon=True)
            for r in range(world)
        ]
        for p in processes:
            p.start()
        import time

        deadline = time.monotonic() + timeout
        for p in processes:
            p.join(max(0.0, deadline - time.monotonic()))
        hung = [r for r, p in enumerate(processes) if p.is_alive()]
        for p in processes:
            if p.is_alive():
                p.kill()
                p.join(5)
        if hung:
            raise AssertionError(f"ranks {hung} of {world} did not finish within {timeout} s")
        results = []
        for r, path in enumerate(outs):
            if not os.path.exists(path):
                raise AssertionError(f"rank {r} died (exit code {processes[r].exitcode}) without a result")
            result = pickle.loads(Path(path).read_bytes())
            if "error" in result:
                raise AssertionError(f"rank {r} raised:\n{result['error']}")
            results.append(result["value"])
        return results
