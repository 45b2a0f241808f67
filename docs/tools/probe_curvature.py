"""Probe the steps of one L-SR1 run where B's smallest eigenvalue is far below the others.

The Table 1 CPU records hold B's smallest eigenvalue only at the end of each epoch
(``epochs.csv``, ``min_eigenvalue``), and one of them stands far apart from the rest (the
doc's "curvature-outlier" fragment). This replays that run's first epoch through the
tool's own runner (``lsr1bench.runner.train``, same suite entry, seed, data and minibatch
order), with the optimizer built with ``keep_pairs=True`` so that the stored s vectors can
be read, and records after every step:

* ``stored``: whether the step stored a pair (1) or the skip test skipped it (0);
* ``k``: the pairs held after the step;
* ``skip_test_cosine``: the cosine the optimizer's skip test computed in the step;
* ``min_eigenvalue``: B's smallest eigenvalue after the step (over range(Psi), and gamma
  when k < n), as the runner computes it at the end of an epoch;
* for a stored pair (s, y), with v = y - B s for the B the step was taken with (the SR1
  update adds v v^T / (s^T v), a rank-one term whose nonzero eigenvalue is
  ``sr1_term`` = ||v||^2 / (s^T v) = sign(s^T v) ||v|| / (cosine ||s||)):
  ``cosine`` = |s^T v| / (||s|| ||v||), the skip test's quantity (a pair is stored when
  it is at least r); ``v_over_s`` = ||v|| / ||s||; ``curvature_along_s`` = s^T y / ||s||^2;
  ``sr1_term``;
* the same quantities over the SR1 recursion from gamma I through the pairs B holds
  (``_window``): ``window_min_cosine``, ``window_min_term`` (the most negative rank-one
  term) and which pair gave it (1 = oldest kept), and ``recursion_vs_compact``, the
  relative gap between that recursion's B v and the optimizer's compact B v.

The replay is checked against the committed record before anything is written: the
probe's epoch-1 training loss, test error and end-of-epoch smallest eigenvalue must equal
the record's (keeping S changes no arithmetic of the step), else it exits 1.

Usage, from the repository's root (full MNIST under DATA_ROOT, e.g. ../shared/data)::

    python docs/tools/probe_curvature.py ../shared/data docs/reproduction/curvature_probe.csv
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import lsr1bench.runner as runner
from lsr1bench.grid import expand
from lsr1bench.optim import LSR1
from lsr1bench.records import atomic_write_text
from lsr1bench.registry.optimizers import model_eigenvalues
from lsr1bench.spec import load_suite

ROOT = Path(__file__).resolve().parents[2]
SUITE = ROOT / "suites" / "repro" / "table1_mnist_cpu.yaml"
RUN_ID = "lenet5-bn-mnist-lsr1-b10000-s2"
RECORD = ROOT / "docs" / "reproduction" / "runs" / "repro-table1-mnist-cpu" / RUN_ID
COLUMNS = ["step", "stored", "k", "min_eigenvalue", "skip_test_cosine", "cosine", "v_over_s", "curvature_along_s",
           "sr1_term", "window_min_cosine", "window_min_term", "window_min_term_pair", "recursion_vs_compact"]


def _min_eigenvalue(curvature: Any) -> float:
    """B's smallest eigenvalue, as the runner's end-of-epoch column takes it."""
    return min(model_eigenvalues(curvature))


def _window(curvature: Any) -> dict[str, str]:
    """The SR1 recursion from gamma I over the pairs B holds, oldest first: B_j = B_{j-1} +
    v_j v_j^T / (s_j^T v_j), v_j = y_j - B_{j-1} s_j. With m pairs held the compact B is this
    recursion restarted at the oldest pair kept, so its denominators are not the ones the
    skip tests checked (each against a B that still held older pairs). Returns the smallest
    cosine |s_j^T v_j| / (||s_j|| ||v_j||) of the window, the most negative rank-one term
    ||v_j||^2 / (s_j^T v_j), and how far the recursion's B v is from the compact B v for a
    random v (relative), which shows the two are the same B."""
    S, Y = curvature.pairs()
    S, Y = S.double(), Y.double()
    gamma = curvature.gamma
    us: list[torch.Tensor] = []
    ds: list[float] = []

    def apply(x: torch.Tensor) -> torch.Tensor:
        out = gamma * x
        for u, d in zip(us, ds):
            out = out + u * (float(u @ x) / d)
        return out

    cosines, terms = [], []
    for s, y in zip(S, Y):
        v = y - apply(s)
        d = float(s @ v)
        cosines.append(abs(d) / (float(s.norm()) * float(v.norm())))
        terms.append(float(v @ v) / d)
        us.append(v)
        ds.append(d)
    x = torch.randn(curvature.n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    compact = curvature.matvec(x)
    gap = float((apply(x) - compact).norm() / compact.norm())
    worst = min(range(len(terms)), key=lambda i: terms[i])
    return {"window_min_cosine": f"{min(cosines):.4g}", "window_min_term": f"{terms[worst]:.4g}",
            "window_min_term_pair": str(worst + 1), "recursion_vs_compact": f"{gap:.2g}"}


class _Probe:
    """Wraps the run's optimizer: one row per step, from the curvature before and after."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def wrap(self, train_optimizer: Any) -> Any:
        # the same optimizer, rebuilt before its first step with keep_pairs=True (the suite
        # schema does not take that diagnostics option)
        group = train_optimizer.optimizer.param_groups[0]
        settings = {key: value for key, value in group.items() if key != "params"}
        lsr1 = LSR1(group["params"], **{**settings, "keep_pairs": True})
        train_optimizer.optimizer = lsr1
        step = train_optimizer.step

        def probed_step(closure: Any) -> Any:
            before = lsr1.curvature()
            skipped_before = lsr1.statistics()["skipped_updates"]
            lsr1.update_cosines(clear=True)
            loss = step(closure)
            after = lsr1.curvature()
            tests = lsr1.update_cosines(clear=True)  # a step with no trial point makes no skip test
            stored = bool(tests) and lsr1.statistics()["skipped_updates"] == skipped_before
            row: dict[str, Any] = {"step": len(self.rows) + 1, "stored": int(stored), "k": after.k,
                                   "min_eigenvalue": f"{_min_eigenvalue(after):.6g}",
                                   "skip_test_cosine": f"{tests[-1]:.4g}" if tests else ""}
            if stored:
                S, Y = after.pairs()
                s, y = S[-1].double(), Y[-1].double()
                v = y - before.matvec(s)
                sv = float(s @ v)
                norm_s, norm_v = float(s.norm()), float(v.norm())
                row.update(
                    cosine=f"{abs(sv) / (norm_s * norm_v):.4g}",
                    v_over_s=f"{norm_v / norm_s:.4g}",
                    curvature_along_s=f"{float(s @ y) / norm_s ** 2:.4g}",
                    sr1_term=f"{norm_v ** 2 / sv:.4g}",
                )
            row.update(_window(after))
            self.rows.append(row)
            return loss

        train_optimizer.step = probed_step
        return train_optimizer


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python docs/tools/probe_curvature.py DATA_ROOT OUT.csv", file=sys.stderr)
        return 2
    torch.set_num_threads(1)  # as the record was made: one torch thread (the reductions' order)
    (spec,) = [s for s in expand(load_suite(SUITE)) if s.run_id == RUN_ID]
    spec = replace(spec, epochs=1, stop_at_targets=False, data_root=args[0])
    probe = _Probe()
    build = runner.build_optimizer
    runner.build_optimizer = lambda *a, **k: probe.wrap(build(*a, **k))  # type: ignore[assignment]
    try:
        with tempfile.TemporaryDirectory() as tmp:
            record = runner.train(spec, tmp, "cpu")
            if record.status != "completed":
                print(f"the replay did not complete: {record.status} {record.error}", file=sys.stderr)
                return 1
            with (Path(tmp) / spec.suite / spec.run_id / "epochs.csv").open(newline="") as handle:
                replay = list(csv.DictReader(handle))[1]
    finally:
        runner.build_optimizer = build
    with (RECORD / "epochs.csv").open(newline="") as handle:
        committed = list(csv.DictReader(handle))[1]
    for column in ("train_loss", "test_error", "min_eigenvalue"):
        if not math.isclose(float(replay[column]), float(committed[column]), rel_tol=1e-9):
            print(f"the replay left the record: epoch 1 {column} {replay[column]} against the record's "
                  f"{committed[column]}", file=sys.stderr)
            return 1
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(probe.rows)
    atomic_write_text(Path(args[1]), out.getvalue())
    print(out.getvalue(), end="")
    print(json.dumps({"record": str(RECORD.relative_to(ROOT)), "epoch 1 min_eigenvalue": committed["min_eigenvalue"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
