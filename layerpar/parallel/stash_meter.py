"""How much memory a stale method's stash holds: its weight copies and what its in-flight graphs saved.

A module of the pipelined method keeps every micro-batch it forwarded until that micro-batch's
adjoint arrives D_k = 2(K−1−k) micro-steps later: the stashed weights the forward ran on (one
copy per weight version, ``stash.VersionCopies``) and the tensors autograd saved for the
backward.  ``StashMeter`` measures both, with autograd's saved-tensor hooks (each saved storage
counted once, the weights apart), at the moment a module holds the most: just after a forward,
before the oldest micro-batch's backward frees it.  Like the phase clock it is off in training
and turned on by ``layerpar bench`` for the timed steps; the cost model predicts the same
quantity (``bench/costmodel.predict_stash``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass

import torch

from layerpar.parallel.stash import PendingForward


@dataclass(frozen=True)
class StashSize:
    """What one module's stash holds at one moment."""

    micro_batches: int = 0
    """Micro-batches in flight (forwarded, backward not yet taken)."""
    weight_versions: int = 0
    """Distinct stashed weight copies they use."""
    weight_bytes: int = 0
    activation_bytes: int = 0
    """The tensors their graphs saved (each storage once, weights apart) and their outputs."""

    @property
    def total_bytes(self) -> int:
        return self.weight_bytes + self.activation_bytes

    def to_dict(self) -> dict[str, int]:
        return {**asdict(self), "total_bytes": self.total_bytes}


class SavedBytes:
    """Bytes autograd saves inside ``count()``: each storage once (the first view of it seen:
    a micro-batch is a view of its batch, which the stash does not hold), ``exclude``'s apart."""

    def __init__(self, exclude: Iterable[torch.Tensor] = ()) -> None:
        self.bytes = 0
        self._seen = {t.untyped_storage().data_ptr() for t in exclude}

    def _pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in self._seen:
            self._seen.add(storage.data_ptr())
            self.bytes += tensor.nbytes
        return tensor

    @contextmanager
    def count(self) -> Iterator[SavedBytes]:
        with torch.autograd.graph.saved_tensors_hooks(self._pack, lambda tensor: tensor):
            yield self


class StashMeter:
    """The largest stash (by total bytes) one module held since ``start``."""

    def __init__(self) -> None:
        self.enabled = False
        self.peak = StashSize()
        self._saved: dict[int, int] = {}
        """id(output) of a micro-batch in flight -> bytes its graph saved."""

    def start(self) -> None:
        self.enabled, self.peak = True, StashSize()

    def stop(self) -> StashSize:
        self.enabled = False
        self._saved.clear()
        return self.peak

    @contextmanager
    def forward(self, weights: Iterable[torch.Tensor]) -> Iterator[SavedBytes | None]:
        """Count what the forward inside saves (nothing is counted while the meter is off)."""
        if not self.enabled:
            yield None
            return
        with SavedBytes(exclude=weights).count() as saved:
            yield saved

    def observe(
        self,
        pending: Sequence[PendingForward],
        h: torch.Tensor,
        weights: list[torch.Tensor],
        saved: SavedBytes | None,
    ) -> None:
        """The stash just after the forward of ``h`` (on ``weights``), with ``pending`` still held."""
        if saved is None:
            return
        self._saved[id(h)] = saved.bytes
        in_flight = [(p.h, p.weights) for p in pending] + [(h, weights)]
        live = {id(out) for out, _ in in_flight}
        self._saved = {key: value for key, value in self._saved.items() if key in live}
        copies = {id(ws[0]): ws for _, ws in in_flight if ws}
        size = StashSize(
            micro_batches=len(in_flight),
            weight_versions=len(copies),
            weight_bytes=sum(w.nbytes for ws in copies.values() for w in ws),
            activation_bytes=sum(self._saved.get(id(out), 0) + out.nbytes for out, _ in in_flight),
        )
        if size.total_bytes > self.peak.total_bytes:
            self.peak = size
