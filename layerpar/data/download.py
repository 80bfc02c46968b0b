"""The canonical source: gzipped IDX files downloaded over HTTP(S) from an official mirror."""

from __future__ import annotations

import gzip
import logging
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from layerpar.data.integrity import install_verified
from layerpar.data.sources import FileSpec

logger = logging.getLogger(__name__)

#: Seconds to wait for a connection (and, as urllib has one timeout, for each read). Short, so
#: that machines without internet fall through to the offline sources quickly.
TIMEOUT_S = 5.0
_USER_AGENT = "layerpar-data-fetch"


@dataclass(frozen=True)
class HttpMirror:
    """A web directory holding ``<filename>.gz`` for each file of a data set."""

    base_url: str

    @property
    def description(self) -> str:
        """See :class:`layerpar.data.sources.Source`."""
        return f"download from {self.base_url}"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        """See :class:`layerpar.data.sources.Source`."""
        for spec in files:
            self._fetch_one(spec, dest, progress=progress)

    def _fetch_one(self, spec: FileSpec, dest: Path, *, progress: bool) -> None:
        url = f"{self.base_url.rstrip('/')}/{spec.filename}.gz"
        logger.info("downloading %s", url)
        request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            total = response.headers.get("Content-Length")
            # The bar counts compressed bytes, the only size the server tells us in advance.
            with tqdm.wrapattr(
                response,
                "read",
                total=int(total) if total else None,
                desc=spec.filename,
                disable=not progress,
            ) as counted:
                stream = gzip.GzipFile(fileobj=counted, mode="rb")
                install_verified(stream, dest / spec.filename, spec.md5, origin=url)
