"""A run's dataset on its device, loaded once per process and kept for the next runs.

The data is moved to the training device once and minibatches are indexed there; a
process keeps the two most recent datasets, so consecutive runs on the same data (every
optimizer and seed of a grid) load it once.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from lsr1bench.grid import RunSpec
from lsr1bench.registry.datasets import load_dataset, load_plugin_dataset


@dataclass
class DeviceData:
    """A dataset's tensors, already on the training device."""

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    description: str


_DATA_CACHE: OrderedDict[tuple[Any, ...], DeviceData] = OrderedDict()
_DATA_CACHE_SIZE = 2


def data_key(spec: RunSpec) -> tuple[Any, ...]:
    plugin = (spec.dataset_path, repr(sorted(spec.dataset_params.items()))) if spec.dataset_path else ()
    return (spec.dataset, spec.data_root, spec.train_subset, spec.test_subset, *plugin)


def load_data(spec: RunSpec, device: str | torch.device) -> DeviceData:
    """The run's dataset on ``device``, loaded once per process and kept (2 most recent)."""
    key = (*data_key(spec), str(device))
    if key in _DATA_CACHE:
        _DATA_CACHE.move_to_end(key)
        return _DATA_CACHE[key]
    if spec.dataset_path:
        pair = load_plugin_dataset(
            spec.dataset_path, spec.dataset_params, train_subset=spec.train_subset, test_subset=spec.test_subset
        )
    else:
        pair = load_dataset(
            spec.dataset,
            root=spec.data_root,
            train_subset=spec.train_subset,
            test_subset=spec.test_subset,
            download=True,
            seed=0,  # a dataset name means one dataset; the run's seed is for init and order
        )
    data = DeviceData(
        train_x=pair.train_x.to(device),
        train_y=pair.train_y.to(device),
        test_x=pair.test_x.to(device),
        test_y=pair.test_y.to(device),
        num_classes=pair.num_classes,
        input_shape=tuple(pair.input_shape),
        description=pair.description,
    )
    _DATA_CACHE[key] = data
    while len(_DATA_CACHE) > _DATA_CACHE_SIZE:
        _DATA_CACHE.popitem(last=False)
    return data


def clear_data_cache() -> None:
    _DATA_CACHE.clear()


# The held-out examples of ``validation_split`` are drawn once per dataset by this seed, not
# the run's, so every optimizer and seed is tuned on the same examples.
VALIDATION_SEED = 0


def split_validation(data: DeviceData, count: int) -> tuple[DeviceData, Tensor, Tensor]:
    """Hold out ``count`` training examples (a fixed random draw); the rest train, in order."""
    n = len(data.train_y)
    if not 1 <= count < n:
        raise ValueError(f"validation_split {count} must leave training examples: the training split has {n}")
    draw = torch.randperm(n, generator=torch.Generator().manual_seed(VALIDATION_SEED))
    held = draw[:count].sort().values.to(data.train_y.device)
    kept = draw[count:].sort().values.to(data.train_y.device)
    train = DeviceData(
        train_x=data.train_x[kept],
        train_y=data.train_y[kept],
        test_x=data.test_x,
        test_y=data.test_y,
        num_classes=data.num_classes,
        input_shape=data.input_shape,
        description=f"{data.description}; {count} training examples held out for validation",
    )
    return train, data.train_x[held], data.train_y[held]
