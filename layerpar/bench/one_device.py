"""``layerpar bench --one-device``: what a single GPU can measure, and the model's prediction
for more GPUs.

One GPU cannot run K workers at once, but it can run each of them in turn.  The in-process
trainer runs the K stage workers of a layer-parallel step one after another; timing each
worker's phases (synchronised before and after) gives the step time it would take on a device of
its own, and the slowest stage is the K-device step time without communication (on NVLink a few
microseconds per message: ``costmodel.LINKS``).  Serial backprop is timed on the same device.
The scaling model, profiled on the same device, predicts both; ``table.md`` compares.

This is a measurement of per-stage compute, not of a K-GPU run: overlap, NCCL and contention
between GPUs are the model's assumptions, stated next to the numbers.  It is the only part of
``layerpar bench`` that runs on a GPU (``--device cuda``); the multi-process arms of
``harness.py`` run on the CPU.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from layerpar.bench.common import (
    describe_device,
    markdown_table,
    median_iqr,
    pick_device,
    synchronizer,
    timing_config,
    write_summary,
)
from layerpar.bench.config import BenchConfig
from layerpar.bench.registry import LAYERPAR, SERIAL
from layerpar.config import RunConfig, replace
from layerpar.parallel.run import environment


def serial_step_times(config: RunConfig, device: torch.device, warmup: int, steps: int) -> list[float]:
    """Serial backprop training steps (batch from the data plan, moved to ``device``; a
    denoiser's with its conditioning, on its own loss)."""
    from layerpar.bench.common import arm_dtype, batch_plan, build_backbone, forward, loss_fn, step_batch
    from layerpar.parallel.optim import make_optimizer

    model = build_backbone(config)
    model.to(device).train()
    optimizer, _ = make_optimizer(model.parameters(), config.optim, warmup + steps)
    # Whole batches: the run's own plan is cut in the method's micro-batches (the pipelined
    # method's M), and serial's step is one optimiser step on train.batch_size samples.
    plan, loss, dtype = batch_plan(config), loss_fn(config), arm_dtype(config)
    sync = synchronizer(device)
    times = []
    for step in range(warmup + steps):
        sync()
        start = time.perf_counter()
        x, y, cond = step_batch(plan, step, dtype)
        cond = None if cond is None else cond.to(device)
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss(forward(model, x, cond), y).backward()
        optimizer.step()
        sync()
        if step >= warmup:
            times.append(time.perf_counter() - start)
    return times


# stage_step_times belongs to the stage-worker rewrite in progress: kept as it was, unformatted.
def stage_step_times(config: RunConfig, device: torch.device, warmup: int, steps: int) -> list[list[float]]:
    """Per timed step, per stage: seconds of that stage worker's whole layer-parallel step."""
    from layerpar.parallel.methods import micro_batches
    from layerpar.parallel.trainer import LayerParallelTrainer

    config = replace(
        config, layerpar={"warmup_epochs": 0, "serial_final_epochs": 0}, parallel={"device": device.type}
    )
    trainer = LayerParallelTrainer(config)
    runner = trainer.runner
    sync = synchronizer(device)
    stages = config.parallel.stages
    # The pipelined method feeds a step's batch in micro-batches, one loop step each: a step's
    # time is the sum over its micro-batches.
    micro = micro_batches(config)
    rows = []
    for step in range(warmup + steps):
        spent = [0.0] * stages
        for tick in range(step * micro, (step + 1) * micro):
            _time_tick(runner, tick, tick + 1 == (warmup + steps) * micro, config.layerpar.beta, sync, spent)
        if step >= warmup:
            rows.append(spent)
    return rows


def _time_tick(
    runner: Any, tick: int, final: bool, beta: float, sync: Callable[[], None], spent: list[float]
) -> None:
    """Run loop step ``tick`` on every worker in turn, adding each phase's time to its stage."""
    replicas = runner.workers[0].layout.replicas
    for worker in runner.workers:
        sync()
        start = time.perf_counter()
        x, y = runner.plan.batch(tick, worker.replica, replicas)  # every worker draws its batch
        cond = runner.plan.cond(tick, worker.replica, replicas)  # a denoiser's (time, label)
        worker.begin(x, y, beta, cond=cond, final=final)
        sync()
        spent[worker.stage] += time.perf_counter() - start
    for phase in runner.program(serial=False):
        for worker in reversed(runner.workers) if phase.reverse else runner.workers:
            sync()
            start = time.perf_counter()
            worker.run_phase(phase)
            sync()
            spent[worker.stage] += time.perf_counter() - start
    runner.take_metrics()


def run_one_device(bench: BenchConfig) -> Path:
    """Measure serial and per-stage step times on one device (``bench.device``)."""
    device = pick_device(bench.device)
    config = timing_config(bench.run_config(), bench.warmup_steps, bench.steps)
    out = bench.out_dir(f"one-device-{config.model.name}-{device.type}-%Y%m%d-%H%M%S")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    else:
        torch.set_num_threads(1)
    summary: list[dict[str, Any]] = []
    bar = tqdm(total=bench.repeats * (1 + len(bench.stages)), desc="one-device bench", unit="run")
    serial_runs: list[float] = []
    stage_runs: dict[int, list[list[float]]] = {k: [] for k in bench.stages}
    for _ in range(bench.repeats):
        serial_runs += serial_step_times(config, device, bench.warmup_steps, bench.steps)
        bar.update(1)
        for k in bench.stages:
            k_config = replace(config, parallel={"stages": k})
            stage_runs[k] += stage_step_times(k_config, device, bench.warmup_steps, bench.steps)
            bar.update(1)
    bar.close()
    median, spread = median_iqr(serial_runs)
    summary.append(_row(SERIAL, 1, median, spread, config, device, None))
    for k, rows in stage_runs.items():
        per_stage = [median_iqr([r[s] for r in rows]) for s in range(k)]
        slowest = max(m for m, _ in per_stage)
        slowest_spread = max(s for m, s in per_stage if m == slowest)
        summary.append(_row(LAYERPAR, k, slowest, slowest_spread, config, device, [m for m, _ in per_stage]))
    command = bench.command_line()
    write_summary(out, command, summary)
    _write_table(out, summary, command)
    return out


def _row(
    arm: str,
    k: int,
    median: float,
    spread: float,
    config: RunConfig,
    device: torch.device,
    per_stage: list[float] | None,
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "arm": arm,
        "stages": k,
        "devices": k,
        "step_time_s_median": median,
        "step_time_s_spread": spread,
        "samples_per_s": config.train.batch_size / median,
        "device": describe_device(device),
        "measured_as": (
            "serial backprop on this device"
            if per_stage is None
            else "each stage worker's step run in turn on this one device; slowest stage, no communication"
        ),
        "config": config.to_dict(),
        **environment(),
    }
    if per_stage is not None:
        row["stage_step_s_median"] = per_stage
    return row


def _write_table(out: Path, summary: list[dict[str, Any]], command: str) -> None:
    serial = summary[0]["step_time_s_median"]
    note = (
        f"One device: {summary[0]['device']}. Layer-parallel rows: each stage worker's step timed in turn; "
        "the step time is the slowest stage's (communication not included)."
    )
    columns = (
        "arm",
        "K",
        "step time (s, median)",
        "spread",
        "per-stage step (s)",
        "speedup vs serial (compute bound)",
    )
    rows = []
    for r in summary:
        stages = ", ".join(f"{s:.4f}" for s in r.get("stage_step_s_median", [])) or "-"
        step = r["step_time_s_median"]
        rows.append(
            (
                r["arm"],
                str(r["devices"]),
                f"{step:.4f}",
                f"{r['step_time_s_spread']:.4f}",
                stages,
                f"{serial / step:.2f}",
            )
        )
    lines = [f"Command: `{command}`", "", note, "", *markdown_table(columns, rows)]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
