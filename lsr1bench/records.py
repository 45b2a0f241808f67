"""Run records on disk: ``outputs/<suite>/<run_id>/run.json`` and ``epochs.csv``.

Every file is written atomically (a temporary file in the same folder, then
``os.replace``), so a killed run leaves either the previous version of a file or the
new one, never half of one, and with the mode a plain ``open`` would give it (0644 under
umask 022), so colleagues can read results in a shared folder. The layout is the contract in docs/ARCHITECTURE.md; the
report stage reads it with :func:`read_run` / :func:`iter_runs`. No torch here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

# 2: spec.targets and targets_reached are keyed by metric ({"test_error": {"1.1": 5}});
# version 1 (test error targets only, flat) is still read, as test error.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
RUN_FILE = "run.json"
EPOCHS_FILE = "epochs.csv"

RUNNING = "running"
COMPLETED = "completed"
DIVERGED = "diverged"
FAILED = "failed"
INTERRUPTED = "interrupted"
STATUSES = (RUNNING, COMPLETED, DIVERGED, FAILED, INTERRUPTED)
# Finished runs that a resumed suite skips: rerunning a diverged run diverges again.
FINISHED = frozenset({COMPLETED, DIVERGED})

# The skip-test thresholds r whose would-be skip rates every L-SR1 epoch records:
# the SR1 default 1e-8 skips almost nothing on MNIST; the paper reports 7% to over 60%.
SKIP_RATE_THRESHOLDS = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 3e-2, 1e-1, 3e-1)
SKIP_RATE_COLUMNS = tuple(f"skip_rate_r{r:g}" for r in SKIP_RATE_THRESHOLDS)

# Optimizer statistics recorded per epoch when the optimizer reports them (empty otherwise).
OPTIMIZER_COLUMNS = (
    "accepted_steps",
    "rejected_steps",
    "skipped_updates",
    "dropped_pairs",
    "radius",
    "stored_pairs",
    # L-SR1's model at the end of the epoch and its skip test during it:
    "min_eigenvalue",  # smallest eigenvalue of B, of the model held at the end of the epoch
    "negative_eigenvalues",  # how many eigenvalues of B are negative
    "negative_curvature_fraction",  # of this epoch's steps, those whose model had one
    "update_cosine_p10",  # 10th percentile of |s^T(y - Bs)| / (||s|| ||y - Bs||) this epoch
    "update_cosine_median",
    # of this epoch's skip tests, the fraction that a threshold r would have failed
    # (cosine < r): the skip rate at each r, counterfactual on the same trajectory
    *SKIP_RATE_COLUMNS,
)
EPOCH_COLUMNS = (
    "epoch",
    "train_loss",
    "test_loss",
    "test_error",
    "train_seconds",
    "total_seconds",
    "grad_evals",  # forward + backward passes (closure calls that computed a gradient)
    "loss_evals",  # forward-only passes (closure(backward=False), the torchzero protocol)
    "hvp_evals",  # Hessian-vector products (AdaHessian's Hutchinson estimate), each ~1 backward
    "samples",
    "steps",
    *OPTIMIZER_COLUMNS,
    "lr",
    # the held-out training examples of ``validation_split`` (empty without one)
    "val_loss",
    "val_error",
)
# Columns added after records were first written: files without them still read (as None).
LATER_COLUMNS = (
    "loss_evals",
    "hvp_evals",
    "min_eigenvalue",
    "negative_eigenvalues",
    "negative_curvature_fraction",
    "update_cosine_p10",
    "update_cosine_median",
    *SKIP_RATE_COLUMNS,
    "val_loss",
    "val_error",
)
_INT_COLUMNS = frozenset(
    {
        "epoch",
        "grad_evals",
        "loss_evals",
        "hvp_evals",
        "samples",
        "steps",
        "accepted_steps",
        "rejected_steps",
        "skipped_updates",
        "dropped_pairs",
        "stored_pairs",
        "negative_eigenvalues",
    }
)


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new, never a part."""
    atomic_write_bytes(path, text.encode("utf-8"))


