"""Checksums, and installing a byte stream only if it hashes to the expected digest."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import BinaryIO, Protocol

from layerpar.data.atomic import atomic_output
from layerpar.errors import DataError

_CHUNK = 1 << 20


class ByteReader(Protocol):
    """Anything with a binary ``read``: files, HTTP responses, gzip and tar member streams."""

    def read(self, size: int = -1, /) -> bytes:
        """Return up to ``size`` bytes; ``b""`` at the end."""
        ...


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """Return the hex digest of a file's contents, read in 1 MiB chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_verified(path: Path, expected_md5: str) -> bool:
    """Tell whether ``path`` is a regular file whose MD5 equals ``expected_md5``."""
    return path.is_file() and file_digest(path, "md5") == expected_md5.lower()


def verify_file(path: Path, expected_md5: str) -> None:
    """Raise :class:`DataError` unless ``path`` exists and has MD5 ``expected_md5``."""
    if not path.is_file():
        raise DataError(f"{path} is missing; expected a file with MD5 {expected_md5}.")
    found = file_digest(path, "md5")
    if found != expected_md5.lower():
        raise DataError(
            f"{path} has MD5 {found}, expected {expected_md5}: the file is corrupt or not the "
            "expected data. Delete it and fetch again."
        )


class _HashingWriter:
    """File-like sink that hashes every chunk on its way to the real file."""

    def __init__(self, sink: BinaryIO) -> None:
        self._sink = sink
        self.md5 = hashlib.md5()

    def write(self, data: bytes) -> int:
        self.md5.update(data)
        return self._sink.write(data)


def install_verified(stream: ByteReader, dest: Path, expected_md5: str, *, origin: str) -> None:
    """Copy ``stream`` to ``dest`` atomically, keeping it only if its MD5 matches.

    ``origin`` names where the bytes came from, for the error message. Hashing while copying
    avoids reading the data twice; a mismatch aborts the atomic write, so ``dest`` is never
    replaced by bad data.
    """
    with atomic_output(dest) as handle:
        writer = _HashingWriter(handle)
        shutil.copyfileobj(stream, writer, _CHUNK)
        found = writer.md5.hexdigest()
        if found != expected_md5.lower():
            raise DataError(
                f"{origin} has MD5 {found} after decompression, expected {expected_md5}: "
                "the source holds different or corrupt data."
            )
