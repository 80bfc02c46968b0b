"""Evaluation always runs the main network serially (the AuxNet is dropped).

BatchNorm statistics were gathered on AuxNet-made inputs during layer-parallel steps, so they
are re-estimated first with a few serial forward passes in train mode (no gradients).  The chain
functions take the modules of one replica and pass activations forward through ``comm`` when the
modules live in different processes (``module`` is this process's one) or call them in turn when
they are all here.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from layerpar.data import ArrayDataset
from layerpar.parallel.stage import StageWorker


def batches(images: torch.Tensor, labels: torch.Tensor, size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    for start in range(0, len(labels), size):
        yield images[start : start + size], labels[start : start + size]


def _bn_layers(modules: Sequence[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BNReestimation:
    """Context: reset BN statistics and average them over the passes made inside (momentum=None)."""

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.layers = _bn_layers(modules)
        self.modules = modules

    def __enter__(self) -> BNReestimation:
        self.momenta = [layer.momentum for layer in self.layers]
        for layer in self.layers:
            layer.reset_running_stats()
            layer.momentum = None
        for module in self.modules:
            module.train()
        return self

    def __exit__(self, *exc: object) -> None:
        for layer, momentum in zip(self.layers, self.momenta):
            layer.momentum = momentum


@torch.no_grad()
def evaluate_serial(
    stages: Sequence[nn.Module],
    test: ArrayDataset,
    bn_images: torch.Tensor | None,
    *,
    batch_size: int = 500,
    device: torch.device,
    dtype: torch.dtype,
) -> float:
    """Test accuracy of ``stages`` composed in one process (BN re-estimated on ``bn_images``)."""
    if bn_images is not None and len(bn_images) > 0 and _bn_layers(stages):
        with BNReestimation(stages):
            for start in range(0, len(bn_images), batch_size):
                x = bn_images[start : start + batch_size].to(device, dtype)
                for stage in stages:
                    x = stage(x)
    for stage in stages:
        stage.eval()
    correct = 0
    for x, y in batches(test.images, test.labels, batch_size):
        x = x.to(device, dtype)
        for stage in stages:
            x = stage(x)
        correct += int((x.argmax(1).cpu() == y).sum())
    for stage in stages:
        stage.train()
    return correct / len(test.labels)


@torch.no_grad()
def _chain_forward(worker: StageWorker, x: torch.Tensor) -> torch.Tensor | None:
    """Pass one batch through the modules of replica 0, one process each; the last returns logits."""
    if worker.is_first:
        u = x.to(worker.device, worker.dtype)
    else:
        shape = (x.shape[0], *worker.boundary_shapes[worker.stage - 1])
        u = worker.comm.recv(shape, worker.prev_rank, worker.dtype, worker.device)
    h = worker.module(u)
    if worker.is_last:
        return h
    worker.comm.isend(h, worker.next_rank).wait()
    return None


def evaluate_chain(
    worker: StageWorker,
    test: ArrayDataset,
    bn_images: torch.Tensor | None,
    *,
    batch_size: int = 500,
) -> float:
    """Test accuracy with the modules in different processes (activations passed forward).

    Every rank calls this; replica 0 does the work and the last stage's accuracy is broadcast.
    """
    acc = 0.0
    if worker.replica == 0:
        if bn_images is not None and len(bn_images) > 0 and _bn_layers([worker.module]):
            with BNReestimation([worker.module]):
                for start in range(0, len(bn_images), batch_size):
                    _chain_forward(worker, bn_images[start : start + batch_size])
        worker.module.eval()
        correct = 0
        for x, y in batches(test.images, test.labels, batch_size):
            logits = _chain_forward(worker, x)
            if logits is not None:
                correct += int((logits.argmax(1).cpu() == y).sum())
        worker.module.train()
        acc = correct / len(test.labels)
    source = worker.layout.rank(worker.layout.stages - 1, 0)
    return float(worker.comm.broadcast_object(acc if worker.comm.rank == source else None, src=source))

