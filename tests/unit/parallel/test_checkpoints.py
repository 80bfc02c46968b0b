"""Checkpoint sets on disk: complete only with a manifest, checksums checked, pruning keeps the
newest complete sets, and a resume that does not fit names the differing fields."""

from __future__ import annotations

import json

import pytest
import torch

from layerpar.config import load_config, replace
from layerpar.errors import CheckpointError
from layerpar.parallel.checkpoints import (
    check_resumable,
    complete_sets,
    identity,
    latest_set,
    load_shard,
    set_dir,
    write_manifest,
    write_shard,
)

CONFIG = load_config(None, ["layerpar.method=al", "parallel.stages=2"])
BOUNDS = (0, 5, 11)


def _save(root, step, ranks=(0, 1), keep=2, manifest=True):
    shards = [write_shard(root, step, r, {"step": step, "w": torch.full((3,), float(r))}) for r in ranks]
    if manifest:
        write_manifest(root, step, shards, identity(CONFIG, BOUNDS), {"train_time_s": 1.0}, keep=keep)
    return shards


def test_a_set_is_complete_only_with_its_manifest(tmp_path):
    _save(tmp_path, 10)
    _save(tmp_path, 20, manifest=False)  # a save killed before its manifest
    assert [s.step for s in complete_sets(tmp_path)] == [10]
    state = load_shard(latest_set(tmp_path), 1)
    assert state["step"] == 10 and torch.equal(state["w"], torch.ones(3))


def test_a_set_missing_a_shard_is_not_complete(tmp_path):
    _save(tmp_path, 10)
    _save(tmp_path, 20)
    (set_dir(tmp_path, 20) / "rank1.pt").unlink()
    assert latest_set(tmp_path).step == 10


def test_pruning_keeps_the_newest_complete_sets_and_removes_leftovers(tmp_path):
    _save(tmp_path, 10)
    _save(tmp_path, 15, manifest=False)
    (set_dir(tmp_path, 10) / ".rank0.pt.abc.tmp").write_bytes(b"half")
    _save(tmp_path, 20)
    _save(tmp_path, 30)
    assert [s.step for s in complete_sets(tmp_path)] == [30, 20]
    assert not set_dir(tmp_path, 10).exists() and not set_dir(tmp_path, 15).exists()


def test_a_changed_shard_fails_its_checksum(tmp_path):
    _save(tmp_path, 10)
    path = set_dir(tmp_path, 10) / "rank0.pt"
    data = bytearray(path.read_bytes())
    data[-50] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match the checksum"):
        load_shard(latest_set(tmp_path), 0)


def test_a_shard_of_another_step_is_refused(tmp_path):
    shards = [write_shard(tmp_path, 10, 0, {"step": 7})]
    write_manifest(tmp_path, 10, shards, identity(CONFIG, BOUNDS), {}, keep=2)
    with pytest.raises(CheckpointError, match="holds step 7"):
        load_shard(latest_set(tmp_path), 0)


def test_the_manifest_records_what_a_resume_must_match(tmp_path):
    _save(tmp_path, 10)
    manifest = json.loads((set_dir(tmp_path, 10) / "manifest.json").read_text())
    assert manifest["identity"]["layerpar.method"] == "al"
    assert manifest["identity"]["partition.bounds"] == list(BOUNDS)
    assert manifest["shards"]["1"]["bytes"] > 0 and len(manifest["shards"]["1"]["sha256"]) == 64
    check_resumable(latest_set(tmp_path), replace(CONFIG, optim={"lr": 0.01}, train={"epochs": 9}), BOUNDS)
    other = replace(CONFIG, layerpar={"method": "penalty"}, parallel={"stages": 3})
    with pytest.raises(CheckpointError) as caught:
        check_resumable(latest_set(tmp_path), other, (0, 3, 7, 11))
    message = str(caught.value)
    for field in ("layerpar.method: checkpoint 'al', this run 'penalty'", "parallel.stages: checkpoint 2",
                  "partition.bounds"):
        assert field in message
