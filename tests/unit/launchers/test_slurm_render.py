"""The sbatch script for cluster_configs/slurm_gpu.yaml, compared with a stored reference.

Regenerate the reference after an intended change:

    LAYERPAR_REGEN_REFERENCE=1 .venv/bin/python -m pytest tests/unit/launchers/test_slurm_render.py
"""

from __future__ import annotations

import dataclasses
import difflib
import os
from pathlib import Path

import pytest

from layerpar.config import load_config
from layerpar.errors import LaunchError
from layerpar.launchers.cluster import load_cluster_config
from layerpar.launchers.slurm import render_sbatch, submit

ROOT = Path(__file__).resolve().parents[3]
REFERENCE = ROOT / "tests" / "integration" / "data" / "slurm_gpu.sbatch"
TRAIN_ARGV = ["train", "--config", "configs/fmnist_resnet20.yaml", "--set", "parallel.stages=8"]


def gpu_config():
    return load_config(ROOT / "configs" / "fmnist_resnet20.yaml",
                       ["parallel.stages=8", "train.out_dir=/scratch/layerpar/runs", "train.run_name=fmnist-k8"])


def test_slurm_gpu_script_matches_reference() -> None:
    script = render_sbatch(gpu_config(), load_cluster_config(ROOT / "cluster_configs" / "slurm_gpu.yaml"),
                           TRAIN_ARGV, Path("/scratch/layerpar/runs/fmnist-k8"))
    if os.environ.get("LAYERPAR_REGEN_REFERENCE") == "1":
        REFERENCE.parent.mkdir(parents=True, exist_ok=True)
        REFERENCE.write_text(script)
    expected = REFERENCE.read_text()
    if script != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(keepends=True), script.splitlines(keepends=True),
                                            fromfile=str(REFERENCE), tofile="render_sbatch(...)"))
        pytest.fail(f"the rendered sbatch script differs from the reference (LAYERPAR_REGEN_REFERENCE=1 "
                    f"rewrites it if the change is intended):\n{diff}")


def test_script_sets_the_contract_per_task() -> None:
    script = render_sbatch(gpu_config(), load_cluster_config(ROOT / "cluster_configs" / "slurm_gpu.yaml"),
                           TRAIN_ARGV, Path("/runs/x"), resume=True)
    assert "RANK=$SLURM_PROCID WORLD_SIZE=$SLURM_NTASKS LOCAL_RANK=$SLURM_LOCALID" in script
    assert 'scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1' in script
    assert "#SBATCH --gpus-per-node=4" in script and "#SBATCH --ntasks-per-node=4" in script
    assert "--config /runs/x/config.yaml --resume &\n" in script
    # Before the time limit Slurm signals the batch shell; the job checkpoints and requeues itself.
    assert "#SBATCH --signal=B:USR1@180" in script and "#SBATCH --requeue" in script
    assert "trap '" in script and 'scontrol requeue "$SLURM_JOB_ID"' in script
    assert script.rstrip().endswith("exit $CODE")


def test_the_requeue_can_be_switched_off() -> None:
    cluster = load_cluster_config(ROOT / "cluster_configs" / "slurm_gpu.yaml")
    cluster = dataclasses.replace(cluster, slurm=dataclasses.replace(cluster.slurm, signal_before_s=0))
    script = render_sbatch(gpu_config(), cluster, TRAIN_ARGV, Path("/runs/x"))
    assert "--signal" not in script and "requeue" not in script
    assert script.rstrip().endswith("--config /runs/x/config.yaml")


def test_cpu_script_has_no_gpu_line_and_derives_the_port() -> None:
    config = load_config(None, ["parallel.stages=2", "train.run_name=cpu run"])
    script = render_sbatch(config, load_cluster_config(ROOT / "cluster_configs" / "slurm_cpu.yaml"), ["train"],
                           Path("/runs/cpu run"))
    assert "--gpus-per-node" not in script and "--partition" not in script
    assert "MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))" in script
    assert "#SBATCH --job-name=layerpar-cpu_run" in script
    assert "--config '/runs/cpu run/config.yaml'" in script
    assert "#SBATCH --output=/runs/cpu run/slurm_logs/%x-%j.out" in script


def test_workers_that_do_not_fit_are_refused() -> None:
    cluster = load_cluster_config(ROOT / "cluster_configs" / "slurm_gpu.yaml")
    with pytest.raises(LaunchError, match="do not fit"):
        render_sbatch(load_config(None, ["parallel.stages=12"]), cluster, ["train"], Path("/r"))
    with pytest.raises(LaunchError, match="gpus_per_node"):
        render_sbatch(load_config(None, ["parallel.stages=8"]), dataclasses.replace(cluster, workers_per_node=8),
                      ["train"], Path("/r"))


def test_submit_dry_run_prints_the_script_and_writes_nothing(tmp_path: Path, capsys) -> None:
    config = load_config(None, [f"train.out_dir={tmp_path}", "train.run_name=dry"])
    assert submit(config, load_cluster_config(ROOT / "cluster_configs" / "slurm_cpu.yaml"), ["train"], dry_run=True) is None
    out = capsys.readouterr().out
    assert out.startswith("#!/bin/bash") and "srun --kill-on-bad-exit=1 --ntasks=2" in out
    assert not (tmp_path / "dry").exists()


def test_submit_without_sbatch_says_what_to_do(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no sbatch here
    config = load_config(None, [f"train.out_dir={tmp_path}", "train.run_name=nosbatch"])
    with pytest.raises(LaunchError, match="sbatch not found"):
        submit(config, load_cluster_config(ROOT / "cluster_configs" / "slurm_cpu.yaml"), ["train"])


def test_submit_needs_a_slurm_cluster_config(tmp_path: Path) -> None:
    config = load_config(None, [f"train.out_dir={tmp_path}"])
    with pytest.raises(LaunchError, match="launcher: slurm"):
        submit(config, load_cluster_config(ROOT / "cluster_configs" / "local_cpu.yaml"), ["train"], dry_run=True)
