"""Loopback-only listeners for single-machine runs.

A run on one machine needs no port that another machine can reach, and every port it opens runs
code for whoever connects (the torch.distributed store hands out the group's keys; Ray's GCS and
raylet accept tasks).  So when the rendezvous address is a loopback one, the listeners are put on
loopback too:

* **torch.distributed store.**  ``TCPStore(is_master=True)`` listens on every interface whatever
  host it is given (measured: ``*:PORT`` for ``host_name="127.0.0.1"``, both TCPStore backends,
  torch 2.13).  The one way to choose its address is ``master_listen_fd``: bind the socket here and
  hand it over.  :func:`loopback_rendezvous` does that on rank 0 and is what
  ``parallel.comm.init_process_group`` uses instead of ``env://`` for a loopback ``MASTER_ADDR``.
  gloo's own pair sockets already listen on the loopback address for such a run
  (``GLOO_SOCKET_IFNAME=lo``).
* **Ray.**  ``ray.init(_node_ip_address="127.0.0.1")`` does not help (Ray swaps a loopback node
  address for the machine's routable one), and then the GCS, raylet and workers listen on
  ``[::]`` and the runtime-env agent on the machine's address.  Ray's own local-only mode
  (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows) makes the node
  address 127.0.0.1, and then every Ray server listens on loopback only.  :func:`ray_loopback_only`
  switches it on around the ``ray.init`` that starts a local Ray, and asks for Ray's token
  authentication unless ``RAY_AUTH_MODE`` says otherwise.

Multi-node runs (a routable ``MASTER_ADDR``, ``ray.init(address=...)``) are left as they were.
"""

from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import torch.distributed as dist

log = logging.getLogger(__name__)

RAY_LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch for a cluster of this machine only: "0" makes the node address the loopback one
(Ray reads it once, when ``ray`` is imported, into ``ray._private.ray_constants``)."""

RAY_AUTH_MODE_ENV = "RAY_AUTH_MODE"
"""Ray's authentication mode ("token" or "disabled"); token authentication is Ray >= 2.52."""


