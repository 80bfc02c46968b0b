"""Drive the step programs of a run's stage workers, and gather what they report.

``InProcessRunner`` owns every worker of a run and runs each phase on all of them before the
next (the numerical reference); ``DistributedRunner`` owns the one worker of this process, the
other ranks running the same program at the same time.  Both offer the same operations, so the
training loop and the run (``session.py``) are written once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from layerpar.data import ArrayDataset
from layerpar.parallel.batches import BatchPlan
from layerpar.parallel.comm import Comm
from layerpar.parallel.evaluate import evaluate_chain, evaluate_serial
from layerpar.parallel.methods.base import Program
from layerpar.parallel.stage import StageWorker
from layerpar.parallel.step_checks import COSINE_PROGRAM, DIAGNOSTIC_PROGRAM

Metrics = dict[str, float]


def to_host(metrics: dict[str, Any]) -> Metrics:
    """Read a step's metrics back from the device (the one host sync per logged step)."""
    return {key: value if isinstance(value, (int, float)) else float(value) for key, value in metrics.items()}


def merge_metrics(per_worker: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stage-specific keys are kept; keys reported by several replicas are averaged."""
    sums: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for metrics in per_worker:
        for key, value in metrics.items():
            sums[key] = sums[key] + value if key in sums else value
            counts[key] = counts.get(key, 0) + 1
    return {key: sums[key] / counts[key] for key in sums}


class _Runner:
    """What both runners share."""

    workers: list[StageWorker]
    is_main: bool

    @property
    def step(self) -> int:
        return self.workers[0].step

    @property
    def has_aux(self) -> bool:
        return self.workers[0].aux is not None

    def program(self, serial: bool) -> Program:
        return self.workers[0].program(serial)

    @property
    def diagnostic_program(self) -> Program:
        return DIAGNOSTIC_PROGRAM

    @property
    def cosine_program(self) -> Program | None:
        """For an AuxNet method whose step applies its own batch's gradient (not a stale one)."""
        method = self.workers[0].method
        return COSINE_PROGRAM if self.has_aux and not method.stale else None

    def begin(self, step: int, beta: float, *, serial: bool = False, final: bool = False) -> None:
        for worker in self.workers:
            x, y = self.plan.batch(step, worker.replica, worker.layout.replicas)
            cond = self.plan.cond(step, worker.replica, worker.layout.replicas)
            worker.begin(x, y, beta, cond=cond, serial=serial, final=final)

    plan: BatchPlan

    def nonfinite(self) -> list[str]:
        """NaN/Inf losses or parameters of this process's workers in the step just run."""
        return [f"{what} (rank {w.comm.rank})" for w in self.workers for what in w.nonfinite()]


class InProcessRunner(_Runner):
    """All K × R workers in this process, phase by phase, through ``LocalComm``."""

    is_main = True

    def __init__(self, workers: Sequence[StageWorker], plan: BatchPlan) -> None:
        self.workers = sorted(workers, key=lambda w: (w.stage, w.replica))
        self.plan = plan

    def run(self, program: Program) -> None:
        for phase in program:
            for worker in reversed(self.workers) if phase.reverse else self.workers:
                worker.run_phase(phase)

    def take_metrics(self) -> dict[str, Any]:
        return merge_metrics([w.take_metrics() for w in self.workers])

    def gather(self, records: list[dict[str, Any]]) -> list[Metrics] | None:
        return [to_host(record) for record in records]

    def gather_objects(self, make: Callable[[StageWorker], Any]) -> list[Any] | None:
        """``make(worker)`` of every rank, in rank order (None on ranks other than 0)."""
        by_rank = {w.comm.rank: make(w) for w in self.workers}
        return [by_rank[rank] for rank in sorted(by_rank)]

    def evaluate(self, test: ArrayDataset, bn_inputs: torch.Tensor | None) -> dict[str, float]:
        first_replica = [w for w in self.workers if w.replica == 0]
        w = first_replica[0]
        return evaluate_serial(
            [w.module for w in first_replica], test, bn_inputs, w.objective, device=w.device, dtype=w.dtype
        )

    def bytes_sent(self) -> int:
        return sum(w.comm.bytes_sent for w in self.workers)

    def broadcast(self, obj: Any) -> Any:
        return obj


class DistributedRunner(_Runner):
    """The one worker of this process; other ranks run the same program at the same time."""

    def __init__(self, worker: StageWorker, plan: BatchPlan, comm: Comm) -> None:
        self.worker = worker
        self.workers = [worker]
        self.plan = plan
        self.comm = comm
        self.is_main = comm.rank == 0

    def run(self, program: Program) -> None:
        for phase in program:
            self.worker.run_phase(phase)

    def take_metrics(self) -> dict[str, Any]:
        return self.worker.take_metrics()

    def gather(self, records: list[dict[str, Any]]) -> list[Metrics] | None:
        """Rank 0 gets, per logged step, the metrics of every worker merged."""
        gathered = self.comm.gather_object([to_host(record) for record in records], dst=0)
        if gathered is None:
            return None
        return [merge_metrics([ranks[i] for ranks in gathered]) for i in range(len(records))]

    def gather_objects(self, make: Callable[[StageWorker], Any]) -> list[Any] | None:
        return self.comm.gather_object(make(self.worker), dst=0)

    def evaluate(self, test: ArrayDataset, bn_inputs: torch.Tensor | None) -> dict[str, float]:
        return evaluate_chain(self.worker, test, bn_inputs)

    def bytes_sent(self) -> int:
        return self.comm.bytes_sent

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return self.comm.broadcast_object(obj, src=0)


Runner = InProcessRunner | DistributedRunner


def all_stage_gradients(runner: Runner) -> list[list[torch.Tensor]]:
    """Per worker of this process, its module's gradients (tests)."""
    return [w.stage_gradients() for w in runner.workers]
