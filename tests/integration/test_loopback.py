"""A run on one machine listens on loopback only (layerpar.parallel.loopback).

* a real 2-rank gloo group joined through ``parallel.comm.init_process_group`` with
  MASTER_ADDR=127.0.0.1: rank 0's TCPStore port and every other socket the two ranks listen on
  are on 127.0.0.1 (without the fix the store listened on ``*:PORT``);
* a real local Ray started by the Ray launcher's ``_connect``: no process of that Ray (driver,
  GCS, raylet, agents, workers) listens on a non-loopback address (without the fix: ``[::]`` and
  the machine's address), and its servers run with token authentication.

Listening sockets are read from /proc/net/tcp{,6} and matched to processes through
/proc/PID/fd, so no ``ss``/``netstat`` is needed (Linux only; skipped elsewhere).
"""

from __future__ import annotations

import ipaddress
import os
import select
import socket
import struct
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from layerpar.parallel import loopback
from tests.helpers.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
LISTEN = "0A"

needs_proc_net = pytest.mark.skipif(
    not PROC_NET[0].exists(), reason="needs Linux /proc/net/tcp to see which address a port listens on"
)


def _address(hex_addr: str) -> str:
    """/proc/net/tcp's hex address (32-bit words in host byte order) as text."""
    words = [int(hex_addr[i : i + 8], 16) for i in range(0, len(hex_addr), 8)]
    packed = b"".join(struct.pack("=I", word) for word in words)
    return socket.inet_ntop(socket.AF_INET if len(packed) == 4 else socket.AF_INET6, packed)


def listening(pids: set[int]) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every TCP socket in LISTEN state that one of ``pids`` holds."""
    owner: dict[str, int] = {}
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:  # exited meanwhile
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                owner[target[len("socket:[") : -1]] = pid
    found = []
    for table in PROC_NET:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == LISTEN and inode in owner:
                hex_addr, hex_port = local.split(":")
                found.append((_address(hex_addr), int(hex_port, 16), owner[inode]))
    return found


def on_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


# ------------------------------------------------------------------------------------------
# The helpers alone


@pytest.mark.parametrize(
    ("addr", "expected"),
    [("127.0.0.1", True), ("localhost", True), ("LOCALHOST", True), ("127.0.1.1", True),
     ("::1", True), ("[::1]", True), ("10.0.0.5", False), ("0.0.0.0", False), ("node-3", False),
     ("", False), (None, False)],
)  # fmt: skip
def test_is_loopback(addr: str | None, expected: bool) -> None:
    assert loopback.is_loopback(addr) is expected


def test_rendezvous_keeps_env_for_other_addresses(monkeypatch) -> None:
    monkeypatch.setenv("MASTER_ADDR", "10.1.2.3")
    assert loopback.loopback_rendezvous(timedelta(seconds=5)) is None
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")  # torchrun's agent holds the store
    assert loopback.loopback_rendezvous(timedelta(seconds=5)) is None


@needs_proc_net
def test_master_store_listens_where_it_is_told() -> None:
    port = free_port()
    store = loopback._master_store("127.0.0.1", port, 1, timedelta(seconds=10), use_libuv=True)
    try:
        store.set("k", "v")
        assert store.get("k") == b"v"
        ours = [(addr, p) for addr, p, _ in listening({os.getpid()}) if p == port]
        assert ours == [("127.0.0.1", port)]
    finally:
        del store


# ------------------------------------------------------------------------------------------
# A real 2-rank gloo group

RANK_SCRIPT = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from layerpar.parallel.comm import close_process_group, init_process_group
    init_process_group("gloo", 60)
    t = torch.ones(1)
    dist.all_reduce(t)
    assert t.item() == 2.0, t
    print("up", flush=True)
    sys.stdin.readline()
    close_process_group()
    """
)


def _read_line(proc: subprocess.Popen, deadline: float) -> str:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], max(0.0, deadline - time.monotonic()))
    return proc.stdout.readline() if ready else ""


@needs_proc_net
@pytest.mark.timeout(90)
def test_gloo_group_store_and_pairs_listen_on_loopback_only() -> None:
    port = free_port()
    procs = []
    for rank in range(2):
        env = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                   WORLD_SIZE="2", LOCAL_RANK=str(rank), GLOO_SOCKET_IFNAME="lo",
                   OMP_NUM_THREADS="1")  # fmt: skip
        procs.append(subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT], cwd=ROOT, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        ))  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        for rank, proc in enumerate(procs):
            line = _read_line(proc, deadline)
            assert line.strip() == "up", f"rank {rank} did not join the group: {line!r}"
        sockets = listening({proc.pid for proc in procs})
        store = [(addr, p) for addr, p, pid in sockets if p == port]
        assert store == [("127.0.0.1", port)], f"rank 0's store: {store} (all: {sockets})"
        assert all(on_loopback(addr) for addr, _, _ in sockets), f"non-loopback listener: {sockets}"
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("\n")
            proc.stdin.flush()
        for rank, proc in enumerate(procs):
            _, err = proc.communicate(timeout=30)
            assert proc.returncode == 0, f"rank {rank} exited {proc.returncode}:\n{err[-3000:]}"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


# ------------------------------------------------------------------------------------------
# A real local Ray


@needs_proc_net
@pytest.mark.ray
@pytest.mark.timeout(120)
def test_local_ray_listens_on_loopback_only(monkeypatch) -> None:
    ray = pytest.importorskip("ray")
    from layerpar.launchers import load_cluster_config
    from layerpar.launchers.ray_actors import _connect

    if ray.is_initialized():
        pytest.skip("a Ray another test started is running; this test must start its own")
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # the default applies (and is undone)
    monkeypatch.delenv(loopback.RAY_LOCAL_ONLY_ENV, raising=False)
    cluster = load_cluster_config(ROOT / "cluster_configs" / "ray_local.yaml")
    assert _connect(ray, cluster, 1) is True
    try:
        # A task starts a worker process (it listens too) before the sockets are read.
        assert ray.get(ray.remote(_one).remote(), timeout=60) == 1
        pids = {os.getpid()} | {int(p) for p in _descendants(os.getpid())}
        sockets = listening(pids)
        assert len({pid for _, _, pid in sockets}) >= 3, f"too few Ray listeners seen: {sockets}"
        exposed = [(addr, p, pid, _cmd(pid)) for addr, p, pid in sockets if not on_loopback(addr)]
        assert not exposed, f"Ray listens beyond loopback: {exposed}"
        assert ray.util.get_node_ip_address() == "127.0.0.1"
        gcs = [pid for pid in pids if "gcs_server" in _cmd(pid)]
        assert gcs, "no gcs_server among the driver's descendants"
        assert _environ(gcs[0]).get("RAY_AUTH_MODE") == "token", "the GCS runs without token auth"
    finally:
        ray.shutdown()
    assert loopback.RAY_LOCAL_ONLY_ENV not in os.environ, "the local-only switch was not put back"


def _one() -> int:
    return 1


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    return dict(item.split("=", 1) for item in raw.decode(errors="replace").split("\0") if "=" in item)
