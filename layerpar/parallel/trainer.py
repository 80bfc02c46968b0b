"""In-process trainers: serial backprop (the baseline and oracle) and the layer-parallel
reference that runs all K modules in one process through ``LocalComm``.

The distributed runtime (``worker.py``) runs the very same step programs, one worker per process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from layerpar.checkpoint import load_checkpoint, save_atomic
from layerpar.config import RunConfig, replace
from layerpar.parallel.comm import LocalHub
from layerpar.parallel.evaluate import evaluate_serial
from layerpar.parallel.loop import LoopResult, train_loop
from layerpar.parallel.recorder import RunRecorder, write_json_atomic
from layerpar.parallel.run import RunData, environment, load_run_data, run_dir_for, write_run_config
from layerpar.parallel.runner import InProcessRunner
from layerpar.parallel.setup import Setup, build_setup, make_worker, resolve_device
from layerpar.parallel.stage import Oracle, StageWorker

log = logging.getLogger(__name__)


@dataclass
class RunSummary:
    """What a finished run reports (also written to summary.json)."""

    run_dir: Path
    final_test_acc: float | None
    train_time_s: float
    steps: int
    record: dict[str, Any]


class InProcessTrainer:
    """Trains K × R workers in this process, phase by phase (see ``runner.py``)."""

    def __init__(
        self,
        config: RunConfig,
        *,
        oracle_factory: Callable[[Setup], Oracle] | None = None,
        data: RunData | None = None,
    ) -> None:
        self.config = config
        self.data = data or load_run_data(config)
        self.setup = build_setup(config, resolve_device(config))
        self.hub = LocalHub(self.setup.layout.world_size)
        oracle = oracle_factory(self.setup) if oracle_factory is not None else None
        self.workers: list[StageWorker] = [
            make_worker(self.setup, rank, comm, self.data.schedule.total_steps, own_copy=True, oracle=oracle)
            for rank, comm in enumerate(self.hub.comms())
        ]
        self.runner = InProcessRunner(self.workers, self.data.plan)
        self.run_dir = run_dir_for(config)

    def evaluate(self) -> float:
        return evaluate_serial(
            self.setup.partition.stages,
            self.data.test,
            self.data.bn_images,
            device=self.setup.device,
            dtype=self.setup.dtype,
        )

    def fit(self, resume: bool = False) -> RunSummary:
        if resume:
            self.load(self.run_dir / "checkpoint")
        write_run_config(self.run_dir, self.config)
        recorder = RunRecorder(self.run_dir, self.data.schedule.total_steps, self.runner.step,
                               progress=self.config.train.progress)
        try:
            result = train_loop(
                self.runner, self.data.schedule, self.data.plan.steps_per_epoch,
                self.data.plan.step_samples, self.evaluate, recorder,
                eval_every=self.config.train.eval_every, stop_at_step=self.config.loop_steps("stop_at_step"),
                eval_every_steps=self.config.loop_steps("eval_every_steps"),
            )
        finally:
            recorder.close()
        self.save(self.run_dir / "checkpoint")
        return finish_run(self.run_dir, self.config, result, self.setup, self.runner.bytes_sent())

    def save(self, folder: Path) -> None:
        for rank, worker in enumerate(self.workers):
            save_atomic(worker.state_dict(), folder / f"rank{rank}.pt")
        save_atomic(model_checkpoint(self.config, self.setup.model.state_dict()), self.run_dir / "model.pt")

    def load(self, folder: Path) -> None:
        for rank, worker in enumerate(self.workers):
            worker.load_state_dict(load_checkpoint(folder / f"rank{rank}.pt"))


def model_checkpoint(config: RunConfig, model_state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The whole trained backbone plus the config that builds it (for ``layerpar eval``)."""
    return {"config": config.to_dict(), "model": model_state}


def finish_run(run_dir: Path, config: RunConfig, result: LoopResult, setup: Setup, bytes_sent: int) -> RunSummary:
    steady = sorted(result.step_times[len(result.step_times) // 5 :]) or [0.0]
    record = {
        "run_dir": str(run_dir),
        "mode": config.train.mode,
        "stages": config.parallel.stages if config.train.mode == "layerpar" else 1,
        "replicas": config.parallel.replicas,
        "model": config.model.name,
        "dataset": config.data.dataset,
        "seed": config.train.seed,
        "epochs": config.train.epochs,
        "final_test_acc": result.final_test_acc,
        "train_time_s": result.train_time_s,
        "step_time_s_median": steady[len(steady) // 2],
        "steps": result.steps,
        # Loop steps per batch (pipelined method): ``steps`` and the step time count micro-steps.
        "micro_batches": config.micro_batches,
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
    return RunSummary(run_dir, result.final_test_acc, result.train_time_s, result.steps, record)


def serial_config(config: RunConfig) -> RunConfig:
    """The serial-backprop twin of ``config``: same everything, one module, one device."""
    return replace(config, train={"mode": "serial"}, parallel={"stages": 1, "replicas": 1})


class SerialTrainer(InProcessTrainer):
    """Ordinary backprop on the whole backbone: the baseline every parallel path is tested against."""

    def __init__(self, config: RunConfig, **kwargs: Any) -> None:
        super().__init__(serial_config(config), **kwargs)


class LayerParallelTrainer(InProcessTrainer):
    """All K modules in one process through LocalComm: the numerical reference."""
