"""What ``mpirun`` runs on every rank: learn rank and rendezvous from MPI, then run the worker.

    mpirun -np K python -m layerpar.launchers.mpi_entry --config RUN/config.yaml [--resume]

MPI only starts the ranks and agrees on the rendezvous (the torch wheel has no MPI backend):
rank 0 picks a free port and broadcasts it with its address (127.0.0.1 when every rank shares
one node, else its host name, or MASTER_ADDR when the environment sets one); each rank sets
the contract (RANK and WORLD_SIZE from COMM_WORLD, LOCAL_RANK from Open MPI or a shared-memory
communicator) and calls ``run_worker``; gloo/NCCL move the tensors.

A failing rank writes its error to ``$LAYERPAR_ERROR_DIR/rank<R>.json`` (read by the launcher)
and aborts the MPI job, so its peers do not wait for the process-group timeout.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import socket
import sys
import traceback
from pathlib import Path
from typing import Any

ERROR_DIR_ENV = "LAYERPAR_ERROR_DIR"


def rendezvous(comm: Any, master_port: int | None = None) -> dict[str, str]:
    """The environment contract of this rank, agreed over ``comm`` (an mpi4py communicator)."""
    from mpi4py import MPI

    from layerpar.launchers.env import contract, free_port

    rank, world_size = comm.Get_rank(), comm.Get_size()
    if "OMPI_COMM_WORLD_LOCAL_RANK" in os.environ:
        local_rank = int(os.environ["OMPI_COMM_WORLD_LOCAL_RANK"])
        local_size = int(os.environ.get("OMPI_COMM_WORLD_LOCAL_SIZE", world_size))
    else:
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        local_rank, local_size = local.Get_rank(), local.Get_size()
        local.Free()
    one_node = comm.allreduce(local_size, op=MPI.MIN) == world_size
    address: tuple[str, int] | None = None
    if rank == 0:
        host = "127.0.0.1" if one_node else (os.environ.get("MASTER_ADDR") or socket.gethostname())
        address = (host, master_port or free_port("127.0.0.1" if one_node else "0.0.0.0"))
    host, port = comm.bcast(address, root=0)
    return contract(host, port, rank, world_size, local_rank)


def _record_error(rank: int, message: str) -> None:
    error_dir = os.environ.get(ERROR_DIR_ENV)
    if not error_dir:
        return
    path = Path(error_dir) / f"rank{rank}.json"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rank": rank, "message": message}))
        os.replace(tmp, path)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="layerpar worker under mpirun (one rank)")
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides", metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--master-port", type=int, default=None)
    args = parser.parse_args(argv)
    try:
        from mpi4py import MPI
    except ImportError:
        print("layerpar: mpi4py is missing on this rank: pip install 'layerpar[mpi]'", file=sys.stderr)
        raise SystemExit(3) from None
    comm = MPI.COMM_WORLD
    rank = comm.Get_rank()
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s rank{rank} %(levelname)s %(name)s: %(message)s"
    )
    try:
        os.environ.update(rendezvous(comm, args.master_port))
        from layerpar.config import load_config
        from layerpar.parallel.worker import run_worker

        run_worker(load_config(args.config, args.overrides), resume=args.resume)
    except BaseException as error:  # noqa: BLE001 - every failure must reach the launcher
        from layerpar.errors import WorkerError

        if isinstance(error, WorkerError):
            message = error.message
        else:
            message = f"{type(error).__name__}: {error}\n{traceback.format_exc()}"
        _record_error(rank, message)
        print(f"layerpar: worker rank {rank} failed:\n{message}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # Abort, not exit: MPI_Finalize would wait for peers stuck in a collective.
        comm.Abort(1)


if __name__ == "__main__":
    main()