def is_loopback(addr: str | None) -> bool:
    """True for ``localhost`` and loopback IP addresses (127.0.0.0/8, ::1): a run on this
    machine only, whose listeners need not (so must not) be reachable from other machines."""
    if not addr:
        return False
    if addr.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(addr.strip().strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_host(addr: str) -> str:
    """The address to bind and to connect to for a loopback ``addr``: ``localhost`` becomes
    127.0.0.1, so that rank 0 and the clients agree on one address family."""
    addr = addr.strip().strip("[]")
    return "127.0.0.1" if addr.lower() == "localhost" else addr


def loopback_rendezvous(timeout: timedelta) -> dict[str, Any] | None:
    """``init_process_group`` arguments (``store``, ``rank``, ``world_size``) for a loopback
    ``MASTER_ADDR``, with rank 0's store listening on that address only; None otherwise.

    None (so the caller keeps ``env://``) also when torchelastic's agent hosts the store
    (``TORCHELASTIC_USE_AGENT_STORE=True``, set by torchrun): then no rank may start one.  The
    store is what ``env://`` would build (one TCPStore, the ``default_pg`` prefix, ``USE_LIBUV``
    honoured) apart from where rank 0 listens.
    """
    master_addr = os.environ.get("MASTER_ADDR")
    if master_addr is None or not is_loopback(master_addr):
        return None
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == str(True):
        return None
    host = loopback_host(master_addr)
    port = int(os.environ["MASTER_PORT"])
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    use_libuv = os.environ.get("USE_LIBUV", "1") == "1"
    if rank == 0:
        store = _master_store(host, port, world_size, timeout, use_libuv)
    else:
        store = dist.TCPStore(host, port, world_size, False, timeout=timeout, use_libuv=use_libuv)
    return {"store": dist.PrefixStore("default_pg", store), "rank": rank, "world_size": world_size}


def _master_store(
    host: str, port: int, world_size: int, timeout: timedelta, use_libuv: bool
) -> dist.TCPStore:
    """Rank 0's TCPStore, serving on a socket bound to ``host:port`` here.

    The store gets a duplicate of the socket (it closes what it is given); ours is closed on
    return.  torch releases whose libuv backend cannot take a listening socket (2.4 raises
    NotImplementedError) fall back to the classic backend, which always could.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((host, port))
        except OSError as error:
            raise OSError(
                error.errno, f"rank 0 cannot listen on {host}:{port} (MASTER_PORT): {error.strerror}"
            ) from error
        listener.listen(socket.SOMAXCONN)
        for libuv in (True, False) if use_libuv else (False,):
            try:
                return dist.TCPStore(
                    host,
                    port,
                    world_size,
                    True,
                    timeout=timeout,
                    master_listen_fd=os.dup(listener.fileno()),
                    use_libuv=libuv,
                )
            except NotImplementedError:
                if not libuv:
                    raise
                log.debug("libuv TCPStore cannot take a listening socket here; using the classic one")
        raise AssertionError("unreachable: the classic TCPStore returns or raises")
    finally:
        listener.close()


@contextmanager
def ray_loopback_only(ray: Any) -> Iterator[None]:
    """Around the ``ray.init`` that starts a local Ray: every Ray server on loopback only, and
    Ray's token authentication on.

    * Local-only mode (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``) for the processes Ray starts, and
      for this process the value Ray derived from it when it was imported
      (``ray._private.ray_constants.ENABLE_RAY_CLUSTER``; ``ray`` is already imported here).  Both
      are put back afterwards, so a later ``ray.init(address=...)`` in this process still finds
      its routable address.  A Ray without that constant keeps its default addresses (a warning).
    * ``RAY_AUTH_MODE=token`` when it is unset (Ray >= 2.60 does the same for a local
      ``ray.init``; 2.52-2.59 leave it off), with Ray's configuration re-read so this process
      sends the token the processes it starts will ask for: the step Ray itself takes
      (``ray._raylet.Config.initialize``).  An explicit ``RAY_AUTH_MODE`` is kept; so is
      everything when that step is missing.  It stays set, as Ray leaves it.
    """
    try:
        constants: Any = importlib.import_module("ray._private.ray_constants")
    except ImportError:
        constants = None
    patchable = constants is not None and hasattr(constants, "ENABLE_RAY_CLUSTER")
    if not patchable:
        log.warning("this Ray has no local-only switch: its servers keep Ray's default addresses")
    _ray_token_auth_default()
    saved_env = os.environ.get(RAY_LOCAL_ONLY_ENV)
    saved_constant = constants.ENABLE_RAY_CLUSTER if patchable else None
    if patchable:
        os.environ[RAY_LOCAL_ONLY_ENV] = "0"
        constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        if patchable:
            constants.ENABLE_RAY_CLUSTER = saved_constant
            if saved_env is None:
                os.environ.pop(RAY_LOCAL_ONLY_ENV, None)
            else:
                os.environ[RAY_LOCAL_ONLY_ENV] = saved_env
    if ray.is_initialized():
        node_ip = ray.util.get_node_ip_address()
        if not is_loopback(node_ip):
            log.warning("local Ray's node address is %s, not loopback: its ports may be reachable", node_ip)


def _ray_token_auth_default() -> None:
    """``RAY_AUTH_MODE=token`` unless set, and Ray's cached configuration refreshed to match
    (without the refresh this process would not send the token and ``ray.init`` would fail)."""
    if RAY_AUTH_MODE_ENV in os.environ:
        return
    try:
        config: Any = importlib.import_module("ray._raylet").Config
    except (ImportError, AttributeError):
        return
    if not hasattr(config, "initialize"):
        return
    os.environ[RAY_AUTH_MODE_ENV] = "token"
    try:
        config.initialize("")
    except Exception:  # noqa: BLE001 - without the refresh, token mode would break ray.init
        os.environ.pop(RAY_AUTH_MODE_ENV, None)
        log.warning("could not switch Ray's token authentication on; RAY_AUTH_MODE is left unset")
