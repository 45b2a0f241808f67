"""Synthetic run records for the report / compare / plots tests, written by hand.

The files follow the documented layout (docs/ARCHITECTURE.md, "Records") without going
through ``lsr1bench.records``' writer, so the tests check the report stage against the
contract itself.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

COLUMNS = (
    "epoch", "train_loss", "test_loss", "test_error", "train_seconds", "total_seconds",
    "grad_evals", "samples", "steps", "accepted_steps", "rejected_steps",
    "skipped_updates", "dropped_pairs", "radius", "stored_pairs", "lr",
)  # fmt: skip

QUASI_NEWTON = {"lsr1", "lsr1-ls", "lbfgs"}


def write_run(
    suite_dir: Path,
    errors: Sequence[float],
    *,
    label: str = "lsr1",
    optimizer: str | None = None,
    model: str = "lenet5",
    dataset: str = "mnist",
    batch_norm: bool = True,
    batch_size: int = 500,
    seed: int = 0,
    epochs: int | None = None,
    targets: Sequence[float] | dict[str, Sequence[float]] = (1.5, 1.2),
    status: str = "completed",
    seconds_per_epoch: float = 2.0,
    grad_evals_per_epoch: int = 100,
    losses: Sequence[float] | None = None,
    qn_final: dict[str, float] | None = None,
    stop_at_targets: bool = False,
    write_csv: bool = True,
    **spec_extra: Any,
) -> Path:
    """One run folder: ``errors[i]`` is the test error (%) at epoch i (epoch 0 untrained).

    Cumulative columns grow linearly per epoch; ``qn_final`` sets the quasi-Newton
    statistics of the last row (steps, skipped_updates, rejected_steps, dropped_pairs,
    radius), earlier rows get proportional counts. ``targets`` as a sequence writes a
    schema-1 record (test error targets, flat ``targets_reached``); as a mapping of metric
    to thresholds, a schema-2 record. ``losses`` sets both train and test loss (default:
    error / 10); ``train_losses`` overrides the train loss alone.
    """
    train_losses = spec_extra.pop("train_losses", None)
    environment = spec_extra.pop("environment", None)
    versions = spec_extra.pop("versions", None)
    git_commit = spec_extra.pop("git_commit", "0123456789abcdef")
    optimizer_params = spec_extra.pop("optimizer_params", {})
    optimizer = optimizer or label
    bn = "-bn" if batch_norm else ""
    run_id = f"{model}{bn}-{dataset}-{label}-b{batch_size}-s{seed}"
    run_dir = suite_dir / run_id
    run_dir.mkdir(parents=True)
    spec = {
        "suite": suite_dir.name,
        "run_id": run_id,
        "model": model,
        "batch_norm": batch_norm,
        "dataset": dataset,
        "optimizer": optimizer,
        "label": label,
        "optimizer_params": optimizer_params,
        "lr_schedule": None,
        "batch_size": batch_size,
        "seed": seed,
        "epochs": epochs if epochs is not None else len(errors) - 1,
        "targets": {m: list(v) for m, v in targets.items()} if isinstance(targets, dict) else list(targets),
        "weight_decay": 1e-4,
        "stop_at_targets": stop_at_targets,
        "data_root": None,
        "train_subset": None,
        "test_subset": None,
        **spec_extra,
    }
    last = len(errors) - 1
    qn = optimizer in QUASI_NEWTON
    qn_final = qn_final or {
        "steps": 10 * last,
        "skipped_updates": 0,
        "rejected_steps": 0,
        "dropped_pairs": 0,
        "radius": 1.0,
    }
    rows = []
    for epoch, error in enumerate(errors):
        loss = losses[epoch] if losses is not None else error / 10
        train_loss = train_losses[epoch] if train_losses is not None else loss
        row: dict[str, Any] = {
            "epoch": epoch,
            "train_loss": "" if epoch == 0 and losses is None and train_losses is None else train_loss,
            "test_loss": loss,
            "test_error": error,
            "train_seconds": seconds_per_epoch * epoch,
            "total_seconds": seconds_per_epoch * epoch + 0.5 * (epoch + 1),
            "grad_evals": grad_evals_per_epoch * epoch,
            "samples": 1000 * epoch,
            "lr": 0.003,
        }
        if qn:
            share = epoch / last if last else 1.0
            for name in ("steps", "skipped_updates", "rejected_steps", "dropped_pairs"):
                row[name] = round(qn_final[name] * share)
            row["accepted_steps"] = row["steps"] - row["rejected_steps"]
            row["radius"] = qn_final["radius"] if epoch == last else 1.0
            row["stored_pairs"] = min(epoch, 5)
        rows.append(row)
    columns = {"test_error": [r["test_error"] for r in rows], "test_loss": [r["test_loss"] for r in rows],
               "train_loss": [r["train_loss"] for r in rows]}  # fmt: skip
    by_metric = targets if isinstance(targets, dict) else {"test_error": targets}
    reached: dict[str, Any] = {}
    for metric, values in by_metric.items():
        reached[metric] = {}
        for target in values:
            hit = next((e for e, v in enumerate(columns[metric]) if e >= 1 and v != "" and v < target), None)
            reached[metric][f"{target:g}"] = hit
    if not isinstance(targets, dict):
        reached = reached["test_error"]
    meta = {
        "schema_version": 2 if isinstance(targets, dict) else 1,
        "suite": suite_dir.name,
        "run_id": run_id,
        "spec": spec,
        "status": status,
        "error": "boom" if status == "failed" else None,
        "device": "cpu",
        "versions": versions or {"python": "3.x", "torch": "n/a", "lsr1bench": "0.1.0"},
        "git_commit": git_commit,
        "started_at": "2024-01-01T00:00:00+00:00",
        "finished_at": None if status in {"running", "interrupted"} else "2024-01-01T00:01:00+00:00",
        "epochs_completed": last,
        "targets_reached": reached,
    }
    if environment is not None:
        meta["environment"] = environment
    (run_dir / "run.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    if write_csv:
        with (run_dir / "epochs.csv").open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in COLUMNS})
    return run_dir


NAN = float("nan")

# The table1 fixture's quasi-Newton statistics at the last epoch, one dict per seed:
# skipped % = 4/40, 10/40, 2/40 = 10, 25, 5; rejected % = 5, 10, 15.
TABLE1_QN = [
    {"steps": 40, "skipped_updates": 4, "rejected_steps": 2, "dropped_pairs": 0, "radius": 0.5},
    {"steps": 40, "skipped_updates": 10, "rejected_steps": 4, "dropped_pairs": 1, "radius": 2.0},
    {"steps": 40, "skipped_updates": 2, "rejected_steps": 6, "dropped_pairs": 3, "radius": 8.0},
]


def make_table1_suite(root: Path, name: str = "table1") -> Path:
    """A small Table-1-like suite with every kind of outcome; expectations in test_report.py.

    lenet5 + BN on mnist, targets 1.5 and 1.2 (%), 4 epochs:
      lsr1 b500  seeds 0-2: all reach both targets.
      nag  b500  seed 0 never reaches 1.5, seed 1 reaches 1.5 at epoch 3, seed 2 diverges.
      adam b500  seed 0 completes, seed 1 still running at epoch 2, seed 2 absent.
      lsr1 b1000 seeds 0-2: all diverge at epoch 2.
    lenet5 (no BN) on mnist, 2 epochs, batch 20:
      sgd  seeds 0-2 never reach its one target 1.5; lsr1 seeds 0-2 reach 1.5 and 1.2.
    """
    suite = root / name
    lsr1_errors = [[90, 2.0, 1.4, 1.1, 1.0], [90, 1.6, 1.45, 1.3, 1.15], [90, 1.4, 1.3, 1.25, 1.19]]
    for seed, errors in enumerate(lsr1_errors):
        write_run(suite, errors, label="lsr1", seed=seed, qn_final=TABLE1_QN[seed])
    write_run(suite, [90, 5, 3, 1.8, 1.6], label="nag", seed=0)
    write_run(suite, [90, 4, 2, 1.4, 1.3], label="nag", seed=1)
    write_run(suite, [90, 6, NAN], label="nag", seed=2, epochs=4, status="diverged")
    write_run(suite, [90, 1.3, 1.1, 1.05, 1.0], label="adam", seed=0)
    write_run(suite, [90, 1.6, 1.35], label="adam", seed=1, epochs=4, status="running")
    for seed in range(3):
        write_run(
            suite,
            [90, 3.0, NAN],
            label="lsr1",
            batch_size=1000,
            seed=seed,
            epochs=4,
            status="diverged",
        )
        write_run(
            suite,
            [90, 5, 4],
            label="sgd",
            batch_norm=False,
            batch_size=20,
            seed=seed,
            targets=(1.5,),
        )
        write_run(suite, [90, 1.3, 1.1], label="lsr1", batch_norm=False, batch_size=20, seed=seed)
    return suite
