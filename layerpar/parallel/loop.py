"""The training loop shared by the in-process reference and every distributed worker."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from layerpar.parallel.schedule import StepSchedule
from layerpar.parallel.stage import DIAGNOSTIC_PROGRAM, PARALLEL_PROGRAM, SERIAL_PROGRAM

log = logging.getLogger(__name__)


class Runner(Protocol):
    is_main: bool

    @property
    def step(self) -> int: ...

    def begin(self, step: int, beta: float, final_parallel: bool = False) -> None: ...

    def run(self, program: Any) -> None: ...

    def take_metrics(self) -> dict[str, float]: ...

    def gather(self, records: list[dict[str, float]]) -> list[dict[str, float]] | None: ...

    def bytes_sent(self) -> int: ...


class Sink(Protocol):
    """Where rank 0 sends records (metrics file, progress bar)."""

    def step(self, record: dict[str, Any]) -> None: ...

    def epoch(self, record: dict[str, Any]) -> None: ...


@dataclass
class LoopResult:
    final_test_acc: float | None
    train_time_s: float
    steps: int
    epochs: list[dict[str, Any]] = field(default_factory=list)
    step_times: list[float] = field(default_factory=list)


def train_loop(
    runner: Runner,
    schedule: StepSchedule,
    steps_per_epoch: int,
    batch_size: int,
    evaluate: Callable[[], float],
    sink: Sink | None,
    *,
    log_every: int = 10,
    eval_every: int = 1,
    stop_at_step: int | None = None,
    eval_every_steps: int | None = None,
) -> LoopResult:
    """Run steps ``runner.step .. schedule.total_steps`` (or ``stop_at_step``); evaluate at epoch
    ends (untimed).  The schedule (learning rate, β, serial phases) is that of the whole run, so
    a stopped run resumed later follows exactly the path of an uninterrupted one."""
    result = LoopResult(final_test_acc=None, train_time_s=0.0, steps=schedule.total_steps)
    pending: list[dict[str, float]] = []
    end = schedule.total_steps if stop_at_step is None else min(stop_at_step, schedule.total_steps)

    def evaluates_after(step: int) -> bool:
        epoch_done = (step + 1) % steps_per_epoch == 0 and ((step + 1) // steps_per_epoch) % eval_every == 0
        step_due = eval_every_steps is not None and (step + 1) % eval_every_steps == 0
        return step + 1 == schedule.total_steps or epoch_done or step_due

    for step in range(runner.step, end):
        start = time.perf_counter()
        serial = schedule.is_serial(step)
        # A run of parallel steps ends before a serial step, an evaluation or a stop.
        final_parallel = not serial and (step + 1 == end or schedule.is_serial(step + 1) or evaluates_after(step))
        runner.begin(step, schedule.beta_at(step), final_parallel)
        runner.run(SERIAL_PROGRAM if serial else PARALLEL_PROGRAM)
        elapsed = time.perf_counter() - start
        result.train_time_s += elapsed
        result.step_times.append(elapsed)
        metrics = runner.take_metrics()
        metrics.update(step=step, serial=float(serial), step_time_s=elapsed, train_time_s=result.train_time_s)
        pending.append(metrics)
        last_of_epoch = (step + 1) % steps_per_epoch == 0 or step + 1 == schedule.total_steps
        stopping = step + 1 == end
        if len(pending) >= log_every or last_of_epoch or stopping:
            merged = runner.gather(pending)
            pending = []
            if merged is not None and sink is not None:
                for record in merged:
                    record["samples_per_s"] = batch_size / record["step_time_s"]
                    sink.step(record)
        if evaluates_after(step):
            diagnostics = diagnose(runner, schedule)
            acc = evaluate()
            record = {
                "epoch": (step + 1) / steps_per_epoch,
                "step": step + 1,
                "test_acc": acc,
                "train_time_s": result.train_time_s,
                **diagnostics,
            }
            result.epochs.append(record)
            result.final_test_acc = acc
            if sink is not None and runner.is_main:
                sink.epoch(record)
    return result


def diagnose(runner: Runner, schedule: StepSchedule) -> dict[str, float]:
    """Per-boundary AuxNet errors on a fixed training batch (step 0's), untimed.

    The same serial pass runs on every worker, so every process must call this together.
    """
    runner.begin(0, schedule.beta)
    runner.run(DIAGNOSTIC_PROGRAM)
    merged = runner.gather([runner.take_metrics()])
    return merged[0] if merged else {}
