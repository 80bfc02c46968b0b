"""Atomic file creation: a file appears under its final name complete, or not at all.

Several worker processes may fetch the same data set at once, and a fetch may be interrupted.
Writing to a temporary file in the destination's own directory and renaming it with
``os.replace`` means readers never see a half-written file: the rename is atomic on POSIX and
Windows as long as both names are on the same file system, which is why the temporary file lives
beside the destination rather than in ``/tmp``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Windows would otherwise translate newlines in a descriptor opened without O_BINARY.
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)

#: Suffix of in-progress files; one that outlives its writer is an abandoned write (SIGKILL).
PARTIAL_SUFFIX = ".part"
#: Prefix of scratch folders that sources create beside the files they install.
SCRATCH_PREFIX = ".scratch-"


@contextlib.contextmanager
def atomic_output(dest: Path) -> Iterator[BinaryIO]:
    """Open a temporary binary file that replaces ``dest`` when the ``with`` block succeeds.

    On any exception inside the block the temporary file is deleted and ``dest`` is untouched.
    The data is fsynced before the rename so that a crash right after cannot leave an empty
    file under the final name.
    """
    dest = Path(dest)
    fd, tmp = _create_temporary(dest)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_directory(dest.parent)


def _create_temporary(dest: Path) -> tuple[int, Path]:
    """Create a uniquely named empty file beside ``dest``; return its descriptor and path.

    Unlike ``tempfile.mkstemp`` (always mode 0600) this honours the umask, so a cache shared
    between users stays readable by them.
    """
    while True:
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}"
        try:
            return os.open(tmp, _FLAGS, 0o666), tmp
        except FileExistsError:  # pragma: no cover - 48 random bits make this vanishingly rare
            continue


def _fsync_directory(directory: Path) -> None:
    """Persist a rename by syncing its directory; best effort, as not every OS allows it."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
