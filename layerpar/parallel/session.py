"""A run, written once: resume, train, evaluate, checkpoint, model.pt and summary.json — the same
for the K workers of one process (the reference) and for the one worker of each process.

    session = RunSession(config, runner, setup, data)
    summary = session.fit(resume)      # rank 0: the RunSummary; other ranks: None

Every rank loads its own shard, runs the same loop, and saves its own shard; the module states
and byte counts are gathered to rank 0, which writes model.pt and summary.json.
"""

from __future__ import annotations

import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.config import RunConfig
from layerpar.parallel.loop import LoopPlan, LoopResult, train_loop
from layerpar.parallel.methods import loop_steps, micro_batches
from layerpar.parallel.recorder import RunRecorder, write_json_atomic
from layerpar.parallel.run import RunData, environment, run_dir_for, write_run_config
from layerpar.parallel.runner import Runner
from layerpar.parallel.setup import Setup

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a finished run reports (also written to summary.json)."""

    run_dir: Path
    final_test_acc: float | None
    train_time_s: float
    steps: int
    """Optimiser steps (batches) of the whole schedule."""
    record: dict[str, Any]


class RunSession:
    """One run of ``config`` driven through ``runner`` (in-process or distributed)."""

    def __init__(self, config: RunConfig, runner: Runner, setup: Setup, data: RunData) -> None:
        self.config = config
        self.runner = runner
        self.setup = setup
        self.data = data
        self.run_dir = run_dir_for(config)

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoint"

    def fit(self, resume: bool = False) -> RunSummary | None:
        if resume:
            self.load()
        recorder = None
        if self.runner.is_main:
            write_run_config(self.run_dir, self.config)
            recorder = RunRecorder(
                self.run_dir,
                self.data.schedule.total_steps,
                self.runner.step,
                progress=self.config.train.progress,
            )
        try:
            result = train_loop(
                self.runner,
                self.data.schedule,
                self.loop_plan(),
                lambda: self.runner.evaluate(self.data.test, self.data.bn_images),
                recorder,
            )
        finally:
            if recorder is not None:
                recorder.close()
        return self.save(result)

    def loop_plan(self) -> LoopPlan:
        train = self.config.train
        return LoopPlan(
            steps_per_epoch=self.data.plan.steps_per_epoch,
            samples_per_step=self.data.plan.step_samples,
            log_every=train.log_every,
            eval_every=train.eval_every,
            stop_at_step=loop_steps(self.config, train.stop_at_step),
            eval_every_steps=loop_steps(self.config, train.eval_every_steps),
        )

    def load(self) -> None:
        for worker in self.runner.workers:
            rank = worker.comm.rank
            worker.load_state_dict(load_checkpoint(self.checkpoint_dir / f"rank{rank}.pt"))

    def save(self, result: LoopResult) -> RunSummary | None:
        """Every rank's shard; rank 0 also the assembled model and the summary."""
        for worker in self.runner.workers:
            save_atomic(worker.state_dict(), self.checkpoint_dir / f"rank{worker.comm.rank}.pt")
        states = self.runner.gather_objects(
            lambda w: {k: v.cpu() for k, v in w.module.state_dict().items()} if w.replica == 0 else None
        )
        byte_counts = self.runner.gather_objects(lambda w: w.comm.bytes_sent)
        if not self.runner.is_main:
            return None
        assert states is not None and byte_counts is not None
        model = merge_stage_states([s for s in states if s is not None], self.setup.partition.bounds)
        save_atomic(model_checkpoint(self.config, model), self.run_dir / "model.pt")
        return finish_run(self.run_dir, self.config, result, self.setup, sum(byte_counts))


def merge_stage_states(
    states: list[dict[str, torch.Tensor]], bounds: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Stage-local ``blocks.j.*`` keys -> the whole backbone's ``blocks.(bounds[s]+j).*``."""
    merged = {}
    for stage, state in enumerate(states):
        for key, value in state.items():
            _, index, rest = key.split(".", 2)
            merged[f"blocks.{bounds[stage] + int(index)}.{rest}"] = value
    return merged


def model_checkpoint(config: RunConfig, model_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The whole trained backbone plus the config that builds it (for ``layerpar eval``)."""
    return {"config": config.to_dict(), "model": model_state}


def batch_times(step_times: list[float], micro: int, first_step: int) -> list[float]:
    """Wall time per batch (optimiser step): the loop steps of one batch summed.  Loop step
    ``first_step`` is where this process started (a resumed run starts mid-schedule)."""
    skip = (-first_step) % micro  # a partial batch at the start is not a batch time
    times = step_times[skip:]
    return [sum(times[i : i + micro]) for i in range(0, len(times) - micro + 1, micro)]


def _steady_median(times: list[float]) -> float:
    steady = times[len(times) // 5 :]
    return statistics.median(steady) if steady else 0.0


def finish_run(
    run_dir: Path, config: RunConfig, result: LoopResult, setup: Setup, bytes_sent: int
) -> RunSummary:
    micro = micro_batches(config)
    per_batch = batch_times(result.step_times, micro, result.first_step)
    record = {
        "run_dir": str(run_dir),
        "mode": config.train.mode,
        "method": setup.method.name,
        "stages": config.parallel.stages if config.train.mode == "layerpar" else 1,
        "replicas": config.parallel.replicas,
        "model": config.model.name,
        "dataset": config.data.dataset,
        "seed": config.train.seed,
        "epochs": config.train.epochs,
        "final_test_acc": result.final_test_acc,
        "final_eval": result.final_eval,
        "train_time_s": result.train_time_s,
        # Optimiser steps (batches), comparable across methods; micro-steps reported separately.
        "steps": result.steps // micro,
        "step_time_s_median": _steady_median(per_batch),
        "micro_batches": micro,
        "micro_steps": result.steps,
        "micro_step_time_s_median": _steady_median(result.step_times),
        "bounds": list(setup.partition.bounds),
        "bytes_sent_total": bytes_sent,
        "epochs_log": result.epochs,
        "config": config.to_dict(),
        **environment(),
    }
    write_json_atomic(run_dir / "summary.json", record)
    if (run_dir / "metrics.jsonl").is_file():
        from layerpar.parallel.diagnostics_plot import plot_diagnostics

        plot_diagnostics(run_dir)
    return RunSummary(run_dir, result.final_test_acc, result.train_time_s, result.steps // micro, record)
