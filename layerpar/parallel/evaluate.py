"""Evaluation always runs the main network serially (the AuxNet is dropped).

It reports the test loss of the run's objective and, when the targets are class indices, the
test accuracy.

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
from layerpar.parallel.objective import Objective, is_classification
from layerpar.parallel.stage import StageWorker


def batches(
    images: torch.Tensor, labels: torch.Tensor, size: int, cond: torch.Tensor | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]]:
    """Test batches: inputs, targets and (a denoiser's held-out set) conditioning."""
    for start in range(0, len(labels), size):
        part = slice(start, start + size)
        yield images[part], labels[part], None if cond is None else cond[part]


def _call(stage: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return stage(x) if cond is None else stage(x, cond)


def _bn_layers(modules: Sequence[nn.Module]) -> list[nn.modules.batchnorm._BatchNorm]:
    return [
        m for module in modules for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]


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


class _Tally:
    """Sums over the test set: loss (weighted by batch size) and correct predictions."""

    def __init__(self, objective: Objective) -> None:
        self.objective = objective
        self.loss = 0.0
        self.correct = 0
        self.count = 0
        self.classification = True

    def add(self, output: torch.Tensor, target: torch.Tensor) -> None:
        target = target.to(output.device)
        self.loss += float(self.objective.loss(output, target)) * len(target)
        self.classification = self.classification and is_classification(output, target)
        if self.classification:
            self.correct += int((output.argmax(1) == target).sum())
        self.count += len(target)

    def result(self) -> dict[str, float]:
        out = {"test_loss": self.loss / max(self.count, 1)}
        if self.classification:
            out["test_acc"] = self.correct / max(self.count, 1)
        return out


@torch.no_grad()
def evaluate_serial(
    stages: Sequence[nn.Module],
    test: ArrayDataset,
    bn_images: torch.Tensor | None,
    objective: Objective | None = None,
    *,
    batch_size: int = 500,
    device: torch.device,
    dtype: torch.dtype,
) -> dict[str, float]:
    """Test loss (and accuracy) of ``stages`` composed in one process (BN re-estimated on
    ``bn_images``)."""
    if bn_images is not None and len(bn_images) > 0 and _bn_layers(stages):
        with BNReestimation(stages):
            for start in range(0, len(bn_images), batch_size):
                x = bn_images[start : start + batch_size].to(device, dtype)
                for stage in stages:
                    x = stage(x)
    for stage in stages:
        stage.eval()
    tally = _Tally(objective or Objective())
    for x, y, cond in batches(test.images, test.labels, batch_size, getattr(test, "cond", None)):
        x = x.to(device, dtype)
        cond = None if cond is None else cond.to(device, dtype)
        for stage in stages:
            x = _call(stage, x, cond)
        tally.add(x.to(dtype), y.to(dtype) if y.is_floating_point() else y)
    for stage in stages:
        stage.train()
    return tally.result()


@torch.no_grad()
def _chain_forward(
    worker: StageWorker, x: torch.Tensor, cond: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Pass one batch through the modules of replica 0, one process each; the last returns its output."""
    if worker.is_first:
        u = x.to(worker.device, worker.dtype)
    else:
        shape = (x.shape[0], *worker.boundary_shapes[worker.stage - 1])
        u = worker.comm.recv(shape, worker.prev_rank, worker.dtype, worker.device)
    h = _call(worker.module, u, None if cond is None else cond.to(worker.device, worker.dtype))
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
) -> dict[str, float]:
    """Test loss (and accuracy) with the modules in different processes (activations passed
    forward).  Every rank calls this; replica 0 does the work and the last stage's result is
    broadcast."""
    result: dict[str, float] = {}
    if worker.replica == 0:
        if bn_images is not None and len(bn_images) > 0 and _bn_layers([worker.module]):
            with BNReestimation([worker.module]):
                for start in range(0, len(bn_images), batch_size):
                    _chain_forward(worker, bn_images[start : start + batch_size])
        worker.module.eval()
        tally = _Tally(worker.objective)
        for x, y, cond in batches(test.images, test.labels, batch_size, getattr(test, "cond", None)):
            output = _chain_forward(worker, x, cond)
            if output is not None:
                tally.add(output, y.to(worker.dtype) if y.is_floating_point() else y)
        worker.module.train()
        result = tally.result()
    source = worker.layout.rank(worker.layout.stages - 1, 0)
    return dict(worker.comm.broadcast_object(result if worker.comm.rank == source else None, src=source))
