"""Atomic writes and verified installs leave no partial files behind."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from layerpar.data.atomic import atomic_output
from layerpar.data.integrity import install_verified, is_verified, verify_file
from layerpar.errors import DataError
from tests.unit.data.fakes import md5_of


def test_atomic_output_writes_file_without_leftovers(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with atomic_output(dest) as handle:
        handle.write(b"hello")
    assert dest.read_bytes() == b"hello"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_atomic_output_failure_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    with pytest.raises(RuntimeError), atomic_output(dest) as handle:
        handle.write(b"half of the data")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_failure_keeps_previous_file(tmp_path: Path) -> None:
    dest = tmp_path / "out.bin"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_output(dest) as handle:
        handle.write(b"new")
        raise RuntimeError("interrupted")
    assert dest.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_install_verified_rejects_wrong_md5_and_leaves_nothing(tmp_path: Path) -> None:
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="MD5"):
        install_verified(io.BytesIO(b"corrupted"), dest, "0" * 32, origin="test stream")
    assert list(tmp_path.iterdir()) == []


def test_install_verified_accepts_right_md5(tmp_path: Path) -> None:
    source = tmp_path / "source"
    source.write_bytes(b"payload" * 1000)
    dest = tmp_path / "dest"
    with open(source, "rb") as stream:
        install_verified(stream, dest, md5_of(source), origin="test")
    assert dest.read_bytes() == source.read_bytes()


def test_verify_file_rejects_corrupted_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"original")
    good = md5_of(path)
    verify_file(path, good)
    assert is_verified(path, good.upper())  # hex case does not matter
    path.write_bytes(b"originaX")
    assert not is_verified(path, good)
    with pytest.raises(DataError, match="corrupt"):
        verify_file(path, good)
    with pytest.raises(DataError, match="missing"):
        verify_file(tmp_path / "absent", good)
