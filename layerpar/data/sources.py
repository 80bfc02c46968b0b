"""Where data-set files come from: the ``Source`` protocol and the local-directory source.

A source installs the requested files into a destination directory, each one atomically and
only after its MD5 matched, or raises. The other sources (HTTP mirrors, npm and Debian packages)
live in :mod:`layerpar.data.download` and :mod:`layerpar.data.packages` and reuse the helpers
here once they have the files on local disk.
"""

from __future__ import annotations

import gzip
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

from layerpar.data.integrity import ByteReader, install_verified
from layerpar.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True)
class FileSpec:
    """One file of a data set: its uncompressed name and the MD5 of its uncompressed bytes."""

    filename: str
    md5: str


class Source(Protocol):
    """Something that can provide a data set's files."""

    @property
    def description(self) -> str:
        """Short human-readable name, used in logs and in the error listing failed sources."""
        ...

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        """Install every file of ``files`` into ``dest`` (verified, atomically) or raise."""
        ...


def decompressed(stream: IO[bytes]) -> ByteReader:
    """Return ``stream`` itself, or a gunzipping view of it if it starts with the gzip magic.

    Sniffing the content rather than trusting the name lets a source hold either form. The
    stream must be buffered (``peek``), as files opened with ``open(..., "rb")`` and tar members
    are, so that sniffing consumes nothing.
    """
    peek = getattr(stream, "peek", None)
    if peek is None:
        raise TypeError(f"{stream!r} cannot peek; wrap it in io.BufferedReader first.")
    if peek(2)[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=stream, mode="rb")
    return stream


def find_member(directory: Path, filename: str) -> Path:
    """Return ``directory/filename`` or ``directory/filename.gz``, whichever exists."""
    for candidate in (directory / filename, directory / f"{filename}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"{directory} holds neither {filename} nor {filename}.gz.")


def install_from_directory(directory: Path, files: Sequence[FileSpec], dest: Path) -> None:
    """Install ``files`` from ``directory`` (raw or gzipped copies) into ``dest``."""
    for spec in files:
        member = find_member(directory, spec.filename)
        with open(member, "rb") as raw:
            install_verified(decompressed(raw), dest / spec.filename, spec.md5, origin=str(member))


@dataclass(frozen=True)
class LocalDirectory:
    """Files already on this machine, e.g. an installed Debian data-set package."""

    path: Path

    @property
    def description(self) -> str:
        """See :class:`Source`."""
        return f"installed files in {self.path}"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        """See :class:`Source`; ``progress`` is unused because local copies are quick."""
        if not self.path.is_dir():
            raise DataError(f"{self.path} does not exist.")
        install_from_directory(self.path, files, dest)
