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


@pytest.fixture
def refused_url():
    """A local port that refuses connections: bound, never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/"
    sock.close()


def test_download_that_is_refused_is_a_helpful_error(monkeypatch, tmp_path, refused_url):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [refused_url])
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable) as info:
        load_dataset("mnist", root=tmp_path, download=True)
    assert time.monotonic() - start < 10
    message = str(info.value)
    assert "'mnist'" in message and "download failed" in message and str(tmp_path) in message
    assert refused_url in message  # torchvision's report of the mirror it tried
    assert "LSR1BENCH_DATA" in message and "--data-root" in message


def _idx(array: np.ndarray, magic: int) -> bytes:
    """MNIST's IDX format: big-endian magic, big-endian dimensions, then the uint8 data."""
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.fixture
def mnist_server(tmp_path):
    """A local HTTP server holding the embedded subset as MNIST's four gzipped IDX files.

    Yields (url, resources) with ``resources`` in torchvision's (file name, md5) form."""
    import gzip
    import hashlib
    import http.server
    from functools import partial

    served = tmp_path / "served"
    served.mkdir()
    with np.load(datasets.embedded_mnist_path()) as npz:
        files = {
            "train-images-idx3-ubyte.gz": _idx(npz["train_images"], 0x803),
            "train-labels-idx1-ubyte.gz": _idx(npz["train_labels"], 0x801),
            "t10k-images-idx3-ubyte.gz": _idx(npz["test_images"], 0x803),
            "t10k-labels-idx1-ubyte.gz": _idx(npz["test_labels"], 0x801),
        }
    resources_list = []
    for name, raw in files.items():
        packed = gzip.compress(raw, mtime=0)
        (served / name).write_bytes(packed)
        resources_list.append((name, hashlib.md5(packed).hexdigest()))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", resources_list
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_download_from_a_mirror_writes_files_that_load(monkeypatch, tmp_path, mnist_server):
    import torchvision.datasets

    url, resources_list = mnist_server
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources_list)
    root = tmp_path / "data"
    pair = load_dataset("mnist", root=root, download=True, train_subset=2000)
    check_pair(pair, (1, 28, 28))
    assert pair.family == "mnist" and pair.name == "mnist" and str(root) in pair.description
    embedded = load_dataset("mnist-embedded")
    assert len(pair.test_y) == len(embedded.test_y) == 1000
    torch.testing.assert_close(pair.train_x, embedded.train_x[:2000], rtol=0, atol=0)
    torch.testing.assert_close(pair.train_y, embedded.train_y[:2000], rtol=0, atol=0)
    torch.testing.assert_close(pair.test_x, embedded.test_x, rtol=0, atol=0)
    torch.testing.assert_close(pair.test_y, embedded.test_y, rtol=0, atol=0)
    assert (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    # the files are now local: a second load needs no server
    monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", ["http://127.0.0.1:9/"])
    again = load_dataset("mnist", root=root, download=False, test_subset=10)
    torch.testing.assert_close(again.test_y, embedded.test_y[:10], rtol=0, atol=0)


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


# --------------------------------------------------------------------------- CIFAR-10 through a stub


def _cifar_pixel(n: np.ndarray, h: np.ndarray, w: np.ndarray, c: np.ndarray) -> np.ndarray:
    """A known uint8 value for every (image, row, column, channel): no two axes interchangeable."""
    return ((n * 11 + h * 7 + w * 3 + c * 101) % 256).astype(np.uint8)


class _StubCIFAR10:
    """torchvision's CIFAR10 as lsr1bench uses it: ``data`` uint8 (N, H, W, 3), ``targets`` list."""

    calls: list[tuple[str, bool, bool]] = []

    def __init__(self, root: str, train: bool, download: bool) -> None:
        self.calls.append((root, train, download))
        count = 6 if train else 4
        n, h, w, c = np.meshgrid(np.arange(count) + (0 if train else 100), np.arange(32), np.arange(32),
                                 np.arange(3), indexing="ij")  # fmt: skip
        self.data = _cifar_pixel(n, h, w, c)
        self.targets = [(i * 3 + (0 if train else 1)) % 10 for i in range(count)]


def test_cifar10_is_nchw_with_each_channels_statistics(monkeypatch, tmp_path):
    import torchvision.datasets

    _StubCIFAR10.calls = []
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", _StubCIFAR10)
    pair = load_dataset("cifar10", root=tmp_path, download=False)
    assert _StubCIFAR10.calls == [(str(tmp_path), True, False), (str(tmp_path), False, False)]
    check_pair(pair, (3, 32, 32))
    assert pair.family == "cifar10" and pair.name == "cifar10"
    assert pair.train_x.shape == (6, 3, 32, 32) and pair.test_x.shape == (4, 3, 32, 32)
    assert pair.train_y.tolist() == [0, 3, 6, 9, 2, 5] and pair.test_y.tolist() == [1, 4, 7, 0]
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    for x, offset in ((pair.train_x, 0), (pair.test_x, 100)):
        # spot checks written out by hand: image 1, channel 2, row 5, column 30
        value = ((1 + offset) * 11 + 5 * 7 + 30 * 3 + 2 * 101) % 256
        assert x[1, 2, 5, 30].item() == pytest.approx((value / 255 - mean[2]) / std[2], abs=1e-6)
        n, c, h, w = np.meshgrid(np.arange(len(x)) + offset, np.arange(3), np.arange(32), np.arange(32),
                                 indexing="ij")  # fmt: skip
        expected = _cifar_pixel(n, h, w, c).astype(np.float64) / 255.0
        expected = (expected - np.array(mean).reshape(1, 3, 1, 1)) / np.array(std).reshape(1, 3, 1, 1)
        np.testing.assert_allclose(x.numpy(), expected, rtol=0, atol=1e-5)
        assert x.is_contiguous()
