"""Data sets, fetching, augmentation and batch order for layerpar.

Everything random here is a pure function of explicit seeds, so that all worker processes of
a layer-parallel job draw identical batches without communicating.
"""

from __future__ import annotations

from layerpar.data.augment import augment_batch
from layerpar.data.datasets import (
    DATASET_NAMES,
    ArrayDataset,
    DatasetInfo,
    dataset_info,
    load_dataset,
    normalization,
)
from layerpar.data.fetch import CACHE_ENV_VAR, fetch_dataset, resolve_cache_dir
from layerpar.data.idx import read_idx, write_idx
from layerpar.data.sampler import epoch_batches, steps_per_epoch

__all__ = [
    "CACHE_ENV_VAR",
    "DATASET_NAMES",
    "ArrayDataset",
    "DatasetInfo",
    "augment_batch",
    "dataset_info",
    "epoch_batches",
    "fetch_dataset",
    "load_dataset",
    "normalization",
    "read_idx",
    "resolve_cache_dir",
    "steps_per_epoch",
    "write_idx",
]
