"""Fixtures: tiny fake IDX data sets with known checksums (no network needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.data.fakes import FakeIdxSet, make_fake_mnist


@pytest.fixture
def fake_mnist(tmp_path: Path) -> FakeIdxSet:
    """A raw (uncompressed) fake MNIST set in ``tmp_path/src``."""
    return make_fake_mnist(tmp_path / "src")


@pytest.fixture
def fake_mnist_gz(tmp_path: Path) -> FakeIdxSet:
    """A gzipped fake MNIST set in ``tmp_path/src_gz``."""
    return make_fake_mnist(tmp_path / "src_gz", gzipped=True)