def process_umask() -> int:
    """The process's umask, read without changing it where Linux says it (``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # elsewhere: the only portable way to read it is to set it
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``;
    a failure or Ctrl-C part-way leaves the previous file (or none) and no temporary file.

    ``mkstemp`` creates the temporary file with mode 0600 whatever the umask; it gets
    ``0666 & ~umask`` before it replaces ``path``, what ``open(path, "w")`` would give."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~process_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def run_dir(output: str | Path, suite: str, run_id: str) -> Path:
    return Path(output) / suite / run_id


@dataclass
class RunRecord:
    """The contents of ``run.json`` (plus where it lives)."""

    suite: str
    run_id: str
    spec: dict[str, Any]
    status: str = RUNNING
    error: str | None = None
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    epochs_completed: int = 0
    # metric -> target key -> first epoch below the target (None: not yet)
    targets_reached: dict[str, dict[str, int | None]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        out = {
            "schema_version": self.schema_version,
            "suite": self.suite,
            "run_id": self.run_id,
            "spec": self.spec,
            "status": self.status,
            "error": self.error,
            "device": self.device,
            "versions": self.versions,
            "git_commit": self.git_commit,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "epochs_completed": self.epochs_completed,
            "targets_reached": self.targets_reached,
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunRecord:
        known = {
            "schema_version", "suite", "run_id", "spec", "status", "error", "device", "versions",
            "git_commit", "started_at", "finished_at", "epochs_completed", "targets_reached",
        }  # fmt: skip
        missing = {"suite", "run_id", "spec", "status"} - set(data)
        if missing:
            raise RecordError(f"run.json lacks {', '.join(sorted(missing))}")
        if data.get("status") not in STATUSES:
            raise RecordError(f"run.json has an unknown status {data.get('status')!r}")
        kwargs = {k: data[k] for k in known if k in data}
        reached = kwargs.get("targets_reached") or {}
        if any(not isinstance(v, dict) for v in reached.values()):  # schema 1: test error only
            kwargs["targets_reached"] = {"test_error": dict(reached)} if reached else {}
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**kwargs, extra=extra)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class RecordError(Exception):
    """A record on disk that cannot be read."""


def write_run(directory: str | Path, record: RunRecord) -> None:
    atomic_write_text(Path(directory) / RUN_FILE, json.dumps(record.to_dict(), indent=2, allow_nan=True) + "\n")


def read_run(directory: str | Path) -> RunRecord:
    """The ``run.json`` in ``directory``; :class:`RecordError` if absent or unreadable."""
    path = Path(directory) / RUN_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise RecordError(f"{path}: {exc}") from None
    if not isinstance(data, dict):
        raise RecordError(f"{path}: not a JSON object")
    if data.get("schema_version") not in READABLE_SCHEMA_VERSIONS:
        raise RecordError(
            f"{path}: schema_version {data.get('schema_version')!r}, this lsr1bench reads "
            f"{', '.join(str(v) for v in READABLE_SCHEMA_VERSIONS)}"
        )
    try:
        return RunRecord.from_dict(data)
    except RecordError as exc:
        raise RecordError(f"{path}: {exc}") from None


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    return str(value)


def format_epochs(rows: Sequence[Mapping[str, Any]]) -> str:
    """``rows`` as CSV text with :data:`EPOCH_COLUMNS` in order (missing -> empty)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(EPOCH_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(col)) for col in EPOCH_COLUMNS])
    return out.getvalue()


def write_epochs(directory: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rewrite the whole ``epochs.csv`` atomically (a few hundred rows at most)."""
    atomic_write_text(Path(directory) / EPOCHS_FILE, format_epochs(rows))


def _parse(column: str, text: str) -> int | float | None:
    if text == "":
        return None
    if column in _INT_COLUMNS:
        try:
            return int(text)
        except ValueError:
            return float(text)
    return float(text)


def _known_header(fields: tuple[str, ...]) -> bool:
    """``EPOCH_COLUMNS`` in order, less any of the columns added later (older files)."""
    missing = set(EPOCH_COLUMNS) - set(fields)
    return missing <= set(LATER_COLUMNS) and fields == tuple(c for c in EPOCH_COLUMNS if c not in missing)


def read_epochs(directory: str | Path) -> list[dict[str, int | float | None]]:
    """The rows of ``epochs.csv``: ints for counts, floats (nan/inf kept) else, None if empty."""
    path = Path(directory) / EPOCHS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise RecordError(f"{path}: {exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None:
        return []
    if not _known_header(tuple(reader.fieldnames)):
        raise RecordError(f"{path}: unexpected columns {reader.fieldnames}")
    try:
        return [{col: _parse(col, row.get(col) or "") for col in EPOCH_COLUMNS} for row in reader]
    except (ValueError, TypeError) as exc:
        raise RecordError(f"{path}: {exc}") from None


def iter_runs(suite_dir: str | Path) -> Iterator[tuple[Path, RunRecord]]:
    """``(run folder, record)`` for every readable run under ``outputs/<suite>``, sorted by id."""
    suite_dir = Path(suite_dir)
    if not suite_dir.is_dir():
        return
    for child in sorted(suite_dir.iterdir()):
        if (child / RUN_FILE).is_file():
            try:
                yield child, read_run(child)
            except RecordError:
                continue


def epochs_to_target(rows: Sequence[Mapping[str, Any]], target: float, metric: str = "test_error") -> int | None:
    """The smallest epoch >= 1 whose ``metric`` (a column: test_error in %, test_loss,
    train_loss) is below ``target``, or None. Epoch 0, before training, never counts."""
    for row in rows:
        epoch, value = row.get("epoch"), row.get(metric)
        if epoch is not None and epoch >= 1 and value is not None and value < target:
            return int(epoch)
    return None


def target_key(target: float) -> str:
    """The ``targets_reached`` key of a target: ``1.1`` -> ``"1.1"``, ``30.0`` -> ``"30"``."""
    return f"{target:g}"
