"""Dataset loading: embedded MNIST subset, synthetic CIFAR, real MNIST, offline errors."""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
import time
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from lsr1bench.registry import datasets
from lsr1bench.registry.datasets import (
    DatasetPair,
    DatasetUnavailable,
    load_dataset,
    resolve_root,
)
from lsr1bench.registry.names import DATASETS

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SHARED_MNIST_RAW = SHARED_DATA / "MNIST" / "raw"
needs_shared_mnist = pytest.mark.skipif(
    not (SHARED_MNIST_RAW / "train-images-idx3-ubyte").is_file(),
    reason=f"full MNIST not present at {SHARED_MNIST_RAW}",
)


def check_pair(pair: DatasetPair, shape: tuple[int, int, int]) -> None:
    assert pair.input_shape == shape
    assert pair.num_classes == 10
    for x, y in ((pair.train_x, pair.train_y), (pair.test_x, pair.test_y)):
        assert x.dtype == torch.float32 and y.dtype == torch.int64
        assert x.shape[1:] == shape and x.shape[0] == y.shape[0]
        assert int(y.min()) >= 0 and int(y.max()) < 10


# --------------------------------------------------------------------------- embedded


def test_embedded_mnist_is_found_through_importlib_resources():
    resource = resources.files("lsr1bench").joinpath("data", "mnist_subset.npz")
    assert resource.is_file()
    readme = resources.files("lsr1bench").joinpath("data", "README.md")
    assert "CC BY-SA 3.0" in readme.read_text()
    assert "LeCun" in readme.read_text()


def test_embedded_mnist_shapes_balance_and_normalisation():
    pair = load_dataset("mnist-embedded")
    check_pair(pair, (1, 28, 28))
    assert pair.family == "mnist" and pair.name == "mnist-embedded"
    assert len(pair.train_y) == 5000 and len(pair.test_y) == 1000
    assert torch.bincount(pair.train_y, minlength=10).tolist() == [500] * 10
    assert torch.bincount(pair.test_y, minlength=10).tolist() == [100] * 10
    # pixels 0..255 mapped through (x/255 - 0.1307) / 0.3081
    lowest = (0 - 0.1307) / 0.3081
    highest = (1 - 0.1307) / 0.3081
    assert pair.train_x.min().item() == pytest.approx(lowest, abs=1e-5)
    assert pair.train_x.max().item() == pytest.approx(highest, abs=1e-5)
    # a real MNIST sample has mean ~0 and std ~1 after the full set's normalisation
    assert abs(pair.train_x.mean().item()) < 0.05
    assert abs(pair.train_x.std().item() - 1.0) < 0.05


def test_embedded_npz_records_provenance():
    with np.load(datasets.embedded_mnist_path()) as npz:
        assert npz["train_indices"].shape == (5000,)
        assert npz["test_indices"].shape == (1000,)
        assert np.all(np.diff(npz["train_indices"]) > 0)  # sorted, no repeats
        assert npz["train_indices"].max() < 60000 and npz["test_indices"].max() < 10000
        md5 = dict(zip(npz["source_files"].tolist(), npz["source_md5"].tolist(), strict=True))
        assert md5["train-images-idx3-ubyte"] == "6bbc9ace898e44ae57da46a324031adb"
        assert "CC BY-SA 3.0" in str(npz["license"])


@needs_shared_mnist
def test_embedded_subset_matches_the_source_and_rebuilds_identically(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "make_embedded_mnist", REPO / "scripts" / "make_embedded_mnist.py"
    )
    script = importlib.util.module_from_spec(spec)
    sys.modules["make_embedded_mnist"] = script
    spec.loader.exec_module(script)
    rebuilt = script.build(SHARED_MNIST_RAW, tmp_path / "subset.npz")
    with np.load(datasets.embedded_mnist_path()) as shipped:
        for key in ("train_images", "train_labels", "test_images", "test_labels", "train_indices"):
            np.testing.assert_array_equal(shipped[key], rebuilt[key])
    source = script.read_idx(SHARED_MNIST_RAW / "train-images-idx3-ubyte", 0x803)
    np.testing.assert_array_equal(source[rebuilt["train_indices"]], rebuilt["train_images"])


def test_subset_keeps_the_first_examples():
    full = load_dataset("mnist-embedded")
    part = load_dataset("mnist-embedded", train_subset=100, test_subset=30)
    assert len(part.train_y) == 100 and len(part.test_y) == 30
    torch.testing.assert_close(part.train_x, full.train_x[:100], rtol=0, atol=0)
    torch.testing.assert_close(part.test_y, full.test_y[:30], rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0, -1, 5001, 2.5])
