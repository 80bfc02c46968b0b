"""Helpers building tiny fake IDX data sets with known checksums (no network needed)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from layerpar.data.idx import write_idx
from layerpar.data.sources import FileSpec


@dataclass(frozen=True)
class FakeIdxSet:
    """A directory of small IDX files and the specs (names + MD5s) that describe them."""

    directory: Path
    specs: tuple[FileSpec, ...]


def md5_of(path: Path) -> str:
    """MD5 of a file, computed independently of the code under test."""
    return hashlib.md5(path.read_bytes()).hexdigest()


def make_fake_mnist(directory: Path, *, n_train: int = 12, n_test: int = 5,
                    gzipped: bool = False) -> FakeIdxSet:
    """Write an MNIST-shaped (28x28 uint8, labels 0..9) IDX set into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(n_train, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": (np.arange(n_test, dtype=np.uint8) * 3) % 10,
    }
    specs = []
    for name, array in arrays.items():
        raw = directory / name
        write_idx(raw, array)
        specs.append(FileSpec(name, md5_of(raw)))  # MD5 of the *uncompressed* file
        if gzipped:
            write_idx(directory / f"{name}.gz", array)
            raw.unlink()
    return FakeIdxSet(directory, tuple(specs))


def leftovers(directory: Path) -> list[str]:
    """Names of temporary files or folders a fetch must not leave behind."""
    return sorted(p.name for p in directory.iterdir()
                  if p.name.endswith(".part") or p.name.startswith(".scratch-"))
