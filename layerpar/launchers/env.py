"""The environment contract every launcher ends in, and a free port to rendezvous on."""

from __future__ import annotations

import socket

from layerpar.errors import LaunchError


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind port 0 and read it back)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def contract(
    master_addr: str, master_port: int, rank: int, world_size: int, local_rank: int
) -> dict[str, str]:
    """MASTER_ADDR, MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK (what ``env://`` reads)."""
    if not 0 <= rank < world_size:
        raise LaunchError(f"rank {rank} outside world size {world_size}")
    env = {
        "MASTER_ADDR": master_addr,
        "MASTER_PORT": str(master_port),
        "RANK": str(rank),
        "WORLD_SIZE": str(world_size),
        "LOCAL_RANK": str(local_rank),
    }
    if master_addr in ("127.0.0.1", "localhost"):
        # gloo otherwise may pick an interface the loopback rendezvous cannot reach.
        env["GLOO_SOCKET_IFNAME"] = "lo"
    return env