def test_subset_out_of_range_is_an_error(bad):
    with pytest.raises(ValueError, match="train_subset"):
        load_dataset("mnist-embedded", train_subset=bad)


# --------------------------------------------------------------------------- synthetic


def test_synthetic_cifar10_shapes_and_determinism():
    a = load_dataset("synthetic-cifar10", seed=0)
    b = load_dataset("synthetic-cifar10", seed=0)
    c = load_dataset("synthetic-cifar10", seed=1)
    check_pair(a, (3, 32, 32))
    assert a.family == "cifar10"
    assert "not cifar-10" in a.description.lower()
    torch.testing.assert_close(a.train_x, b.train_x, rtol=0, atol=0)
    torch.testing.assert_close(a.test_y, b.test_y, rtol=0, atol=0)
    assert not torch.equal(a.train_x, c.train_x)
    assert torch.bincount(a.train_y, minlength=10).tolist() == [len(a.train_y) // 10] * 10
    assert abs(a.train_x.mean().item()) < 0.1 and abs(a.train_x.std().item() - 1) < 0.1


def test_synthetic_cifar10_has_learnable_class_structure():
    # nearest class mean (estimated on train) classifies test well above chance (10%)
    pair = load_dataset("synthetic-cifar10")
    means = torch.stack([pair.train_x[pair.train_y == k].mean(0) for k in range(10)])
    distances = torch.cdist(pair.test_x.flatten(1), means.flatten(1))
    accuracy = (distances.argmin(1) == pair.test_y).float().mean().item()
    assert accuracy > 0.5


# --------------------------------------------------------------------------- missing data


def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError) as info:
        load_dataset("imagenet")
    for name in DATASETS:
        assert name in str(info.value)


def test_root_resolution(monkeypatch, tmp_path):
    monkeypatch.delenv("LSR1BENCH_DATA", raising=False)
    assert resolve_root() == Path("~/.cache/lsr1bench").expanduser()
    monkeypatch.setenv("LSR1BENCH_DATA", str(tmp_path / "env"))
    assert resolve_root() == tmp_path / "env"
    assert resolve_root(tmp_path / "explicit") == tmp_path / "explicit"


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_missing_files_without_download_is_a_helpful_error(name, tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset(name, root=tmp_path, download=False)
    message = str(info.value)
    assert repr(name) in message
    assert str(tmp_path) in message
    assert "LSR1BENCH_DATA" in message and "--data-root" in message
    assert "download" in message


def test_environment_variable_is_the_fallback_root(monkeypatch, tmp_path):
    monkeypatch.setenv("LSR1BENCH_DATA", str(tmp_path))
    with pytest.raises(DatasetUnavailable, match=str(tmp_path)):
        load_dataset("mnist", download=False)


@pytest.fixture
def silent_server():
    """A local TCP server that accepts connections and never answers."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/"
    stop.set()
    thread.join(timeout=2)
    for conn in accepted:
        conn.close()
    server.close()


def test_download_that_never_answers_does_not_hang(monkeypatch, tmp_path, silent_server):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [silent_server])
    monkeypatch.setattr(datasets, "DOWNLOAD_TIMEOUT_S", 0.5)
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    assert time.monotonic() - start < 10
    assert "download failed" in str(info.value)
    assert socket.getdefaulttimeout() is None  # restored


def test_download_without_network_is_a_helpful_error(tmp_path):
    # No internet here: the real mirrors fail (fast, or after the socket timeout).
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="download failed"):
        load_dataset("mnist", root=tmp_path, download=True)
    assert time.monotonic() - start < 4 * datasets.DOWNLOAD_TIMEOUT_S + 10


# --------------------------------------------------------------------------- real MNIST


@needs_shared_mnist
def test_full_mnist_loads_offline_from_shared_data():
    pair = load_dataset("mnist", root=SHARED_DATA, download=False)
    check_pair(pair, (1, 28, 28))
    assert len(pair.train_y) == 60000 and len(pair.test_y) == 10000
    assert abs(pair.train_x.mean().item()) < 1e-3
    assert abs(pair.train_x.std().item() - 1.0) < 1e-3
    embedded = load_dataset("mnist-embedded")
    with np.load(datasets.embedded_mnist_path()) as npz:
        indices = torch.from_numpy(npz["train_indices"][:50].astype(np.int64))
    torch.testing.assert_close(pair.train_x[indices], embedded.train_x[:50], rtol=0, atol=0)
    torch.testing.assert_close(pair.train_y[indices], embedded.train_y[:50], rtol=0, atol=0)
