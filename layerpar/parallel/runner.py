"""Drive the step programs of ``stage.py`` on the workers of this process.

``InProcessRunner`` owns every worker of a run and runs each phase on all of them before the
next (the numerical reference); ``DistributedRunner`` owns the one worker of this process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from layerpar.parallel.batches import BatchPlan
from layerpar.parallel.comm import Comm
from layerpar.parallel.stage import StageWorker

Program = Sequence[tuple[str, bool]]


def merge_metrics(per_worker: Sequence[dict[str, float]]) -> dict[str, float]:
    """Stage-specific keys are kept; keys reported by several replicas are averaged."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for metrics in per_worker:
        for key, value in metrics.items():
            sums[key] = sums.get(key, 0.0) + value
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


class InProcessRunner:
    """All K × R workers in this process, phase by phase, through ``LocalComm``."""

    is_main = True

    def __init__(self, workers: Sequence[StageWorker], plan: BatchPlan) -> None:
        self.workers = sorted(workers, key=lambda w: (w.stage, w.replica))
        self.plan = plan

    @property
    def step(self) -> int:
        return self.workers[0].step

    def begin(self, step: int, beta: float, final_parallel: bool = False) -> None:
        replicas = self.workers[0].layout.replicas
        for worker in self.workers:
            x, y = self.plan.batch(step, worker.replica, replicas)
            worker.begin(x, y, beta, final_parallel)

    def run(self, program: Program) -> None:
        for phase, reverse in program:
            for worker in reversed(self.workers) if reverse else self.workers:
                getattr(worker, phase)()

    def take_metrics(self) -> dict[str, float]:
        return merge_metrics([w.take_metrics() for w in self.workers])

    def gather(self, records: list[dict[str, float]]) -> list[dict[str, float]] | None:
        return records

    def bytes_sent(self) -> int:
        return sum(w.comm.bytes_sent for w in self.workers)


class DistributedRunner:
    """The one worker of this process; other ranks run the same program at the same time."""

    def __init__(self, worker: StageWorker, plan: BatchPlan, comm: Comm) -> None:
        self.worker = worker
        self.workers = [worker]
        self.plan = plan
        self.comm = comm
        self.is_main = comm.rank == 0

    @property
    def step(self) -> int:
        return self.worker.step

    def begin(self, step: int, beta: float, final_parallel: bool = False) -> None:
        x, y = self.plan.batch(step, self.worker.replica, self.worker.layout.replicas)
        self.worker.begin(x, y, beta, final_parallel)

    def run(self, program: Program) -> None:
        for phase, _ in program:
            getattr(self.worker, phase)()

    def take_metrics(self) -> dict[str, float]:
        return self.worker.take_metrics()

    def gather(self, records: list[dict[str, float]]) -> list[dict[str, float]] | None:
        """Rank 0 gets, per logged step, the metrics of every worker merged."""
        gathered = self.comm.gather_object(records, dst=0)
        if gathered is None:
            return None
        return [merge_metrics([ranks[i] for ranks in gathered]) for i in range(len(records))]

    def bytes_sent(self) -> int:
        return self.comm.bytes_sent


def all_stage_gradients(runner: Any) -> list[list[torch.Tensor]]:
    """Per worker of this process, its module's gradients (tests)."""
    return [w.stage_gradients() for w in runner.workers]
