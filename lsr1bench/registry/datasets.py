"""Dataset name -> whole train/test tensors in memory.

Each dataset is loaded once into four tensors (float32 normalised images ``N, C, H, W``
and int64 labels); the runner indexes its minibatches from them itself, so there is no
``DataLoader`` and no per-item transform.

Where the data lives (``mnist``, ``cifar10``): the ``root`` argument, else the
``LSR1BENCH_DATA`` environment variable, else ``~/.cache/lsr1bench``. torchvision looks
for MNIST's raw files at ``<root>/MNIST/raw`` and for CIFAR-10 at
``<root>/cifar-10-batches-py``. When they are absent and cannot be downloaded,
``DatasetUnavailable`` says which dataset, where it looked, and how to fix it.

Subsets: ``train_subset=N`` / ``test_subset=N`` keep the *first* N examples of the split,
in the dataset's own order (no shuffling, so a quick run always sees the same examples).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lsr1bench.registry.names import DATASET_DESCRIPTIONS, DATASETS, TORCHVISION_DATASETS

__all__ = [
    "DatasetPair",
    "DatasetUnavailable",
    "load_dataset",
    "resolve_root",
    "known_datasets",
    "DATA_ENV_VAR",
    "MNIST_MEAN",
    "MNIST_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
]

DATA_ENV_VAR = "LSR1BENCH_DATA"
DEFAULT_ROOT = Path("~/.cache/lsr1bench")

# Per-operation socket timeout while torchvision downloads (it passes none to urlopen, so an
# unanswered connection could otherwise wait for minutes).
DOWNLOAD_TIMEOUT_S = float(os.environ.get("LSR1BENCH_DOWNLOAD_TIMEOUT", "30"))

# Mean and standard deviation of the 60,000 MNIST training pixels (scaled to [0, 1]).
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training pixels in [0, 1].
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

EMBEDDED_MNIST_FILE = "mnist_subset.npz"

# Size of the generated stand-in for CIFAR-10.
SYNTHETIC_TRAIN_SIZE = 2000
SYNTHETIC_TEST_SIZE = 500


class DatasetUnavailable(Exception):
    """The dataset's files are not on disk and could not be downloaded."""


@dataclass
class DatasetPair:
    """A dataset held whole in memory.

    ``train_x``/``test_x``: float32 ``(N, C, H, W)``, normalised; ``train_y``/``test_y``:
    int64 ``(N,)`` class indices. ``family`` is ``mnist`` or ``cifar10`` (it picks the
    paper's L2 coefficient and learning rates).
    """

    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    num_classes: int
    input_shape: tuple[int, int, int]
    family: str
    description: str
    name: str = ""


def known_datasets() -> list[str]:
    """The registered dataset names, sorted."""
    return sorted(DATASETS)


def resolve_root(root: str | os.PathLike[str] | None = None) -> Path:
    """``root`` if given, else ``$LSR1BENCH_DATA`` if set, else ``~/.cache/lsr1bench``."""
    if root is not None and str(root) != "":
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return DEFAULT_ROOT.expanduser()


def load_dataset(
    name: str,
    *,
    root: str | os.PathLike[str] | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    download: bool = True,
    seed: int = 0,
) -> DatasetPair:
    """Load the registered dataset ``name`` whole into tensors.

    ``root`` and ``download`` matter only for ``mnist`` and ``cifar10``; ``seed`` only for
    ``synthetic-cifar10`` (it picks the generated data). ``train_subset``/``test_subset``
    keep the first N examples. Raises ``ValueError`` for an unknown name or a subset size
    outside ``1..len(split)``, and ``DatasetUnavailable`` when files are missing and the
    download is off or fails.
    """
    if name in TORCHVISION_DATASETS:
        pair = _load_torchvision_classification(name, resolve_root(root), download)
    elif name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(known_datasets())}")
    elif name == "mnist":
        pair = _load_torchvision_mnist(resolve_root(root), download)
    elif name == "cifar10":
        pair = _load_torchvision_cifar10(resolve_root(root), download)
    elif name == "mnist-embedded":
        pair = _load_embedded_mnist()
    elif name == "synthetic-cifar10":
        pair = _synthetic_cifar10(seed)
    else:  # pragma: no cover - names.DATASETS and this function are kept in step
        raise ValueError(f"dataset {name!r} is registered in names.py but has no loader")
    pair.name = name
    pair.train_x, pair.train_y = _first(pair.train_x, pair.train_y, train_subset, "train_subset")
    pair.test_x, pair.test_y = _first(pair.test_x, pair.test_y, test_subset, "test_subset")
    return pair


