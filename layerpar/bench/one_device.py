"""``layerpar bench --one-device``: what a single GPU can measure, and the model's prediction
for more GPUs.

One GPU cannot run K workers at once, but it can run each of them in turn.  The in-process
trainer runs the K stage workers of a layer-parallel step one after another; timing each
worker's phases (synchronised before and after) gives the step time it would take on a device of
its own, and the slowest stage is the K-device step time without communication (on NVLink a few
microseconds per message: ``costmodel.LINKS``).  Serial backprop is timed on the same device.
The scaling model, profiled on the same device, predicts both; ``table.md`` compares.

This is a measurement of per-stage compute, not of a K-GPU run: overlap, NCCL and contention
between GPUs are the model's assumptions, stated next to the numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from layerpar.bench.harness import command_line
from layerpar.bench.profile import describe_device, synchronizer
from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import ConfigError
from layerpar.parallel.run import environment


def pick_device(name: str | None) -> torch.device:
    """``cuda`` (or None with a GPU present) or ``cpu``; a missing GPU is a clear error."""
    if name in (None, "auto"):
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is visible here; use --device cpu or run on a GPU machine")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"--device {name!r}: valid devices are cpu, cuda, auto")
    return torch.device(name)


def serial_step_times(config: RunConfig, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Serial backprop training steps (batch from the data plan, moved to ``device``)."""
    from torch.nn import functional as F

    from layerpar.parallel.optim import make_optimizer
    from layerpar.parallel.run import load_run_data
    from layerpar.parallel.setup import build_model_for

    model, _, _ = build_model_for(config)
    model.to(device).train()
    optimizer, _ = make_optimizer(model.parameters(), config.optim, warmup + steps)
    plan = load_run_data(config).plan
    sync = synchronizer(device)
    times = []
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        x, y = plan.batch(step)
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x.to(device)), y.to(device)).backward()
        optimizer.step()
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


def stage_step_times(config: RunConfig, device: torch.device, warmup: int, steps: int) -> list[list[float]]:
    """Per timed step, per stage: seconds of that stage worker's whole layer-parallel step."""
    from layerpar.parallel.trainer import LayerParallelTrainer

    config = replace(config, layerpar={"warmup_epochs": 0, "serial_final_epochs": 0},
                     parallel={"device": device.type})
    trainer = LayerParallelTrainer(config)
    runner = trainer.runner
    sync = synchronizer(device)
    stages = config.parallel.stages
    # The pipelined method feeds a step's batch in micro-batches, one loop step each: a step's
    # time is the sum over its micro-batches.
    micro = config.micro_batches
    rows = []
    for step in range(warmup + steps):
        spent = [0.0] * stages
        for tick in range(step * micro, (step + 1) * micro):
            _time_tick(runner, tick, tick + 1 == (warmup + steps) * micro, config.layerpar.beta, sync, spent)
        if step >= warmup:
            rows.append(spent)
    return rows


def _time_tick(runner: Any, tick: int, final: bool, beta: float, sync: Callable[[], None],
               spent: list[float]) -> None:
    """Run loop step ``tick`` on every worker in turn, adding each phase's time to its stage."""
    from layerpar.parallel.stage import PARALLEL_PROGRAM

    replicas = runner.workers[0].layout.replicas
    for worker in runner.workers:
        sync()
        start = time.perf_counter()
        x, y = runner.plan.batch(tick, worker.replica, replicas)  # every worker draws its batch
        worker.begin(x, y, beta, final_parallel=final)
        sync()
        spent[worker.stage] += time.perf_counter() - start
    for phase, reverse in PARALLEL_PROGRAM:
        for worker in reversed(runner.workers) if reverse else runner.workers:
            sync()
            start = time.perf_counter()
            getattr(worker, phase)()
            sync()
            spent[worker.stage] += time.perf_counter() - start
    runner.take_metrics()


def _median_spread(values: Sequence[float]) -> tuple[float, float]:
    ordered = sorted(values)
    q = statistics.quantiles(ordered, n=4) if len(ordered) >= 2 else [ordered[0]] * 3
    return statistics.median(ordered), q[2] - q[0]


def run_one_device(args: argparse.Namespace) -> Path:
    """Measure serial and per-stage step times on one device; then profile and predict."""
    device = pick_device(args.device)
    config = load_config(args.config, args.overrides)
    needed = (args.warmup_steps + args.steps) * config.train.batch_size
    config = replace(config, data={"train_limit": max(min(needed, config.data.train_limit or needed),
                                                       config.train.batch_size)})
    stage_counts = [int(k) for k in args.stages.split(",")]
    name = args.name or time.strftime(f"one-device-{config.model.name}-{device.type}-%Y%m%d-%H%M%S")
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    summary: list[dict[str, Any]] = []
    bar = tqdm(total=args.repeats * (1 + len(stage_counts)), desc="one-device bench", unit="run")
    serial_runs, stage_runs = [], {k: [] for k in stage_counts}
    for _ in range(args.repeats):
        serial_runs += serial_step_times(config, device, args.warmup_steps, args.steps)
        bar.update(1)
        for k in stage_counts:
            stage_runs[k] += stage_step_times(replace(config, parallel={"stages": k}), device,
                                              args.warmup_steps, args.steps)
            bar.update(1)
    bar.close()
    median, spread = _median_spread(serial_runs)
    summary.append(_row("serial", 1, median, spread, config, device, None))
    for k, rows in stage_runs.items():
        per_stage = [_median_spread([r[s] for r in rows]) for s in range(k)]
        slowest = max(m for m, _ in per_stage)
        slowest_spread = max(s for m, s in per_stage if m == slowest)
        summary.append(_row("layerpar", k, slowest, slowest_spread, config, device, [m for m, _ in per_stage]))
    command = command_line(args)
    (out / "summary.json").write_text(json.dumps({"command": command, "results": summary}, indent=2) + "\n")
    _write_table(out, summary, command)
    return out


def _row(arm: str, k: int, median: float, spread: float, config: RunConfig, device: torch.device,
         per_stage: list[float] | None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "arm": arm, "stages": k, "devices": k, "step_time_s_median": median, "step_time_s_spread": spread,
        "samples_per_s": config.train.batch_size / median, "device": describe_device(device),
        "measured_as": ("serial backprop on this device" if per_stage is None else
                        "each stage worker's step run in turn on this one device; slowest stage, "
                        "no communication"),
        "config": config.to_dict(), **environment(),
    }
    if per_stage is not None:
        row["stage_step_s_median"] = per_stage
    return row


def _write_table(out: Path, summary: list[dict[str, Any]], command: str) -> None:
    serial = summary[0]["step_time_s_median"]
    note = (f"One device: {summary[0]['device']}. Layer-parallel rows: each stage worker's step timed in turn; "
            "the step time is the slowest stage's (communication not included).")
    lines = [f"Command: `{command}`", "", note, "",
             "| arm | K | step time (s, median) | spread | per-stage step (s) | speedup vs serial (compute bound) |",
             "|---|---|---|---|---|---|"]
    for r in summary:
        stages = ", ".join(f"{s:.4f}" for s in r.get("stage_step_s_median", [])) or "-"
        lines.append(f"| {r['arm']} | {r['devices']} | {r['step_time_s_median']:.4f} | {r['step_time_s_spread']:.4f} "
                     f"| {stages} | {serial / r['step_time_s_median']:.2f} |")
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
