"""Checkpoint sets: the shards of every worker at one step, made whole by a manifest written last.

Layer-parallel workers hold *different* parameters, so a checkpoint is a set of shards that
must agree.  A set is a folder ``checkpoint/step-000000120/`` holding ``rank{r}.pt`` for every
rank and ``manifest.json``.  Every rank writes its own shard (temp file, fsync, rename); rank 0
writes the manifest only after every shard is on disk, with their checksums, then fsyncs the
folder.  A set without a valid manifest (a save killed half-way) is ignored, so the previous
complete set is what a restart resumes from.  The last ``keep`` complete sets are kept.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.config import RunConfig
from layerpar.errors import CheckpointError

MANIFEST = "manifest.json"
SET_PREFIX = "step-"

IDENTITY_FIELDS = (
    "model",
    "data.dataset",
    "data.factory",
    "train.mode",
    "train.batch_size",
    "train.dtype",
    "train.precision",
    "train.loss",
    "parallel.stages",
    "parallel.replicas",
    "parallel.balance",
    "layerpar.method",
    "layerpar.accumulate",
    "aux",
)
"""Config fields a resumed run must share with its checkpoint: what the shards are shards of
(the backbone, its cut, the method and the layout) and what their tensors mean."""


@dataclass(frozen=True)
class CheckpointSet:
    """A complete set on disk."""

    path: Path
    manifest: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.manifest["step"])

    def shard_path(self, rank: int) -> Path:
        return self.path / self.manifest["shards"][str(rank)]["file"]


def set_dir(root: Path, step: int) -> Path:
    return root / f"{SET_PREFIX}{step:09d}"


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_shard(root: Path, step: int, rank: int, state: dict[str, Any]) -> dict[str, Any]:
    """This rank's shard of the set at ``step``; returns what the manifest records of it."""
    path = save_atomic(state, set_dir(root, step) / f"rank{rank}.pt")
    return {"rank": rank, "file": path.name, "sha256": file_digest(path), "bytes": path.stat().st_size}


def identity(config: RunConfig, bounds: tuple[int, ...]) -> dict[str, Any]:
    """What a resumed run must agree on (``IDENTITY_FIELDS`` and the partition's cut points)."""
    flat = _flatten(config.to_dict())
    picked = {
        key: value
        for key, value in flat.items()
        if any(key == name or key.startswith(name + ".") for name in IDENTITY_FIELDS)
    }
    return {**picked, "partition.bounds": list(bounds)}


def config_hash(ident: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:16]


def write_manifest(
    root: Path,
    step: int,
    shards: list[dict[str, Any]],
    ident: dict[str, Any],
    extra: dict[str, Any],
    keep: int,
) -> CheckpointSet:
    """Rank 0, after every shard is written: the manifest (which makes the set complete), a
    folder fsync, then the older sets beyond ``keep`` and stale temporary files removed."""
    folder = set_dir(root, step)
    manifest = {
        "step": step,
        "created": time.time(),
        "config_hash": config_hash(ident),
        "identity": ident,
        "world_size": len(shards),
        "shards": {str(s["rank"]): s for s in shards},
        **extra,
    }
    tmp = folder / f".{MANIFEST}.tmp"
    with tmp.open("w") as handle:
        json.dump(manifest, handle, indent=2, default=str)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, folder / MANIFEST)
    _fsync_dir(folder)
    _fsync_dir(root)
    prune(root, keep)
    return CheckpointSet(folder, manifest)


def complete_sets(root: Path) -> list[CheckpointSet]:
    """Complete sets, newest first: a readable manifest and every shard present at its size."""
    if not root.is_dir():
        return []
    found = []
    for folder in sorted(root.glob(f"{SET_PREFIX}*"), reverse=True):
        manifest = _read_manifest(folder)
        if manifest is None:
            continue
        shards = manifest.get("shards", {})
        sizes_match = all(
            (folder / s["file"]).is_file() and (folder / s["file"]).stat().st_size == s["bytes"]
            for s in shards.values()
        )
        if shards and sizes_match:
            found.append(CheckpointSet(folder, manifest))
    return found


def latest_set(root: Path) -> CheckpointSet | None:
    sets = complete_sets(root)
    return sets[0] if sets else None


def load_shard(checkpoint: CheckpointSet, rank: int) -> dict[str, Any]:
    """Rank ``rank``'s shard, its checksum checked against the manifest."""
    if str(rank) not in checkpoint.manifest["shards"]:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} has shards for ranks {sorted(checkpoint.manifest['shards'])}, "
            f"not rank {rank}: resume with the same parallel.stages × parallel.replicas"
        )
    path = checkpoint.shard_path(rank)
    expected = checkpoint.manifest["shards"][str(rank)]["sha256"]
    if file_digest(path) != expected:
        raise CheckpointError(
            f"{path} does not match the checksum in its manifest (changed or corrupt after it was "
            f"written): delete {checkpoint.path} to resume from the previous set"
        )
    state = load_checkpoint(path)
    if state.get("step") != checkpoint.step:
        raise CheckpointError(
            f"{path} holds step {state.get('step')}, its manifest step {checkpoint.step}: "
            "the set is inconsistent"
        )
    return state


def check_resumable(checkpoint: CheckpointSet, config: RunConfig, bounds: tuple[int, ...]) -> None:
    """Refuse to resume a checkpoint made by a different model, cut, method or layout."""
    ours = identity(config, bounds)
    theirs = checkpoint.manifest.get("identity", {})
    differing = sorted(key for key in set(ours) | set(theirs) if ours.get(key) != theirs.get(key))
    if differing:
        lines = "\n".join(
            f"  {key}: checkpoint {theirs.get(key)!r}, this run {ours.get(key)!r}" for key in differing
        )
        raise CheckpointError(
            f"cannot resume from {checkpoint.path}: the run differs from the checkpoint in\n{lines}\n"
            "resume with the checkpoint's settings, or start a new run (another train.run_name)"
        )


def prune(root: Path, keep: int) -> None:
    """Keep the newest ``keep`` complete sets; remove older sets, incomplete older sets and
    temporary files a killed save left behind."""
    sets = complete_sets(root)
    if not sets:
        return
    kept = {s.path for s in sets[:keep]}
    newest = sets[0].path
    for folder in root.glob(f"{SET_PREFIX}*"):
        # An incomplete set newer than the newest complete one may be a save still in progress.
        if folder not in kept and folder.name < newest.name:
            shutil.rmtree(folder, ignore_errors=True)
    for stale in root.glob(f"{SET_PREFIX}*/.*.tmp"):
        if stale.parent.name <= newest.name:
            stale.unlink(missing_ok=True)


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and "step" in manifest else None


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
