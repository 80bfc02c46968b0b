"""The training loop shared by the in-process reference and every distributed worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from layerpar.parallel.runner import Runner
from layerpar.parallel.schedule import StepSchedule

log = logging.getLogger(__name__)


class Sink(Protocol):
    """Where rank 0 sends records (metrics file, progress bar)."""

    def step(self, record: dict[str, Any]) -> None: ...

    def epoch(self, record: dict[str, Any]) -> None: ...


@dataclass
class LoopResult:
    final_test_acc: float | None
    train_time_s: float
    steps: int
    """Loop steps of the whole schedule (micro-batches for a micro-batched method)."""
    final_eval: dict[str, float] = field(default_factory=dict)
    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)
    """Wall time of every loop step this process ran."""
    first_step: int = 0
    """The loop step this process started at (a resumed run starts mid-schedule)."""


@dataclass(frozen=True)
class LoopPlan:
    """When the loop evaluates and stops, in loop steps."""

    steps_per_epoch: int
    samples_per_step: int
    log_every: int = 10
    eval_every: int = 1
    stop_at_step: int | None = None
    eval_every_steps: int | None = None


def train_loop(
    runner: Runner,
    schedule: StepSchedule,
    plan: LoopPlan,
    evaluate: Callable[[], dict[str, float]],
    sink: Sink | None,
) -> LoopResult:
    """Run steps ``runner.step .. schedule.total_steps`` (or ``stop_at_step``); evaluate at epoch
    ends (untimed).  The schedule (learning rate, β, serial phases) is that of the whole run, so
    a stopped run resumed later follows exactly the path of an uninterrupted one.

    Metrics stay tensors until every ``log_every`` steps (and at an epoch's end), where they are
    read back to the host in one go: the step itself never waits for the device."""
    result = LoopResult(
        final_test_acc=None, train_time_s=0.0, steps=schedule.total_steps, first_step=runner.step
    )
    pending: list[dict[str, Any]] = []
    per_epoch = plan.steps_per_epoch
    end = schedule.total_steps if plan.stop_at_step is None else min(plan.stop_at_step, schedule.total_steps)

    def evaluates_after(step: int) -> bool:
        epoch_done = (step + 1) % per_epoch == 0 and ((step + 1) // per_epoch) % plan.eval_every == 0
        step_due = plan.eval_every_steps is not None and (step + 1) % plan.eval_every_steps == 0
        return step + 1 == schedule.total_steps or epoch_done or step_due

    for step in range(runner.step, end):
        start = time.perf_counter()
        serial = schedule.is_serial(step)
        # A run of parallel steps ends before a serial step, an evaluation or a stop.
        final = not serial and (step + 1 == end or schedule.is_serial(step + 1) or evaluates_after(step))
        runner.begin(step, schedule.beta_at(step), serial=serial, final=final)
        runner.run(runner.program(serial))
        elapsed = time.perf_counter() - start
        result.train_time_s += elapsed
        result.step_times.append(elapsed)
        metrics = runner.take_metrics()
        metrics.update(step=step, serial=float(serial), step_time_s=elapsed, train_time_s=result.train_time_s)
        pending.append(metrics)
        last_of_epoch = (step + 1) % per_epoch == 0 or step + 1 == schedule.total_steps
        if len(pending) >= plan.log_every or last_of_epoch or step + 1 == end:
            merged = runner.gather(pending)
            pending = []
            if merged is not None and sink is not None:
                for record in merged:
                    record["samples_per_s"] = plan.samples_per_step / record["step_time_s"]
                    sink.step(record)
        if evaluates_after(step):
            diagnostics = diagnose(runner, schedule)
            scores = evaluate()
            record = {
                "epoch": (step + 1) / per_epoch,
                "step": step + 1,
                **scores,
                "train_time_s": result.train_time_s,
                **diagnostics,
            }
            result.epochs.append(record)
            result.final_eval = scores
            result.final_test_acc = scores.get("test_acc")
            if sink is not None and runner.is_main:
                sink.epoch(record)
    return result


def diagnose(runner: Runner, schedule: StepSchedule) -> dict[str, float]:
    """Per-boundary AuxNet errors on a fixed training batch (step 0's), untimed.

    The same serial pass runs on every worker, so every process must call this together."""
    if not runner.has_aux:
        return {}
    runner.begin(0, schedule.beta, serial=True)
    runner.run(runner.diagnostic_program)
    merged = runner.gather([runner.take_metrics()])
    return merged[0] if merged else {}
