"""In-memory image-classification data sets as normalised torch tensors."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np
import torch

from layerpar.data.fetch import fetch_dataset
from layerpar.data.idx import read_idx
from layerpar.errors import ConfigError, DataError

Split = Literal["train", "test"]
SPLITS: tuple[Split, ...] = ("train", "test")

#: Samples of sklearn's 1797 digits that form the training split; the rest (297) are the test set.
DIGITS_TRAIN_SIZE = 1500


@dataclass(frozen=True)
class DatasetInfo:
    """The shape of one sample and the number of classes, known without loading any data."""

    channels: int
    height: int
    width: int
    num_classes: int


@dataclass(frozen=True, eq=False)  # eq=False: `==` on tensors is element-wise, not a bool.
class ArrayDataset:
    """A whole split in memory.

    ``images`` is ``(N, C, H, W)`` float32, normalised with the data set's training-set pixel
    mean and standard deviation; ``labels`` is ``(N,)`` int64 in ``[0, num_classes)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __post_init__(self) -> None:
        if self.images.dim() != 4 or self.images.dtype != torch.float32:
            raise DataError(
                f"images must be (N, C, H, W) float32, got {tuple(self.images.shape)} {self.images.dtype}."
            )
        if self.labels.dim() != 1 or self.labels.dtype != torch.int64:
            raise DataError(f"labels must be (N,) int64, got {tuple(self.labels.shape)} {self.labels.dtype}.")
        if self.images.shape[0] != self.labels.shape[0]:
            raise DataError(f"{self.images.shape[0]} images but {self.labels.shape[0]} labels.")

    def __len__(self) -> int:
        """Return the number of samples."""
        return int(self.labels.shape[0])


@dataclass(frozen=True)
class _Spec:
    """How to turn a data set's raw pixels into normalised tensors."""

    info: DatasetInfo
    max_value: float  # raw pixel value of full intensity; pixels are scaled to [0, 1] first
    mean: float  # of the scaled training pixels (computed once over the full training split)
    std: float


_SPECS: Mapping[str, _Spec] = MappingProxyType(
    {
        "mnist": _Spec(DatasetInfo(1, 28, 28, 10), 255.0, 0.1307, 0.3081),
        "fashion_mnist": _Spec(DatasetInfo(1, 28, 28, 10), 255.0, 0.2860, 0.3530),
        "digits": _Spec(DatasetInfo(1, 8, 8, 10), 16.0, 0.3051, 0.3750),
    }
)

#: Every name :func:`load_dataset` accepts.
DATASET_NAMES: tuple[str, ...] = tuple(_SPECS)


def _spec(name: str) -> _Spec:
    try:
        return _SPECS[name]
    except KeyError:
        raise DataError(f"unknown data set {name!r}; expected one of: {', '.join(DATASET_NAMES)}.") from None


def dataset_info(name: str) -> DatasetInfo:
    """Return sample shape and class count of data set ``name`` without loading it."""
    return _spec(name).info


def normalization(name: str) -> tuple[float, float]:
    """Return the ``(mean, std)`` used to normalise data set ``name`` (pixels scaled to [0, 1]).

    Useful to undo normalisation, or to pad with true black: ``-mean / std``.
    """
    spec = _spec(name)
    return spec.mean, spec.std


def load_dataset(
    name: str,
    split: Split,
    cache_dir: Path | str | None = None,
    limit: int | None = None,
    *,
    progress: bool = True,
) -> ArrayDataset:
    """Load one split of data set ``name`` into memory, fetching it first if needed.

    ``limit`` keeps only the first ``limit`` samples (all of them if the split is smaller), for
    quick runs. ``cache_dir`` and ``progress`` go to :func:`fetch_dataset`; "digits" comes from
    scikit-learn and ignores them.
    """
    spec = _spec(name)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of: {', '.join(SPLITS)}.")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be a positive number of samples or None, got {limit}.")
    if name == "digits":
        images, labels = _digits_arrays(split)
    else:
        images, labels = _idx_arrays(name, split, cache_dir, progress=progress)
    if limit is not None:
        # Cut before converting to float so that quick runs never build the full tensor.
        images, labels = images[:limit], labels[:limit]
    _check_arrays(name, images, labels, spec.info)
    return ArrayDataset(
        _normalise(images, spec), torch.from_numpy(labels.astype(np.int64)), spec.info.num_classes
    )


def _idx_arrays(
    name: str, split: Split, cache_dir: Path | str | None, *, progress: bool
) -> tuple[np.ndarray, np.ndarray]:
    directory = fetch_dataset(name, cache_dir, progress=progress)
    prefix = "train" if split == "train" else "t10k"
    images = read_idx(directory / f"{prefix}-images-idx3-ubyte", ndim=3)
    labels = read_idx(directory / f"{prefix}-labels-idx1-ubyte", ndim=1)
    return images, labels


def _digits_arrays(split: Split) -> tuple[np.ndarray, np.ndarray]:
    # Imported here: scikit-learn is slow to import and only this data set needs it.
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # A fixed cut, not a shuffled split, so every process and every run sees the same samples.
    part = slice(None, DIGITS_TRAIN_SIZE) if split == "train" else slice(DIGITS_TRAIN_SIZE, None)
    return np.asarray(bunch.images[part]), np.asarray(bunch.target[part])


def _check_arrays(name: str, images: np.ndarray, labels: np.ndarray, info: DatasetInfo) -> None:
    """Raise :class:`DataError` unless the raw arrays fit what ``info`` promises."""
    if images.ndim != 3 or images.shape[1:] != (info.height, info.width):
        raise DataError(
            f"{name}: images have shape {images.shape}, expected (N, {info.height}, {info.width})."
        )
    if labels.shape != (images.shape[0],):
        raise DataError(f"{name}: {images.shape[0]} images but labels of shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= info.num_classes):
        raise DataError(
            f"{name}: labels span [{labels.min()}, {labels.max()}], expected [0, {info.num_classes - 1}]."
        )


def _normalise(images: np.ndarray, spec: _Spec) -> torch.Tensor:
    """(N, H, W) raw pixels -> (N, 1, H, W) float32, scaled to [0, 1] then standardised."""
    # copy=True: the in-place ops below must never write through to the caller's array.
    tensor = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32, copy=True)
    tensor.div_(spec.max_value).sub_(spec.mean).div_(spec.std)
    return tensor.unsqueeze(1)
