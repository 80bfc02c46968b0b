"""Entry point of every MPI rank: learn rank and rendezvous from MPI, then run the worker."""

from __future__ import annotations

import os
import socket


def export_env_from_mpi() -> None:
    try:
        from mpi4py import MPI
    except ImportError as error:
        from layerpar.errors import LaunchError

        raise LaunchError("mpi4py is missing: pip install layerpar[mpi]") from error
    world = MPI.COMM_WORLD
    local = world.Split_type(MPI.COMM_TYPE_SHARED)
    if world.Get_rank() == 0:
        from layerpar.launchers.env import free_port

        host = socket.gethostname()
        address = "127.0.0.1" if world.Get_size() == local.Get_size() else socket.gethostbyname(host)
        rendezvous = (address, free_port())
    else:
        rendezvous = None
    address, port = world.bcast(rendezvous, root=0)
    from layerpar.launchers.env import contract

    os.environ.update(contract(address, port, world.Get_rank(), world.Get_size(), local.Get_rank()))


def main() -> None:
    export_env_from_mpi()
    from layerpar.parallel.worker import main as worker_main

    worker_main()


if __name__ == "__main__":
    main()
