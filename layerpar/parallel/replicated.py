"""Parameters every module of a split model holds a replica of: a denoiser's conditioning
embedder (``models/backbone.py``).

Each module's blocks take the embedding of its own micro-batch, so each worker runs its own
replica of the embedder and backpropagates into it.  Serial backprop's gradient of the embedder
is the sum of what every module's backward sends into it, so the replicas' gradients are summed
over all ranks (and averaged over data-parallel replicas of a module) before every optimiser
step; identical gradients on identical weights keep every replica the same.
"""

from __future__ import annotations

import torch
from torch import nn

from layerpar.parallel.comm import Comm, Handle
from layerpar.parallel.flat import flat_grads, set_flat_grads


def replicated_parameters(module: nn.Module) -> list[nn.Parameter]:
    """The parameters of ``module`` that every module of the model replicates."""
    embedder = getattr(module, "embedder", None)
    return list(embedder.parameters()) if isinstance(embedder, nn.Module) else []


class ReplicatedSync:
    """The sum of the replicated parameters' gradients over every rank of a run."""

    def __init__(self, params: list[nn.Parameter], comm: Comm, group: tuple[int, ...], replicas: int) -> None:
        self.params = params
        self.comm = comm
        self.group = group
        self.replicas = replicas
        self._bucket: torch.Tensor | None = None
        self._handle: Handle | None = None

    def start(self) -> None:
        """Every rank calls this at the same optimiser steps (windows are aligned)."""
        self._bucket = flat_grads(self.params)
        self._handle = self.comm.all_reduce(self._bucket, self.group)

    def finish(self) -> None:
        if self._handle is None:
            return
        assert self._bucket is not None
        self._handle.wait()
        set_flat_grads(self.params, self._bucket / self.replicas)
        self._handle = self._bucket = None
