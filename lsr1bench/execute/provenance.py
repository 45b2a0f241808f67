"""Where and with what a run was trained: ``run.json``'s provenance (commit, versions,
device, the numerics settings that change results)."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

import lsr1bench
from lsr1bench.parallel import SingleProcess

_GIT_COMMIT: list[str | None] = []


def git_commit() -> str | None:
    """The commit of the lsr1bench checkout (``+dirty`` if modified), or None if not in git."""
    if not _GIT_COMMIT:
        here = Path(lsr1bench.__file__).resolve().parent
        commit = None
        try:
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
            if out.returncode == 0:
                commit = out.stdout.strip()
                dirty = subprocess.run(
                    ["git", "status", "--porcelain", "--untracked-files=no"],
                    cwd=here, capture_output=True, text=True, timeout=5,
                )  # fmt: skip
                if dirty.returncode == 0 and dirty.stdout.strip():
                    commit += "+dirty"
        except (OSError, subprocess.SubprocessError):
            commit = None
        _GIT_COMMIT.append(commit)
    return _GIT_COMMIT[0]


def versions() -> dict[str, str]:
    import pydantic
    import torchvision

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "pydantic": pydantic.VERSION,
        "lsr1bench": lsr1bench.__version__,
        "cuda": torch.version.cuda or "",
    }


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


def environment(device: torch.device) -> dict[str, Any]:
    """Numerics settings that change results: recorded, left at torch's defaults."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cuda_matmul_allow_tf32": bool(torch.backends.cuda.matmul.allow_tf32),
        "cudnn_allow_tf32": bool(torch.backends.cudnn.allow_tf32),
        "cudnn_benchmark": bool(torch.backends.cudnn.benchmark),
        "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
    }


# ---------------------------------------------------------------------------- data-parallel runs


def process_group_of(parallel: SingleProcess) -> Any:
    """The process group an optimizer reduces over, or None for a one-process run."""
    if parallel.world_size == 1:
        return None
    import torch.distributed as dist

    return parallel.group if parallel.group is not None else dist.group.WORLD


def parallel_record(
    parallel: SingleProcess, optimizer: Any, model: torch.nn.Module, device: torch.device
) -> dict[str, Any]:
    """``run.json``'s ``parallel`` section: world size, backend, layout, batch norm, traffic."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    count = sum(p.numel() for p in parameters)
    return {
        **parallel.describe(),
        "layout": optimizer.layout(parallel.world_size),
        "batch_norm": parallel.batch_norm_mode(model, device),
        "threads_per_rank": torch.get_num_threads(),
        "parameters": count,
        # DDP all-reduces every gradient once per backward (the payload, not the wire bytes)
        "gradient_bytes_per_backward": (
            sum(p.numel() * p.element_size() for p in parameters) if parallel.world_size > 1 else 0
        ),
        "optimizer_memory_bytes": None,
    }


def update_parallel_record(
    section: dict[str, Any], parallel: SingleProcess, optimizer: Any, stats: dict[str, Any]
) -> None:
    """Per-rank optimizer memory (a collective: every rank calls it) and the optimizer's traffic."""
    section["optimizer_memory_bytes"] = parallel.gather(optimizer.memory_bytes())
    for key in ("collectives", "bytes_communicated"):
        if key in stats:
            section[f"optimizer_{key}"] = stats[key]
