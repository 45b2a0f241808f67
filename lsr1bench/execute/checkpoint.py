"""One run's checkpoint: ``outputs/<suite>/<run_id>/checkpoint.pt``.

What a resumed run needs to continue bit for bit as if it had never stopped: the model's
parameters and buffers, the optimizer's state (through its public ``state_dict``; the
one-process ``full_state_dict`` form for data-parallel L-SR1), the learning-rate
schedule, the random number generators that drive the run (torch's CPU and CUDA ones,
Python's, NumPy's and the generator of the minibatch order), where in the epoch the run
stopped, the epoch's partial sums, and the records so far.

The file is written atomically by the process that writes the records (rank 0 of a
data-parallel run, which gathers each rank's own buffers and generator states), and holds
only tensors and plain Python values, so it loads with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import contextlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lsr1bench import records

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


class CheckpointError(Exception):
    """A checkpoint that cannot be used for this run."""


def path(directory: str | Path) -> Path:
    return Path(directory) / CHECKPOINT_FILE


def rng_state(device: torch.device) -> dict[str, Any]:
    """The process's global generators: torch (CPU and the run's CUDA device), Python, NumPy."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    version, python_state, gauss = random.getstate()
    out: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": [version, list(python_state), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, cached],
    }
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    version, python_state, gauss = state["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, position, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save(directory: str | Path, content: dict[str, Any]) -> None:
    """Write ``content`` (plus the format number) atomically as the run's checkpoint."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **content}, buffer)
    records.atomic_write_bytes(path(directory), buffer.getvalue())


def load(directory: str | Path, comparable: dict[str, Any]) -> dict[str, Any] | None:
    """The run's checkpoint if there is one for this spec; None if none.

    :class:`CheckpointError` if the file is unreadable or was written for another spec
    (the caller starts afresh and says why)."""
    file = path(directory)
    if not file.exists():
        return None
    try:
        content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a torn or foreign file: start afresh
        raise CheckpointError(f"{file}: unreadable ({type(exc).__name__}: {exc})") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        raise CheckpointError(f"{file}: not a format-{FORMAT} lsr1bench checkpoint")
    if content.get("spec") != comparable:
        raise CheckpointError(f"{file}: written for a different spec of this run")
    return content


def remove(directory: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path(directory).unlink()
