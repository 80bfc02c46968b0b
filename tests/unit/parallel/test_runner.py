"""Metric merging and the distributed worker's small pure helpers."""

from __future__ import annotations

import pytest
import torch

from layerpar.errors import LaunchError
from layerpar.parallel.runner import merge_metrics
from layerpar.parallel.session import merge_stage_states
from layerpar.parallel.worker import read_env


def test_merge_metrics_keeps_stage_keys_and_averages_shared_ones():
    merged = merge_metrics([{"loss": 1.0, "local_loss/0": 0.5}, {"loss": 3.0, "local_loss/1": 0.25}])
    assert merged == {"loss": 2.0, "local_loss/0": 0.5, "local_loss/1": 0.25}


def test_merge_stage_states_renumbers_blocks():
    states = [
        {"blocks.0.w": torch.tensor(0.0), "blocks.1.bn.running_mean": torch.tensor(1.0)},
        {"blocks.0.fc.weight": torch.tensor(2.0)},
    ]
    merged = merge_stage_states(states, (0, 2, 3))
    assert list(merged) == ["blocks.0.w", "blocks.1.bn.running_mean", "blocks.2.fc.weight"]
    assert float(merged["blocks.2.fc.weight"]) == 2.0


def test_read_env_names_what_is_missing(monkeypatch):
    for name in ("MASTER_ADDR", "MASTER_PORT", "RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(LaunchError, match="MASTER_ADDR.*layerpar launch"):
        read_env()