# --------------------------------------------------------------------------- helpers


def _first(x: Tensor, y: Tensor, n: int | None, what: str) -> tuple[Tensor, Tensor]:
    if n is None:
        return x, y
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(y):
        raise ValueError(f"{what} must be an integer in 1..{len(y)} (the split's size), got {n!r}")
    # clone so the full tensors can be freed
    return x[:n].clone(), y[:n].clone()


def _normalise_gray(images: Tensor) -> Tensor:
    """uint8 ``(N, H, W)`` -> float32 ``(N, 1, H, W)`` with MNIST's mean and std."""
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    return x.sub_(MNIST_MEAN).div_(MNIST_STD)


def _normalise_rgb(images: np.ndarray) -> Tensor:
    """uint8 ``(N, H, W, 3)`` -> float32 ``(N, 3, H, W)`` with CIFAR-10's channel stats."""
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    x = x.to(torch.float32).div_(255.0)
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return x.sub_(mean).div_(std).contiguous()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _unavailable(dataset: str, root: Path, download: bool, where: str, cause: Exception) -> str:
    tried = "the download failed" if download else "downloading is off (download=False)"
    return (
        f"dataset {dataset!r} is not available: its files are not under {root} "
        f"(torchvision looks for {where}) and {tried}: {type(cause).__name__}: {cause}. "
        f"To fix: point --data-root or the {DATA_ENV_VAR} environment variable at a folder "
        f"that holds the files, or allow internet access so they can be downloaded "
        f"(download=True)."
    )


def _torchvision_dataset(cls_name: str, dataset: str, root: Path, download: bool, where: str):
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)

    def build(train: bool):
        return cls(root=str(root), train=train, download=download)

    try:
        with _socket_timeout(DOWNLOAD_TIMEOUT_S):
            return build(True), build(False)
    except Exception as err:  # torchvision raises RuntimeError, URLError, TimeoutError, ...
        raise DatasetUnavailable(_unavailable(dataset, root, download, where, err)) from err


def _load_torchvision_mnist(root: Path, download: bool) -> DatasetPair:
    train, test = _torchvision_dataset(
        "MNIST", "mnist", root, download, f"{root / 'MNIST' / 'raw'}/*-idx?-ubyte"
    )
    return DatasetPair(
        train_x=_normalise_gray(train.data),
        train_y=train.targets.to(torch.int64),
        test_x=_normalise_gray(test.data),
        test_y=test.targets.to(torch.int64),
        num_classes=10,
        input_shape=(1, 28, 28),
        family="mnist",
        description=DATASET_DESCRIPTIONS["mnist"] + f", from {root}",
    )


def _load_torchvision_cifar10(root: Path, download: bool) -> DatasetPair:
    train, test = _torchvision_dataset(
        "CIFAR10", "cifar10", root, download, f"{root / 'cifar-10-batches-py'}"
    )
    return DatasetPair(
        train_x=_normalise_rgb(train.data),
        train_y=torch.as_tensor(train.targets, dtype=torch.int64),
        test_x=_normalise_rgb(test.data),
        test_y=torch.as_tensor(test.targets, dtype=torch.int64),
        num_classes=10,
        input_shape=(3, 32, 32),
        family="cifar10",
        description=DATASET_DESCRIPTIONS["cifar10"] + f", from {root}",
    )


