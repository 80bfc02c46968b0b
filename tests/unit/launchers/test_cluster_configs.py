"""Every shipped cluster config loads; unknown keys fail and list the valid ones."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from layerpar.errors import ConfigError
from layerpar.launchers.cluster import ClusterConfig, load_cluster_config
from layerpar.launchers.mpi import mpirun_command

ROOT = Path(__file__).resolve().parents[3]
CLUSTER_CONFIGS = sorted((ROOT / "cluster_configs").glob("*.yaml"))


def test_the_expected_configs_are_shipped() -> None:
    names = {path.stem for path in CLUSTER_CONFIGS}
    assert {"local_cpu", "local_gpu", "torchrun", "ray_local", "ray_cluster", "slurm_cpu", "slurm_gpu", "mpi"} <= names


@pytest.mark.parametrize("path", CLUSTER_CONFIGS, ids=lambda p: p.name)
def test_every_cluster_config_loads(path: Path) -> None:
    cluster = load_cluster_config(path)
    assert isinstance(cluster, ClusterConfig)
    assert cluster.launcher != "inprocess"
    assert path.read_text().lstrip().startswith("#"), "every cluster config starts with a comment"


def test_unknown_key_lists_the_valid_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("launcher: slurm\nnode: 2\n")
    with pytest.raises(ConfigError) as caught:
        load_cluster_config(bad)
    message = str(caught.value)
    assert "node" in message and "nodes" in message and "workers_per_node" in message


def test_unknown_section_key_lists_the_section_keys(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("launcher: slurm\nslurm:\n  partitoin: gpu\n")
    with pytest.raises(ConfigError) as caught:
        load_cluster_config(bad)
    assert "partitoin" in str(caught.value) and "partition" in str(caught.value) and "extra_sbatch" in str(caught.value)


def test_mpirun_command_allows_root_only_as_root() -> None:
    if not any((Path(p) / "mpirun").exists() for p in os.environ.get("PATH", "").split(os.pathsep)):
        pytest.skip("mpirun not installed")
    command = mpirun_command(load_cluster_config(ROOT / "cluster_configs" / "mpi.yaml"), 3, "/r/config.yaml", True)
    assert ("--allow-run-as-root" in command) == (os.geteuid() == 0)
    assert command[command.index("-np") + 1] == "3" and "--oversubscribe" in command
    assert command[-6:] == [sys.executable, "-m", "layerpar.launchers.mpi_entry", "--config", "/r/config.yaml", "--resume"][-6:]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("launcher: local\nnodes: 0\n", "nodes must be >= 1, got 0"),
        ("launcher: local\ntimeout_min: -1\n", "timeout_min must be a number > 0"),
        ("launcher: local\nmaster_port: 70000\n", "master_port must be in 1..65535"),
    ],
)
def test_bad_cluster_values_name_the_rule(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_cluster_config(path)


def test_a_missing_cluster_file_points_at_cluster_configs(tmp_path):
    with pytest.raises(ConfigError, match="presets live in cluster_configs/"):
        load_cluster_config(tmp_path / "missing.yaml")
