"""Tests marked ``cuda`` are skipped where no CUDA device is available; the documentation
tools in docs/tools/ (not part of the package) are importable by their module names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

DOC_TOOLS = Path(__file__).resolve().parent.parent / "docs" / "tools"
if str(DOC_TOOLS) not in sys.path:
    sys.path.insert(0, str(DOC_TOOLS))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not any(item.get_closest_marker("cuda") for item in items):
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda"):
            item.add_marker(skip)
