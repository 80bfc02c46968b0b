"""Communication behind one small interface, so the same stage code runs in one process
(``LocalComm``: the numerical reference) or in K processes (``TorchDistComm``).

Operations are asynchronous where the algorithm needs it: ``isend`` and ``all_reduce`` return a
handle whose ``wait()`` completes them.  ``LocalComm`` works when a single thread drives every
rank phase by phase: a send is buffered in a shared mailbox, and an all-reduce completes when the
last member of its group has contributed (members are summed in rank order).
"""

from __future__ import annotations

import gc
import os
import pickle
from collections import defaultdict, deque
from collections.abc import Sequence
from datetime import timedelta
from typing import Any, Protocol

import torch
import torch.distributed as dist

from layerpar.errors import LaunchError


class Handle(Protocol):
    def wait(self) -> Any: ...


class _Done:
    def wait(self) -> None:
        return None


class Comm(Protocol):
    """What a stage worker needs from the transport."""

    rank: int
    world_size: int

    def isend(self, tensor: torch.Tensor, dst: int) -> Handle: ...

    def recv(
        self, shape: Sequence[int], src: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor: ...

    def all_reduce(self, tensor: torch.Tensor, group: tuple[int, ...]) -> Handle: ...

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None: ...

    def broadcast_object(self, obj: Any, src: int = 0) -> Any: ...

    def barrier(self) -> None: ...

    @property
    def bytes_sent(self) -> int: ...


# --------------------------------------------------------------------------------------------
# In-process


class LocalHub:
    """Shared state of the ``LocalComm`` ranks of one process."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.mailboxes: dict[tuple[int, int], deque[torch.Tensor]] = defaultdict(deque)
        self.pending: dict[tuple[int, ...], dict[int, torch.Tensor]] = {}
        self.objects: dict[str, dict[int, Any]] = defaultdict(dict)

    def comms(self) -> list[LocalComm]:
        return [LocalComm(self, rank) for rank in range(self.world_size)]


class _LocalAllReduce:
    def __init__(self, hub: LocalHub, group: tuple[int, ...], rank: int, tensor: torch.Tensor) -> None:
        self.hub, self.group, self.rank, self.tensor = hub, group, rank, tensor

    def wait(self) -> None:
        contributions = self.hub.pending.get(self.group, {})
        if len(contributions) < len(self.group):
            missing = sorted(set(self.group) - set(contributions))
            raise RuntimeError(
                f"LocalComm all_reduce waited before ranks {missing} contributed: drive every "
                "rank's start phase before any rank's wait"
            )
        total = contributions[self.group[0]].clone()
        for member in self.group[1:]:
            total += contributions[member]
        self.tensor.copy_(total)
        # Per group: all-reduces of different groups may be in flight together (a denoiser's
        # embedder over all ranks, a module's replicas over its own).
        done = self.hub.objects[f"allreduce_done{self.group}"]
        done[self.rank] = True
        if all(done.get(m) for m in self.group):
            del self.hub.pending[self.group]
            for member in self.group:
                done.pop(member)


class LocalComm:
    """One rank of an in-process group (see the module docstring)."""

    def __init__(self, hub: LocalHub, rank: int) -> None:
        self.hub = hub
        self.rank = rank
        self.world_size = hub.world_size
        self._bytes_sent = 0

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent

    def isend(self, tensor: torch.Tensor, dst: int) -> Handle:
        self.hub.mailboxes[(self.rank, dst)].append(tensor.detach().clone())
        self._bytes_sent += tensor.numel() * tensor.element_size()
        return _Done()

    def recv(self, shape: Sequence[int], src: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        box = self.hub.mailboxes[(src, self.rank)]
        if not box:
            raise RuntimeError(f"LocalComm rank {self.rank}: nothing sent yet from rank {src}")
        tensor = box.popleft()
        if tuple(tensor.shape) != tuple(shape):
            raise RuntimeError(
                f"rank {self.rank} expected {tuple(shape)} from {src}, got {tuple(tensor.shape)}"
            )
        return tensor.to(device=device, dtype=dtype)

    def all_reduce(self, tensor: torch.Tensor, group: tuple[int, ...]) -> Handle:
        if len(group) == 1:
            return _Done()
        self.hub.pending.setdefault(group, {})[self.rank] = tensor.detach().clone()
        # A ring all-reduce sends about 2(n−1)/n of the tensor per rank.
        self._bytes_sent += int(2 * (len(group) - 1) / len(group) * tensor.numel() * tensor.element_size())
        return _LocalAllReduce(self.hub, group, self.rank, tensor)

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        # Only meaningful once every rank has called it; the in-process trainer gathers itself.
        return [obj] if self.world_size == 1 else None

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        return obj

    def barrier(self) -> None:
        return None


# --------------------------------------------------------------------------------------------
# torch.distributed


class TorchDistComm:
    """A rank of a torch.distributed process group (gloo on CPU, NCCL on GPU).

    Sub-groups used for all-reduces are created once, collectively, by ``create_groups``.
    """

    def __init__(self, groups: Sequence[tuple[int, ...]] = ()) -> None:
        if not dist.is_initialized():
            raise LaunchError(
                "TorchDistComm needs an initialised process group: call init_process_group first"
            )
        self.rank = dist.get_rank()
        self.world_size = dist.get_world_size()
        self._groups: dict[tuple[int, ...], Any] = {}
        self._bytes_sent = 0
        for group in groups:
            self._register(tuple(group))

    def _register(self, group: tuple[int, ...]) -> None:
        if group in self._groups:
            return
        whole = tuple(range(self.world_size))
        # new_group is collective over the world: every rank creates every group in one order.
        self._groups[group] = None if group == whole else dist.new_group(list(group))

    @property
    def bytes_sent(self) -> int:
        return self._bytes_sent

    def isend(self, tensor: torch.Tensor, dst: int) -> Handle:
        tensor = tensor.detach().contiguous()
        self._bytes_sent += tensor.numel() * tensor.element_size()
        work = dist.isend(tensor, dst)
        return _KeepAlive(work, tensor)

    def recv(self, shape: Sequence[int], src: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        tensor = torch.empty(tuple(shape), dtype=dtype, device=device)
        dist.recv(tensor, src)
        return tensor

    def all_reduce(self, tensor: torch.Tensor, group: tuple[int, ...]) -> Handle:
        if len(group) == 1:
            return _Done()
        if group not in self._groups:
            raise LaunchError(f"all_reduce over {group}: group was not created at start-up")
        self._bytes_sent += int(2 * (len(group) - 1) / len(group) * tensor.numel() * tensor.element_size())
        work = dist.all_reduce(tensor, group=self._groups[group], async_op=True)
        assert work is not None
        return work

    def gather_object(self, obj: Any, dst: int = 0) -> list[Any] | None:
        out: list[Any] | None = [None] * self.world_size if self.rank == dst else None
        dist.gather_object(obj, out, dst=dst)
        self._bytes_sent += len(pickle.dumps(obj))
        return out

    def broadcast_object(self, obj: Any, src: int = 0) -> Any:
        box = [obj]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def barrier(self) -> None:
        dist.barrier()


class _KeepAlive:
    """Holds the sent tensor until the send completes."""

    def __init__(self, work: Any, tensor: torch.Tensor) -> None:
        self.work, self.tensor = work, tensor

    def wait(self) -> None:
        self.work.wait()


def init_process_group(backend: str, timeout_s: float) -> None:
    """Join the group described by MASTER_ADDR/MASTER_PORT/RANK/WORLD_SIZE (``env://``); for a
    loopback MASTER_ADDR rank 0's store listens on loopback only (``parallel.loopback``)."""
    from layerpar.parallel.loopback import loopback_rendezvous

    timeout = timedelta(seconds=timeout_s)
    rendezvous = loopback_rendezvous(timeout) or _elastic_rendezvous(timeout) or {"init_method": "env://"}
    dist.init_process_group(backend=backend, timeout=timeout, **rendezvous)


def _elastic_rendezvous(timeout: timedelta) -> dict[str, Any] | None:
    """Under torchrun after a restart: the agent's store, with keys of this attempt only.

    ``env://`` reuses the agent's store unprefixed.  Observed under torch 2.13 (2 of 3 restarts):
    the restarted rank 0 dialled a gloo port nobody listened on ("Connection refused"), as if
    it had read the dead attempt's addresses; with keys prefixed by the attempt, none did."""
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT")
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True) or not attempt or attempt == "0":
        return None
    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout
    )
    return {
        "store": dist.PrefixStore(f"layerpar/attempt_{attempt}/default_pg", store),
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
    }


def close_process_group() -> None:
    """Barrier, destroy, collect: after this no gloo thread of this process is left running.

    ``destroy_process_group`` only forgets the groups; a group's threads stop when the last
    reference to it goes, and a sub-group or a work handle held in a reference cycle (workers,
    links and comms point at each other) would live until the interpreter's final collection.
    A gloo thread that then frees a tensor needs the GIL of a finalising interpreter and aborts
    the process ("terminate called without an active exception", seen under mpirun)."""
    if dist.is_initialized():
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
            gc.collect()
