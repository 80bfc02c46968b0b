"""load_dataset / dataset_info on sklearn digits and on small fake IDX sets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerpar.data import datasets
from layerpar.data.datasets import (
    ArrayDataset,
    DatasetInfo,
    dataset_info,
    load_dataset,
    normalization,
)
from layerpar.data.idx import read_idx
from layerpar.errors import ConfigError, DataError
from tests.unit.data.fakes import FakeIdxSet


@pytest.mark.parametrize(("split", "size"), [("train", 1500), ("test", 297)])
def test_digits_shapes_and_types(split: str, size: int) -> None:
    data = load_dataset("digits", split)  # type: ignore[arg-type]
    assert len(data) == size
    assert data.images.shape == (size, 1, 8, 8) and data.images.dtype == torch.float32
    assert data.labels.shape == (size,) and data.labels.dtype == torch.int64
    assert data.num_classes == 10
    assert set(data.labels.tolist()) == set(range(10))


def test_digits_split_is_deterministic_and_normalised() -> None:
    train = load_dataset("digits", "train")
    again = load_dataset("digits", "train")
    assert torch.equal(train.images, again.images) and torch.equal(train.labels, again.labels)
    # The stored mean/std were computed on this split, so it comes out standardised.
    assert abs(train.images.mean().item()) < 1e-3
    assert abs(train.images.std().item() - 1) < 1e-3
    mean, std = normalization("digits")
    assert train.images.min().item() == pytest.approx(-mean / std, abs=1e-5)  # black pixels


def test_limit_keeps_the_first_samples() -> None:
    full = load_dataset("digits", "test")
    small = load_dataset("digits", "test", limit=10)
    assert len(small) == 10
    assert torch.equal(small.images, full.images[:10])
    assert len(load_dataset("digits", "test", limit=10_000)) == 297
    with pytest.raises(ConfigError):
        load_dataset("digits", "test", limit=0)


def test_idx_data_sets_are_loaded_and_normalised(
        fake_mnist: FakeIdxSet, monkeypatch: pytest.MonkeyPatch) -> None:
    # Fake checksums cannot pass the real fetch, so point the loader at the fake files.
    monkeypatch.setattr(datasets, "fetch_dataset", lambda *a, **k: fake_mnist.directory)
    data = load_dataset("mnist", "test", limit=3)
    raw = read_idx(fake_mnist.directory / "t10k-images-idx3-ubyte")[:3]
    mean, std = normalization("mnist")
    expected = (torch.from_numpy(raw).float() / 255 - mean) / std
    assert data.images.shape == (3, 1, 28, 28)
    torch.testing.assert_close(data.images[:, 0], expected)
    labels = read_idx(fake_mnist.directory / "t10k-labels-idx1-ubyte")[:3]
    assert data.labels.tolist() == labels.astype(np.int64).tolist()
    assert len(load_dataset("fashion_mnist", "train")) == 12


def test_unknown_name_and_split_are_rejected() -> None:
    with pytest.raises(DataError, match="mnist, fashion_mnist, digits"):
        load_dataset("cifar10", "train")
    with pytest.raises(DataError, match="digits"):
        dataset_info("svhn")
    with pytest.raises(DataError, match="train, test"):
        load_dataset("digits", "validation")  # type: ignore[arg-type]


def test_dataset_info_needs_no_data() -> None:
    assert dataset_info("mnist") == DatasetInfo(1, 28, 28, 10)
    assert dataset_info("fashion_mnist") == DatasetInfo(1, 28, 28, 10)
    assert dataset_info("digits") == DatasetInfo(channels=1, height=8, width=8, num_classes=10)


def test_array_dataset_validates_its_tensors() -> None:
    images = torch.zeros(4, 1, 8, 8)
    ArrayDataset(images, torch.zeros(4, dtype=torch.int64), 10)
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(images, torch.zeros(3, dtype=torch.int64), 10)
    with pytest.raises(DataError, match="float32"):
        ArrayDataset(images.double(), torch.zeros(4, dtype=torch.int64), 10)
    with pytest.raises(DataError, match="int64"):
        ArrayDataset(images, torch.zeros(4, dtype=torch.int32), 10)
