"""Record the CI suite under rounding-only changes and under real regressions.

The gate tests (tests/test_gate.py) read the baseline files this writes, so they check
``lsr1bench compare`` against what training really does, not only against numbers made
up by hand. Run from the repository root (54 runs: the suite's 18 in each thread layout
and 6 per regression):

    python tests/data/gate/make_fixtures.py /tmp/gate

Each variant trains ``suites/ci.yaml`` (3 seeds) into ``/tmp/gate/<variant>/ci`` and is
exported to ``tests/data/gate/<variant>.json``:

* ``threads1``: two worker processes with one torch thread each (the suite's ``jobs: 2``,
  as ``.ci/run`` and the committed baseline run it);
* ``threads2``: one process with two torch threads (``--jobs 1``): the same code and
  seeds, other summation orders;
* ``adam-lr-tenth``: Adam with a learning rate ten times smaller (1e-4);
* ``lsr1-radius-broken``: L-SR1 whose trust-region radius never grows and shrinks to a
  twentieth on a rejected step (``radius_increase=1.0, radius_decrease=0.05``);
* ``nag-diverges``: NAG with a learning rate of 100.

The regression variants retrain only the cells they break and reuse ``threads1``'s runs
for the others, so each differs from ``threads1`` by one injected cause.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import replace
from pathlib import Path

from lsr1bench import scheduler
from lsr1bench.grid import expand
from lsr1bench.reporting import build_report, export_baseline
from lsr1bench.spec import load_suite

HERE = Path(__file__).resolve().parent
SUITE = HERE.parents[2] / "suites" / "ci.yaml"

BROKEN = {
    "adam-lr-tenth": ("adam", {"lr": 1e-4}),
    "lsr1-radius-broken": ("lsr1", {"radius_increase": 1.0, "radius_decrease": 0.05}),
    "nag-diverges": ("nag", {"lr": 100.0}),
}


def train(runs: list, output: Path, devices: list[str]) -> None:
    planned = scheduler.plan(runs, output, force=True)
    outcome = scheduler.run_suite(planned, output, devices)
    print(f"{output}: {sorted(outcome.statuses.items())}", flush=True)


def export(output: Path, name: str) -> None:
    path = export_baseline(build_report(output / "ci"), HERE / f"{name}.json")
    print(f"wrote {path}", flush=True)


def main(root: Path, export_only: bool = False) -> None:
    runs = expand(load_suite(SUITE))
    if not export_only:
        train(runs, root / "threads1", ["cpu", "cpu"])
        train(runs, root / "threads2", ["cpu"])
        for name, (label, params) in BROKEN.items():
            out = root / name
            shutil.rmtree(out, ignore_errors=True)
            shutil.copytree(root / "threads1", out)
            broken = [replace(r, optimizer_params={**r.optimizer_params, **params}) for r in runs if r.label == label]
            train(broken, out, ["cpu", "cpu"])
    for name in ("threads1", "threads2", *BROKEN):
        export(root / name, name)


if __name__ == "__main__":
    # --export-only: rewrite the JSON files from runs already under ROOT
    args = [a for a in sys.argv[1:] if a != "--export-only"]
    main(Path(args[0] if args else "/tmp/gate"), export_only="--export-only" in sys.argv)
