#!/usr/bin/env python3
"""Build lsr1bench/data/mnist_subset.npz, the MNIST subset shipped inside the package.

From the four original (uncompressed) MNIST files it takes a class-balanced random subset:
500 training images per class from the 60,000-image training set and 100 test images per
class from the 10,000-image test set (5,000 + 1,000 by default). The choice is seeded, so
the same source files and seed give the same arrays. Within each split the images are kept
in their original MNIST order (sorted source indices).

The npz holds ``train_images``/``test_images`` (uint8, N x 28 x 28), ``train_labels``/
``test_labels`` (uint8), ``train_indices``/``test_indices`` (int32 positions in the source
files), ``source_files`` and ``source_md5`` (names and md5 of the four source files),
``seed``, and ``license``.

Usage (from the repository root):

    python scripts/make_embedded_mnist.py --source ../shared/data/MNIST/raw
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE = REPO_ROOT.parent / "shared" / "data" / "MNIST" / "raw"
DEFAULT_OUTPUT = REPO_ROOT / "lsr1bench" / "data" / "mnist_subset.npz"

# md5 of the published, uncompressed originals (see ../shared/data/README.md).
KNOWN_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}

LICENSE = (
    "MNIST by Yann LeCun, Corinna Cortes and Christopher J.C. Burges, CC BY-SA 3.0; "
    "this subset is shared under the same license"
)


def md5_of(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Read an IDX file (big-endian header: magic, then one uint32 per dimension)."""
    raw = path.read_bytes()
    magic = int.from_bytes(raw[0:4], "big")
    if magic != expected_magic:
        raise ValueError(f"{path}: magic number {magic}, expected {expected_magic}")
    ndim = magic & 0xFF
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: {data.size} bytes of data, header says {dims}")
    return data.reshape(dims)


def balanced_indices(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """``per_class`` random positions of each class 0..9, returned sorted."""
    chosen = []
    for digit in range(10):
        positions = np.flatnonzero(labels == digit)
        if len(positions) < per_class:
            raise ValueError(f"class {digit} has {len(positions)} examples, need {per_class}")
        chosen.append(rng.choice(positions, size=per_class, replace=False))
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def build(
    source: Path,
    output: Path,
    *,
    train_per_class: int = 500,
    test_per_class: int = 100,
    seed: int = 0,
    check_md5: bool = True,
) -> dict[str, np.ndarray]:
    """Build the subset from the raw files in ``source`` and write it to ``output``."""
    files = list(KNOWN_MD5)
    missing = [name for name in files if not (source / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}")
    md5 = {name: md5_of(source / name) for name in files}
    if check_md5:
        wrong = [name for name in files if md5[name] != KNOWN_MD5[name]]
        if wrong:
            raise ValueError(
                f"md5 mismatch for {', '.join(wrong)}: these are not the published MNIST "
                "files (pass --no-check-md5 to build anyway)"
            )

    train_images = read_idx(source / "train-images-idx3-ubyte", 0x803)
    train_labels = read_idx(source / "train-labels-idx1-ubyte", 0x801)
    test_images = read_idx(source / "t10k-images-idx3-ubyte", 0x803)
    test_labels = read_idx(source / "t10k-labels-idx1-ubyte", 0x801)

    rng = np.random.default_rng(seed)
    train_indices = balanced_indices(train_labels, train_per_class, rng)
    test_indices = balanced_indices(test_labels, test_per_class, rng)

    arrays = {
        "train_images": train_images[train_indices],
        "train_labels": train_labels[train_indices],
        "test_images": test_images[test_indices],
        "test_labels": test_labels[test_indices],
        "train_indices": train_indices,
        "test_indices": test_indices,
        "source_files": np.array(files),
        "source_md5": np.array([md5[name] for name in files]),
        "seed": np.array(seed, dtype=np.int64),
        "license": np.array(LICENSE),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output, **arrays)
    return arrays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source",
        type=Path,
        default=DEFAULT_SOURCE,
        help="folder with the four uncompressed MNIST files (default: %(default)s)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="npz to write (default: %(default)s)"
    )
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--test-per-class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-check-md5",
        dest="check_md5",
        action="store_false",
        help="build even if the source files are not the published originals",
    )
    args = parser.parse_args(argv)
    try:
        arrays = build(
            args.source,
            args.output,
            train_per_class=args.train_per_class,
            test_per_class=args.test_per_class,
            seed=args.seed,
            check_md5=args.check_md5,
        )
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = args.output.stat().st_size
    print(
        f"wrote {args.output} ({size / 1e6:.2f} MB): "
        f"{len(arrays['train_labels'])} train, {len(arrays['test_labels'])} test images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
