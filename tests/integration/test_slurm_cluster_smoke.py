"""Smoke test: a real single-node Slurm cluster runs a 2-task gloo job.

``sbatch -n 2`` + ``srun python worker.py``: each task builds a gloo process
group from SLURM_PROCID / SLURM_NTASKS and all-reduces a tensor of ones; rank 0
writes the sum (2) to a file.
"""

from __future__ import annotations

import sys
import textwrap
import time

import pytest

from tests.helpers.procs import free_port
from tests.helpers.slurm_cluster import slurm_cluster_fixture

# Session-scoped fixture "slurm_cluster" (to be moved to conftest.py later).
slurm_cluster = slurm_cluster_fixture()

WORKER = textwrap.dedent(
    """
    import os
    import sys
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    rank = int(os.environ["SLURM_PROCID"])
    world = int(os.environ["SLURM_NTASKS"])
    addr = os.environ["MASTER_ADDR"]
    port = int(os.environ["MASTER_PORT"])
    out_path = sys.argv[1]

    dist.init_process_group(
        "gloo",
        init_method=f"tcp://{addr}:{port}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        t = torch.ones(1)
        dist.all_reduce(t)
        if rank == 0:
            tmp = out_path + ".tmp"
            with open(tmp, "w") as f:
                f.write(f"{int(t.item())}\\n")
            os.replace(tmp, out_path)
        print(f"rank {rank}/{world}: all_reduce -> {t.item()}", flush=True)
    finally:
        dist.barrier()
        dist.destroy_process_group()
    """
)


@pytest.mark.timeout(120)
def test_sbatch_srun_gloo_all_reduce(slurm_cluster, tmp_path):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    result = tmp_path / "result.txt"
    script = tmp_path / "job.sh"
    script.write_text(
        textwrap.dedent(
            f"""\
            #!/bin/bash
            #SBATCH --job-name=lp-gloo-smoke
            #SBATCH --ntasks=2
            #SBATCH --time=2
            #SBATCH --output={tmp_path}/job-%j.out
            set -euo pipefail
            srun --kill-on-bad-exit=1 "{sys.executable}" "{worker}" "{result}"
            """
        )
    )
    env = {
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }

    t0 = time.monotonic()
    job_id = slurm_cluster.submit(script, env=env)
    state = slurm_cluster.wait(job_id, timeout=100)
    elapsed = time.monotonic() - t0

    assert state == "COMPLETED", (
        f"job {job_id} ended {state} after {elapsed:.1f} s\n" + slurm_cluster.diagnostics(job_id)
    )
    assert result.exists(), "rank 0 wrote no result\n" + slurm_cluster.diagnostics(job_id)
    assert result.read_text().strip() == "2", slurm_cluster.diagnostics(job_id)
    print(f"slurm job {job_id}: {elapsed:.1f} s submit->COMPLETED")
