"""The IDX reader and writer: round trips and rejection of malformed files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from layerpar.data.idx import parse_idx, read_idx, write_idx
from layerpar.errors import DataError


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path: Path, dtype: type, suffix: str) -> None:
    array: np.ndarray = (np.arange(2 * 3 * 4) - 5).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"a-idx3{suffix}"
    write_idx(path, array)
    back = read_idx(path, ndim=3)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    back[0, 0, 0] = 1  # writable, so torch.from_numpy will not warn


def test_header_layout_matches_the_format(tmp_path: Path) -> None:
    path = tmp_path / "labels"
    write_idx(path, np.array([7, 1, 2], dtype=np.uint8))
    assert path.read_bytes() == bytes([0, 0, 8, 1, 0, 0, 0, 3, 7, 1, 2])


def test_gzip_is_detected_by_content_not_name(tmp_path: Path) -> None:
    path = tmp_path / "no-suffix"
    path.write_bytes(gzip.compress(bytes([0, 0, 8, 1, 0, 0, 0, 2, 5, 6])))
    np.testing.assert_array_equal(read_idx(path), [5, 6])


def test_bad_magic_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "bad"
    path.write_bytes(bytes([1, 2, 8, 1, 0, 0, 0, 1, 9]))
    with pytest.raises(DataError, match="magic"):
        read_idx(path)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "magic"),
        (bytes([0, 0, 0x42, 1, 0, 0, 0, 1, 9]), "type code"),
        (bytes([0, 0, 8, 0]), "zero dimensions"),
        (bytes([0, 0, 8, 2, 0, 0, 0, 1]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 3, 1, 2]), "truncated"),
        (bytes([0, 0, 8, 1, 0, 0, 0, 1, 1, 2]), "holds 2 bytes"),
    ],
)
def test_malformed_headers_and_sizes_are_rejected(data: bytes, match: str) -> None:
    with pytest.raises(DataError, match=match):
        parse_idx(data)


def test_unexpected_dimension_count_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "images"
    write_idx(path, np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="expected 3"):
        read_idx(path, ndim=3)


def test_missing_and_corrupt_gzip_files_raise_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        read_idx(tmp_path / "absent")
    broken = tmp_path / "broken.gz"
    broken.write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\x01\x05")[:-6])
    with pytest.raises(DataError):
        read_idx(broken)


def test_write_rejects_unsupported_dtype(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="dtype"):
        write_idx(tmp_path / "x", np.zeros(3, dtype=np.int64))
