"""Where to run: the cluster config (``cluster_configs/*.yaml``).

Shared keys at the top; launcher-specific keys under ``slurm:``, ``ray:``, ``mpi:`` or
``torchrun:``.  Unknown keys fail and list the valid ones (same loader as run configs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from layerpar.config import from_dict, load_yaml
from layerpar.errors import ConfigError

LauncherName = Literal["inprocess", "local", "torchrun", "ray", "slurm", "mpi"]


@dataclass(frozen=True, kw_only=True, slots=True)
class SlurmSection:
    partition: str | None = None
    account: str | None = None
    time: str = "01:00:00"
    """Wall-clock limit (sbatch --time)."""
    cpus_per_task: int = 1
    mem: str | None = None
    """Memory per node (sbatch --mem), e.g. 16G."""
    log_dir: str = "slurm_logs"
    """Where sbatch writes %x-%j.out."""
    python: str = "python"
    """Python interpreter on the compute nodes."""
    setup: list[str] = field(default_factory=list)
    """Shell lines run before srun (module load, source venv/bin/activate, ...)."""
    extra_sbatch: list[str] = field(default_factory=list)
    """Extra #SBATCH options, e.g. --constraint=a100."""
    srun_args: list[str] = field(default_factory=list)
    signal_before_s: int = 180
    """Slurm signals the job this long before its time limit (sbatch --signal=B:USR1@N); the
    run then checkpoints at the next batch and the job requeues itself, resuming from that
    checkpoint (0: off).  Slurm may signal up to a minute early."""


@dataclass(frozen=True, kw_only=True, slots=True)
class RaySection:
    address: str | None = None
    """None: start a local Ray; "auto" or "ray://host:10001": join an existing cluster."""
    num_cpus: int | None = None
    """CPUs of a local Ray (None: all)."""
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "PACK"


@dataclass(frozen=True, kw_only=True, slots=True)
class MpiSection:
    mpirun: str = "mpirun"
    extra_args: list[str] = field(default_factory=list)
    """Extra mpirun arguments, e.g. [--hostfile, hosts.txt]."""
    python: str | None = None
    """Interpreter on every rank (None: this one)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class ClusterConfig:
    launcher: LauncherName = "local"
    nodes: int = 1
    workers_per_node: int | None = None
    """Workers on each node (None: stages × replicas / nodes)."""
    gpus_per_node: int = 0
    cpus_per_worker: int = 1
    timeout_min: float = 60.0
    master_port: int | None = None
    """Rendezvous port (None: a free one)."""
    max_restarts: int = 2
    """When a worker dies (killed, crashed, its node lost), restart the whole group from the
    newest complete checkpoint set up to this many times (0: fail at once).  Errors a restart
    cannot fix (bad config, NaN loss) are never retried."""
    slurm: SlurmSection = field(default_factory=SlurmSection)
    ray: RaySection = field(default_factory=RaySection)
    mpi: MpiSection = field(default_factory=MpiSection)

    def __post_init__(self) -> None:
        checks = [
            ("nodes", self.nodes >= 1, ">= 1"),
            (
                "workers_per_node",
                self.workers_per_node is None or self.workers_per_node >= 1,
                ">= 1 (or null)",
            ),
            ("gpus_per_node", self.gpus_per_node >= 0, ">= 0"),
            ("max_restarts", self.max_restarts >= 0, ">= 0"),
            ("cpus_per_worker", self.cpus_per_worker >= 1, ">= 1"),
            ("timeout_min", math.isfinite(self.timeout_min) and self.timeout_min > 0, "a number > 0"),
            (
                "master_port",
                self.master_port is None or 1 <= self.master_port <= 65535,
                "in 1..65535 (or null)",
            ),
        ]
        for name, valid, rule in checks:
            if not valid:
                raise ConfigError(f"cluster config: {name} must be {rule}, got {getattr(self, name)!r}")

    def workers_on_each_node(self, world_size: int) -> int:
        if self.workers_per_node is not None:
            return self.workers_per_node
        return -(-world_size // self.nodes)


def load_cluster_config(path: str | Path | None) -> ClusterConfig:
    """Read a cluster config; None gives the in-process default."""
    if path is None:
        return ClusterConfig(launcher="inprocess")
    return from_dict(ClusterConfig, load_yaml(path, presets="cluster_configs/"), Path(path).name)
