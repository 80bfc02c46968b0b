"""Smoke test: ``mpirun -np 2`` + mpi4py rendezvous + a gloo all_reduce.

Rank 0 picks a free port and broadcasts it over MPI; every rank then sets
MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE, forms a gloo group (env://) and
all-reduces a tensor of ones; rank 0 writes the sum (2) to a file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from tests.helpers.procs import run_checked, tail

WORKER = textwrap.dedent(
    """
    import os
    import socket
    import sys
    from datetime import timedelta

    from mpi4py import MPI

    import torch
    import torch.distributed as dist

    comm = MPI.COMM_WORLD
    rank, world = comm.Get_rank(), comm.Get_size()
    out_path = sys.argv[1]

    port = None
    if rank == 0:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    port = comm.bcast(port, root=0)

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
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


def _mpi_unavailable() -> str | None:
    if shutil.which("mpirun") is None:
        return "mpirun not found (apt-get install -y openmpi-bin libopenmpi-dev)"
    probe = subprocess.run(
        [sys.executable, "-c", "import mpi4py"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"mpi4py not importable by {sys.executable}: {probe.stderr.strip()[-300:]}"
    return None


@pytest.mark.timeout(120)
def test_mpirun_mpi4py_gloo_all_reduce(tmp_path):
    reason = _mpi_unavailable()
    if reason:
        pytest.skip(reason)

    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    result = tmp_path / "result.txt"
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
    }
    cmd = [
        "mpirun",
        "--allow-run-as-root",
        "--oversubscribe",
        "-np",
        "2",
        sys.executable,
        str(worker),
        str(result),
    ]

    t0 = time.monotonic()
    proc = run_checked(cmd, env=env, timeout=100, cwd=tmp_path)
    elapsed = time.monotonic() - t0

    assert result.exists(), (
        f"rank 0 wrote no result\n--- stdout ---\n{tail(proc.stdout)}\n--- stderr ---\n{tail(proc.stderr)}"
    )
    assert result.read_text().strip() == "2"
    print(f"mpirun -np 2: {elapsed:.1f} s")
