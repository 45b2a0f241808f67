"""What starting data-parallel runs costs: the README's ``ranks: [1, 2]`` demo, timed per run.

    python benchmarks/ranks_launch.py                 # 2 epochs, the README's three optimizers
    python benchmarks/ranks_launch.py --epochs 5 --output /tmp/ranks

Trains the demo suite of README "Data-parallel runs" (LeNet-5 on the embedded MNIST
subset, global batch 400, L-SR1 sharded and replicated and Adam, on 1 and 2 CPU ranks)
through the scheduler, as ``lsr1bench run --devices cpu`` does, and prints for each run
its wall-clock (from the scheduler's start event to its end event), its training seconds
(``train_seconds``: the optimizer steps only) and the difference: what the run paid to be
started, its data loaded, its model built and its epochs evaluated. The goal:
a 2-rank run's difference at most 2 s on the CPU. The first run of each rank count also
pays for starting the processes that the later ones reuse.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SUITE = """
name: ranks-demo
epochs: {epochs}
ranks: [1, 2]
batch_sizes: [400]
devices: cpu
grids:
  - models: [lenet5]
    datasets: [mnist-embedded]
    optimizers: [lsr1, adam, {{name: lsr1, label: lsr1-repl, params: {{shard_memory: false}}}}]
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None, help="results folder (default: a temporary one)")
    args = parser.parse_args()

    from lsr1bench import scheduler
    from lsr1bench.grid import expand
    from lsr1bench.spec import parse_suite

    runs = expand(parse_suite(SUITE.format(epochs=args.epochs), default_name="ranks-demo"))
    with tempfile.TemporaryDirectory(prefix="lsr1bench-ranks-") as tmp:
        output = args.output or Path(tmp)
        todo = scheduler.plan(runs, output, force=True)
        scheduler.prepare_data([p.spec for p in todo])
        started: dict[str, float] = {}
        rows: list[tuple[str, float, float]] = []

        def on_event(event: dict) -> None:
            if event["type"] == "start":
                started[event["run_id"]] = time.perf_counter()
            elif event["type"] == "end":
                wall = time.perf_counter() - started[event["run_id"]]
                rows.append((event["run_id"], wall, event.get("train_seconds") or 0.0, event["status"]))

        begun = time.perf_counter()
        scheduler.run_suite(todo, output, ["cpu"], on_event)
        total = time.perf_counter() - begun
    print(f"{'run':<42} {'status':>9} {'wall s':>7} {'train s':>8} {'wall - train':>13}")
    for run_id, wall, train, status in rows:
        print(f"{run_id:<42} {status:>9} {wall:7.2f} {train:8.2f} {wall - train:13.2f}")
    two = [wall - train for run_id, wall, train, _ in rows if "-p2-" in run_id]
    if two:
        print(f"2-rank runs: wall - train mean {sum(two) / len(two):.2f} s, max {max(two):.2f} s "
              f"(goal: <= 2 s); suite {total:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
