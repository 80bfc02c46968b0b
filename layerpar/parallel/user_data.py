"""A user's own data as the run's data sets: tensors, a torch Dataset, or a factory's output.

Every worker draws its batches from the same in-memory tensors (``BatchPlan``), so a map-style
``torch.utils.data.Dataset`` is read once into two stacked tensors.  Inputs are any
``(N, ...)`` float tensor; targets any ``(N, ...)`` tensor the loss understands (class indices
for the default cross-entropy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from layerpar.errors import DataError


@dataclass(frozen=True, eq=False)
class TensorData:
    """A whole split in memory (the interface of ``layerpar.data.ArrayDataset``)."""

    images: torch.Tensor
    """Inputs, ``(N, ...)`` float."""
    labels: torch.Tensor
    """Targets, ``(N, ...)``."""

    def __post_init__(self) -> None:
        if self.images.dim() < 2 or not self.images.is_floating_point():
            raise DataError(
                f"inputs must be an (N, ...) float tensor, got {tuple(self.images.shape)} "
                f"{self.images.dtype}: convert with .float()"
            )
        if len(self.images) != len(self.labels):
            raise DataError(
                f"{len(self.images)} inputs but {len(self.labels)} targets: give one target per input"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])


def as_data(data: Any, what: str) -> Any:
    """``data`` as a run's data set: an ArrayDataset / TensorData as is, an ``(inputs, targets)``
    pair of tensors, or a map-style Dataset of ``(input, target)`` pairs."""
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
        return TensorData(data[0], data[1])
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        if len(data) == 0:
            raise DataError(f"{what} is empty")
        pairs = [data[i] for i in range(len(data))]
        try:
            inputs = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            targets = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        except (TypeError, IndexError, RuntimeError) as error:
            raise DataError(
                f"{what}: items must be (input, target) pairs of equal shapes ({error})"
            ) from error
        return TensorData(inputs.float() if not inputs.is_floating_point() else inputs, targets)
    raise DataError(
        f"{what} must be a layerpar ArrayDataset, an (inputs, targets) pair of tensors or a map-style "
        f"torch Dataset of (input, target) pairs, got {type(data).__name__}"
    )