def _load_torchvision_classification(cls_name: str, root: Path, download: bool) -> DatasetPair:
    """A torchvision classification dataset by class name (``FashionMNIST``, ``CIFAR100``, ...).

    Images are scaled to [0, 1] and normalised per channel with the training split's own
    mean and standard deviation.
    """
    train, test = _torchvision_dataset(cls_name, cls_name, root, download, f"{root}/{cls_name}")
    train_x, test_x = _images(train.data), _images(test.data)
    mean = train_x.mean(dim=(0, 2, 3), keepdim=True)
    std = train_x.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return DatasetPair(
        train_x=(train_x - mean) / std,
        train_y=_labels(train.targets),
        test_x=(test_x - mean) / std,
        test_y=_labels(test.targets),
        num_classes=len(train.classes),
        input_shape=tuple(train_x.shape[1:]),
        family=TORCHVISION_DATASETS[cls_name],
        description=f"torchvision.datasets.{cls_name} ({len(train.targets)} train / {len(test.targets)} test), "
        f"from {root}",
    )


def _images(data: Tensor | np.ndarray) -> Tensor:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` -> float32 ``(N, C, H, W)`` in [0, 1]."""
    x = torch.as_tensor(np.asarray(data)) if not isinstance(data, Tensor) else data
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.to(torch.float32).div_(255.0).contiguous()


def _labels(targets: Tensor | list) -> Tensor:
    labels = torch.as_tensor(targets, dtype=torch.int64)
    return labels[:, 0] if labels.dim() == 2 else labels  # QMNIST keeps extra columns


def load_plugin_dataset(
    path: str, params: dict, *, train_subset: int | None = None, test_subset: int | None = None
) -> DatasetPair:
    """Call the dataset factory at ``path``: it returns ``(train, test, num_classes)``, each split
    ``(x, y)`` tensors or a torch dataset of ``(x, y)`` items (stacked here, in order)."""
    from lsr1bench.registry import plugins

    produced = plugins.factory(path, "dataset")(**params)
    if not (isinstance(produced, tuple) and len(produced) == 3):
        raise plugins.PluginError(
            f"dataset factory '{path}' returned {type(produced).__name__}; expected (train, test, num_classes)"
        )
    train, test, num_classes = produced
    train_x, train_y = _split_tensors(train, path, "train")
    test_x, test_y = _split_tensors(test, path, "test")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise plugins.PluginError(
            f"dataset factory '{path}' returned num_classes={num_classes!r}; expected an int >= 2"
        )
    for split, labels in (("train", train_y), ("test", test_y)):
        if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
            raise plugins.PluginError(f"dataset factory '{path}': {split} labels outside 0..{num_classes - 1}")
    pair = DatasetPair(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=num_classes,
        input_shape=tuple(train_x.shape[1:]),
        family="",
        description=f"{path}({', '.join(f'{k}={v!r}' for k, v in params.items())}): "
        f"{len(train_y)} train / {len(test_y)} test",
        name=path,
    )
    pair.train_x, pair.train_y = _first(pair.train_x, pair.train_y, train_subset, "train_subset")
    pair.test_x, pair.test_y = _first(pair.test_x, pair.test_y, test_subset, "test_subset")
    return pair


def _split_tensors(split: object, path: str, which: str) -> tuple[Tensor, Tensor]:
    from lsr1bench.registry import plugins

    if isinstance(split, (tuple, list)) and len(split) == 2 and all(isinstance(t, Tensor) for t in split):
        x, y = split
    elif hasattr(split, "__len__") and hasattr(split, "__getitem__"):
        items = [split[i] for i in range(len(split))]
        if not items:
            raise plugins.PluginError(f"dataset factory '{path}': the {which} split is empty")
        x = torch.stack([torch.as_tensor(item[0]) for item in items])
        y = torch.as_tensor([int(item[1]) for item in items])
    else:
        raise plugins.PluginError(
            f"dataset factory '{path}': the {which} split is {type(split).__name__}; "
            "expected (x, y) tensors or a torch dataset of (x, y) items"
        )
    if len(x) != len(y) or len(y) == 0:
        raise plugins.PluginError(f"dataset factory '{path}': the {which} split has {len(x)} inputs, {len(y)} labels")
    return x.to(torch.float32), y.to(torch.int64)


def embedded_mnist_path() -> Path:
    """Where the packaged MNIST subset lives (found through ``importlib.resources``)."""
    resource = resources.files("lsr1bench").joinpath("data", EMBEDDED_MNIST_FILE)
    return Path(str(resource))


def _load_embedded_mnist() -> DatasetPair:
    resource = resources.files("lsr1bench").joinpath("data", EMBEDDED_MNIST_FILE)
    if not resource.is_file():
        raise DatasetUnavailable(
            f"dataset 'mnist-embedded' is not available: {EMBEDDED_MNIST_FILE} is missing "
            "from the installed lsr1bench package (lsr1bench/data/). Reinstall the package, "
            "or rebuild it with scripts/make_embedded_mnist.py."
        )
    with resource.open("rb") as handle, np.load(handle) as npz:
        arrays = {
            key: npz[key] for key in ("train_images", "train_labels", "test_images", "test_labels")
        }
    return DatasetPair(
        train_x=_normalise_gray(torch.from_numpy(arrays["train_images"])),
        train_y=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        test_x=_normalise_gray(torch.from_numpy(arrays["test_images"])),
        test_y=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        num_classes=10,
        input_shape=(1, 28, 28),
        family="mnist",
        description=(
            f"{DATASET_DESCRIPTIONS['mnist-embedded']}: {len(arrays['train_labels'])} train / "
            f"{len(arrays['test_labels'])} test images, class-balanced (lsr1bench/data/README.md)"
        ),
    )


def _synthetic_cifar10(seed: int) -> DatasetPair:
    """Generated CIFAR-shaped data with a learnable class structure. NOT CIFAR-10.

    Each class has a smooth 3x32x32 template (a random 3x4x4 pattern upsampled
    bilinearly); an image is ``amplitude * template[label] + noise`` with a per-image
    random amplitude in [0.5, 1.5] and unit Gaussian pixel noise, so classes are separable
    by a small conv net but not from a single pixel. Labels are balanced and shuffled.
    The same ``seed`` gives the same tensors, bit for bit.
    """
    generator = torch.Generator().manual_seed(_stable_seed("synthetic-cifar10", seed))
    templates = torch.randn(10, 3, 4, 4, generator=generator)
    templates = torch.nn.functional.interpolate(
        templates, size=(32, 32), mode="bilinear", align_corners=False
    )
    templates = templates / templates.std(dim=(1, 2, 3), keepdim=True)

    def split(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(n, dtype=torch.int64) % 10
        labels = labels[torch.randperm(n, generator=generator)]
        amplitude = torch.rand(n, 1, 1, 1, generator=generator) + 0.5
        noise = torch.randn(n, 3, 32, 32, generator=generator)
        images = amplitude * templates[labels] + noise
        # signal (variance ~1.1) plus unit noise: scaling by 1/sqrt(2) keeps pixel variance near 1
        return images.div_(2.0**0.5).contiguous(), labels

    train_x, train_y = split(SYNTHETIC_TRAIN_SIZE)
    test_x, test_y = split(SYNTHETIC_TEST_SIZE)
    return DatasetPair(
        train_x=train_x,
        train_y=train_y,
        test_x=test_x,
        test_y=test_y,
        num_classes=10,
        input_shape=(3, 32, 32),
        family="cifar10",
        description=(
            f"{DATASET_DESCRIPTIONS['synthetic-cifar10']}: {SYNTHETIC_TRAIN_SIZE} train / "
            f"{SYNTHETIC_TEST_SIZE} test generated images (seed {seed}); NOT CIFAR-10"
        ),
    )


def _stable_seed(label: str, seed: int) -> int:
    digest = hashlib.sha256(f"{label}:{seed}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
