"""The training loop shared by the in-process reference and every distributed worker."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from layerpar.errors import NonFiniteError
from layerpar.parallel.runner import Runner
from layerpar.parallel.schedule import StepSchedule

log = logging.getLogger(__name__)

STOP_FILE_ENV = "LAYERPAR_STOP_FILE"
"""A file whose appearance asks the run to checkpoint and stop (the Slurm batch script touches
it when Slurm signals the time limit)."""


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
    batch_steps: int = 1
    """Loop steps per optimiser step: checkpoints are taken at batch boundaries only."""
    checkpoint_every: int | None = None
    """Checkpoint every N loop steps (a multiple of ``batch_steps``)."""
    check_finite_every: int = 1
    """Check losses and parameters for NaN/Inf every N loop steps (0: never)."""
    checkpoint_every_s: float | None = None
    """Checkpoint when this much wall time has passed since the last one (rank 0's clock,
    decided at logging points and broadcast, so every rank checkpoints at the same step)."""


@dataclass
class Resumed:
    """What a resumed run carries over from the run it continues."""

    train_time_s: float = 0.0
    epochs: list[dict[str, Any]] = field(default_factory=list)


def train_loop(
    runner: Runner,
    schedule: StepSchedule,
    plan: LoopPlan,
    evaluate: Callable[[], dict[str, float]],
    sink: Sink | None,
    checkpoint: Callable[[LoopResult], None] | None = None,
    resumed: Resumed | None = None,
) -> LoopResult:
    """Run steps ``runner.step .. schedule.total_steps`` (or ``stop_at_step``); evaluate at epoch
    ends (untimed).  The schedule (learning rate, β, serial phases) is that of the whole run, so
    a stopped run resumed later follows exactly the path of an uninterrupted one.

    Metrics stay tensors until every ``log_every`` steps (and at an epoch's end), where they are
    read back to the host in one go: the step itself never waits for the device."""
    resumed = resumed or Resumed()
    result = LoopResult(
        final_test_acc=None,
        train_time_s=resumed.train_time_s,
        steps=schedule.total_steps,
        first_step=runner.step,
        epochs=list(resumed.epochs),
    )
    if result.epochs:
        result.final_eval = {k: v for k, v in result.epochs[-1].items() if k.startswith("test_")}
        result.final_test_acc = result.final_eval.get("test_acc")
    due = CheckpointTimer(plan, runner)
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
        # A run of parallel steps ends before a serial step, an evaluation or the schedule's end.
        # A stop (stop_at_step) does not end it: the micro-batches in flight are checkpointed,
        # so the resumed run follows the uninterrupted one exactly.
        final = not serial and (schedule.is_serial(step + 1) or evaluates_after(step))
        runner.begin(step, schedule.beta_at(step), serial=serial, final=final)
        runner.run(runner.program(serial))
        if plan.check_finite_every and ((step + 1) % plan.check_finite_every == 0 or due.now(step + 1)):
            check_finite(runner, step, plan)
        elapsed = time.perf_counter() - start
        result.train_time_s += elapsed
        result.step_times.append(elapsed)
        metrics = runner.take_metrics()
        metrics.update(step=step, serial=float(serial), step_time_s=elapsed, train_time_s=result.train_time_s)
        pending.append(metrics)
        last_of_epoch = (step + 1) % per_epoch == 0 or step + 1 == schedule.total_steps
        # A stop asked for from outside (Slurm's time-limit signal) ends the loop at a batch
        # boundary; the run's final save is its checkpoint.
        stop_now = due.stop_requested and (step + 1) % plan.batch_steps == 0 and step + 1 < end
        # A checkpoint flushes the records before it, so a run resumed from it lacks none.
        checkpoint_now = checkpoint is not None and step + 1 < end and due.now(step + 1) and not stop_now
        if len(pending) >= plan.log_every or last_of_epoch or step + 1 == end or checkpoint_now or stop_now:
            due.poll()
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
        if checkpoint_now:
            assert checkpoint is not None
            checkpoint(result)
            due.reset()
        if stop_now:
            log.info("stop requested (%s): stopping after step %d to checkpoint", STOP_FILE_ENV, step + 1)
            break
    return result


def check_finite(runner: Runner, step: int, plan: LoopPlan) -> None:
    """Stop at the first NaN/Inf loss or parameter, before it is logged or checkpointed."""
    bad = runner.nonfinite()
    if bad:
        raise NonFiniteError(
            f"non-finite values at step {step // plan.batch_steps + 1} (loop step {step + 1}): "
            f"{', '.join(bad)}"
        )


class CheckpointTimer:
    """When the loop takes a periodic checkpoint: every ``checkpoint_every`` loop steps, and
    (with ``checkpoint_every_s``) at the first batch boundary after rank 0 saw the time pass."""

    def __init__(self, plan: LoopPlan, runner: Runner) -> None:
        self.plan = plan
        self.runner = runner
        self.last = time.monotonic()
        self.time_due = False
        self.stop_file = os.environ.get(STOP_FILE_ENV)
        self.stop_requested = False

    def poll(self) -> None:
        """At a logging point (every rank reaches it at the same step): rank 0 decides whether
        a timed checkpoint is due and whether a stop was asked for; every rank follows."""
        every_s = self.plan.checkpoint_every_s
        if every_s is None and self.stop_file is None:
            return
        decision = None
        if self.runner.is_main:
            elapsed = every_s is not None and time.monotonic() - self.last >= every_s
            decision = (elapsed, self.stop_file is not None and os.path.exists(self.stop_file))
        time_due, stop = self.runner.broadcast(decision)
        self.time_due = self.time_due or bool(time_due)
        self.stop_requested = self.stop_requested or bool(stop)

    def now(self, steps_done: int) -> bool:
        if steps_done % self.plan.batch_steps:
            return False
        every = self.plan.checkpoint_every
        return self.time_due or (every is not None and steps_done % every == 0)

    def reset(self) -> None:
        self.last = time.monotonic()
        self.time_due = False


def diagnose(runner: Runner, schedule: StepSchedule) -> dict[str, float]:
    """On a fixed training batch (step 0's), untimed: per-boundary AuxNet errors, and per module
    the cosine between the gradient a parallel step applies and serial backprop's (AuxNet
    methods whose step uses its own batch: penalty, al).

    The same passes run on every worker, so every process must call this together."""
    if not runner.has_aux:
        return {}
    runner.begin(0, schedule.beta, serial=True)
    runner.run(runner.diagnostic_program)
    records = [runner.take_metrics()]
    if runner.cosine_program is not None:
        runner.begin(0, schedule.beta)
        runner.run(runner.cosine_program)
        records.append(runner.take_metrics())
    merged = runner.gather(records)
    return {key: value for record in merged or [] for key, value in record.items()}
