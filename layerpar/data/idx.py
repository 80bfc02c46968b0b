"""Reading and writing the IDX format used by MNIST and Fashion-MNIST.

An IDX file is a 4-byte magic number (two zero bytes, a type code and the number of
dimensions), one big-endian uint32 per dimension, then the values in C order, big-endian.
Files may be gzipped; this is detected from the content, not the name.
"""

from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

from layerpar.data.atomic import atomic_output
from layerpar.errors import DataError

_GZIP_MAGIC = b"\x1f\x8b"

#: IDX type code -> big-endian numpy dtype, as defined by the format.
_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_KIND_SIZE_TO_CODE = {(dt.kind, dt.itemsize): code for code, dt in _CODE_TO_DTYPE.items()}


def read_idx(path: Path | str, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (raw or gzipped) into a writable, native-byte-order numpy array.

    ``ndim``, if given, is the number of dimensions the caller expects. Raises
    :class:`DataError` if the file is missing, not IDX, truncated, or has trailing bytes.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = gzip.decompress(raw) if raw[:2] == _GZIP_MAGIC else raw
    except FileNotFoundError as exc:
        raise DataError(f"IDX file {path} does not exist.") from exc
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read IDX file {path}: {exc}") from exc
    return parse_idx(data, source=str(path), ndim=ndim)


def parse_idx(data: bytes, *, source: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Decode the bytes of an uncompressed IDX file; see :func:`read_idx`."""
    dtype, shape = _parse_header(data, source)
    if ndim is not None and len(shape) != ndim:
        raise DataError(f"{source} has {len(shape)} dimensions {shape}, expected {ndim}.")
    offset = 4 + 4 * len(shape)
    expected = math.prod(shape) * dtype.itemsize
    if len(data) - offset != expected:
        raise DataError(
            f"{source} declares shape {shape} ({expected} bytes of data) but holds "
            f"{len(data) - offset} bytes: the file is truncated or corrupt."
        )
    values = np.frombuffer(data, dtype=dtype, count=math.prod(shape), offset=offset)
    # astype copies, which both converts to native byte order and makes the array writable
    # (frombuffer over immutable bytes is read-only, which torch.from_numpy warns about).
    return values.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


def _parse_header(data: bytes, source: str) -> tuple[np.dtype, tuple[int, ...]]:
    """Return the (big-endian) dtype and the shape declared by an IDX header."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        found = data[:4].hex() or "(empty)"
        raise DataError(f"{source} is not an IDX file: bad magic number {found}.")
    code, ndim = data[2], data[3]
    if code not in _CODE_TO_DTYPE:
        raise DataError(f"{source} has unknown IDX type code 0x{code:02x}.")
    if ndim == 0:
        raise DataError(f"{source} declares zero dimensions.")
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{source} is truncated inside its {ndim}-dimension header.")
    dims = np.frombuffer(data, dtype=">u4", count=ndim, offset=4)
    return _CODE_TO_DTYPE[code], tuple(int(d) for d in dims)


def write_idx(path: Path | str, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file, gzipped if ``path`` ends in ``.gz`` (atomically).

    Mainly for tests and for exporting data; supports the dtypes IDX defines
    (uint8, int8, int16, int32, float32, float64) and 1 to 255 dimensions.
    """
    path = Path(path)
    array = np.asarray(array)
    code = _KIND_SIZE_TO_CODE.get((array.dtype.kind, array.dtype.itemsize))
    if code is None:
        raise DataError(f"IDX cannot store dtype {array.dtype}.")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"IDX needs 1 to 255 dimensions, got {array.ndim}.")
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    payload = header + array.astype(_CODE_TO_DTYPE[code], copy=False).tobytes(order="C")
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)  # mtime=0: identical input, identical file
    with atomic_output(path) as handle:
        handle.write(payload)
