"""A run, written once: resume, train, evaluate, checkpoint, model.pt and summary.json — the same
for the K workers of one process (the reference) and for the one worker of each process.

    session = RunSession(config, runner, setup, data)
    summary = session.fit(resume)      # rank 0: the RunSummary; other ranks: None

Every rank loads its own shard, runs the same loop, and saves its own shard; the module states
and byte counts are gathered to rank 0, which writes model.pt and summary.json.
"""

from __future__ import annotations

import json
import logging
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerpar.checkpoint import save_atomic
from layerpar.config import RunConfig
from layerpar.data.atomic import atomic_output
from layerpar.errors import CheckpointError, NonFiniteError
from layerpar.parallel.checkpoints import (
    check_resumable,
    identity,
    latest_set,
    load_shard,
    write_manifest,
    write_shard,
)
from layerpar.parallel.loop import LoopPlan, LoopResult, Resumed, train_loop
from layerpar.parallel.methods import loop_steps, micro_batches
from layerpar.parallel.recorder import RunRecorder, write_json_atomic
from layerpar.parallel.run import RunData, check_new_run_dir, environment, run_dir_for, write_run_config
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

    def fit(self, resume: bool | str = False) -> RunSummary | None:
        """Train; ``resume`` True continues the run's newest complete checkpoint set, "auto"
        does so when there is one (a restart after a fault) and starts afresh otherwise."""
        resumed = self.load(required=resume is True) if resume else None
        if not resume and self.runner.is_main:
            check_new_run_dir(self.run_dir)
        recorder = None
        if self.runner.is_main:
            write_run_config(self.run_dir, self.config)
            if resume:  # a restart with no set yet starts at step 0: its old records go too
                truncate_metrics(self.run_dir / "metrics.jsonl", self.runner.step)
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
                checkpoint=self.save_set,
                resumed=resumed,
            )
        except NonFiniteError as error:
            last = latest_set(self.checkpoint_dir)
            where = (
                f"the last good checkpoint is {last.path} (step {last.step})" if last else "no checkpoint yet"
            )
            raise NonFiniteError(
                f"{error}; stopped, nothing saved; {where}. Lower optim.lr (now {self.config.optim.lr}) "
                "and start again, or continue the last checkpoint with --resume --set optim.lr=..."
            ) from None
        finally:
            if recorder is not None:
                recorder.close()
        return self.save(result)

    def loop_plan(self) -> LoopPlan:
        train, ckpt = self.config.train, self.config.checkpoint
        micro = micro_batches(self.config)
        return LoopPlan(
            steps_per_epoch=self.data.plan.steps_per_epoch,
            samples_per_step=self.data.plan.step_samples,
            log_every=train.log_every,
            eval_every=train.eval_every,
            stop_at_step=loop_steps(self.config, train.stop_at_step),
            eval_every_steps=loop_steps(self.config, train.eval_every_steps),
            batch_steps=micro,
            check_finite_every=train.check_finite_every * micro,
            checkpoint_every=loop_steps(self.config, ckpt.every_steps),
            checkpoint_every_s=None if ckpt.every_min is None else ckpt.every_min * 60,
        )

    def load(self, required: bool = True) -> Resumed | None:
        """Every worker of this process from the newest complete set (checked against this
        run's config first); None when there is none and it is not ``required``."""
        checkpoint = latest_set(self.checkpoint_dir)
        if checkpoint is None:
            if required:
                raise CheckpointError(
                    f"nothing to resume in {self.run_dir}: no complete checkpoint set under "
                    f"{self.checkpoint_dir} (a run saves one at its end, at train.stop_at_step and "
                    "every checkpoint.every_steps / every_min)"
                )
            return None
        check_resumable(checkpoint, self.config, self.setup.partition.bounds)
        for worker in self.runner.workers:
            worker.load_state_dict(load_shard(checkpoint, worker.comm.rank))
        for worker in self.runner.workers:
            worker.resend()
        log.info("resumed %s from step %d", self.run_dir, checkpoint.step)
        return Resumed(
            train_time_s=float(checkpoint.manifest.get("train_time_s", 0.0)),
            epochs=list(checkpoint.manifest.get("epochs_log", [])),
        )

    def save_set(self, result: LoopResult) -> None:
        """A checkpoint set of every rank at this step (rank 0 writes the manifest last)."""
        step = self.runner.step
        infos = {
            w.comm.rank: write_shard(self.checkpoint_dir, step, w.comm.rank, w.state_dict())
            for w in self.runner.workers
        }
        shards = self.runner.gather_objects(lambda w: infos[w.comm.rank])
        if shards is None:
            return
        write_manifest(
            self.checkpoint_dir,
            step,
            shards,
            identity(self.config, self.setup.partition.bounds),
            {"train_time_s": result.train_time_s, "epochs_log": result.epochs},
            keep=self.config.checkpoint.keep,
        )

    def save(self, result: LoopResult) -> RunSummary | None:
        """A last checkpoint set; rank 0 also the assembled model and the summary."""
        self.save_set(result)
        states = self.runner.gather_objects(
            lambda w: {k: v.cpu() for k, v in w.module.state_dict().items()} if w.replica == 0 else None
        )
        ema_states = self.runner.gather_objects(
            lambda w: {k: v.cpu() for k, v in w.ema.state().items()} if w.replica == 0 and w.ema else None
        )
        byte_counts = self.runner.gather_objects(lambda w: w.comm.bytes_sent)
        if not self.runner.is_main:
            return None
        assert states is not None and byte_counts is not None and ema_states is not None
        bounds = self.setup.partition.bounds
        model = merge_stage_states([s for s in states if s is not None], bounds)
        ema = [s for s in ema_states if s is not None]
        ema_model = merge_stage_states(ema, bounds) if ema else None
        save_atomic(model_checkpoint(self.config, model, ema_model), self.run_dir / "model.pt")
        return finish_run(self.run_dir, self.config, result, self.setup, sum(byte_counts))


def truncate_metrics(path: Path, step: int) -> None:
    """Drop the records of steps after the checkpoint a run resumes from (a restarted run
    repeats them), so metrics.jsonl reads as one uninterrupted run."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line cut by a kill
        last = record.get("step", 0) + (0 if record.get("kind") == "epoch" else 1)
        if last <= step:
            kept.append(line)
    with atomic_output(path) as handle:
        handle.write("".join(line + "\n" for line in kept).encode())


def merge_stage_states(
    states: list[dict[str, torch.Tensor]], bounds: tuple[int, ...]
) -> dict[str, torch.Tensor]:
    """Stage-local ``blocks.j.*`` keys -> the whole backbone's ``blocks.(bounds[s]+j).*``; a
    denoiser's replicated ``embedder.*`` is taken from module 0 (every replica is the same)."""
    merged = {}
    for stage, state in enumerate(states):
        for key, value in state.items():
            if key.startswith("embedder."):
                if stage == 0:
                    merged[key] = value
                continue
            _, index, rest = key.split(".", 2)
            merged[f"blocks.{bounds[stage] + int(index)}.{rest}"] = value
    return merged


def model_checkpoint(
    config: RunConfig, model_state: dict[str, torch.Tensor], ema_state: dict[str, torch.Tensor] | None = None
) -> dict[str, Any]:
    """The whole trained backbone plus the config that builds it (for ``layerpar eval``), and
    a denoiser's EMA weights (what ``layerpar sample`` draws from)."""
    checkpoint: dict[str, Any] = {"config": config.to_dict(), "model": model_state}
    if ema_state is not None:
        checkpoint["model_ema"] = ema_state
    return checkpoint


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
