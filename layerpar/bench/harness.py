"""``layerpar bench``: every arm on the same model, data, batch, seed and steps, on the same
devices (one CPU core with one thread per worker, or one GPU), repeated and interleaved.

Timing excludes evaluation and start-up; each step's time is the slowest rank's.  Results go to
``results/<name>/``: summary.json (one object per arm and K), table.md, speedup.png.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import resource
import statistics
import time
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import ConfigError, WorkerError
from layerpar.launchers.env import contract, free_port
from layerpar.parallel.run import environment

PIPELINE_ARMS = ("gpipe", "1f1b", "deepspeed")

ONE_PROCESS_ARMS = ("serial", "serial-threads")
"""Arms that run in one process; serial-threads uses K threads of it (informational)."""

IMPLEMENTED = ("serial", "layerpar", "ddp", "gpipe", "1f1b", "deepspeed", "serial-threads", "layerpar-minimal")


def _worker(rank: int, world: int, port: int, arm: str, config: RunConfig, warmup: int, steps: int,
            microbatches: int, results: Any) -> None:
    os.environ.update(contract("127.0.0.1", port, rank, world, rank))
    torch.set_num_threads(1)
    try:
        from layerpar.bench.arms import ARM_FUNCTIONS, count_bytes

        dist.init_process_group("gloo", init_method="env://")
        try:
            count_bytes()
            times, sent = ARM_FUNCTIONS[arm](config, warmup, steps, microbatches=microbatches)
            gathered: list[Any] = [None] * world
            dist.all_gather_object(gathered, (times, sent, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
        finally:
            dist.barrier()
            dist.destroy_process_group()
        if rank == 0:
            results.put(("ok", gathered))
    except BaseException as error:  # noqa: BLE001
        results.put(("error", f"rank {rank}: {error!r}\n{traceback.format_exc()}"))


def run_arm(arm: str, devices: int, config: RunConfig, warmup: int, steps: int, microbatches: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_worker, args=(r, devices, port, arm, config, warmup, steps, microbatches, results))
             for r in range(devices)]
    for proc in procs:
        proc.start()
    try:
        status, payload = results.get(timeout=1800)
    finally:
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()
    if status != "ok":
        raise WorkerError(payload, None)
    per_rank_times = [p[0] for p in payload]
    step_times = [max(ts) for ts in zip(*per_rank_times)]
    return {
        "step_times": step_times,
        "bytes_per_step": sum(p[1] for p in payload),
        "peak_mem_mb": max(p[2] for p in payload) / 1024,
    }


def run_bench(args: argparse.Namespace) -> Path:
    """Run every arm; returns the results folder (summary.json, table.md, plots)."""
    config = load_config(args.config, args.overrides)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    unknown = [a for a in arms if a not in IMPLEMENTED]
    if unknown:
        raise ConfigError(f"arms {unknown} are not implemented in this version; available: {', '.join(IMPLEMENTED)}")
    stage_counts = [int(k) for k in args.stages.split(",")]
    train_config = config
    needed = (args.warmup_steps + args.steps) * config.train.batch_size
    # Step timing needs only the batches it times (train_limit never grows past the preset's).
    limit = min(needed, config.data.train_limit or needed)
    config = replace(config, data={"train_limit": max(limit, config.train.batch_size)})
    name = args.name or time.strftime(f"bench-{config.model.name}-{config.data.dataset}-%Y%m%d-%H%M%S")
    out = Path(args.out) / name
    out.mkdir(parents=True, exist_ok=True)
    jobs = [(arm, 1 if arm == "serial" else k) for arm in arms for k in ([1] if arm == "serial" else stage_counts)]
    raw: dict[tuple[str, int], list[dict[str, Any]]] = {job: [] for job in jobs}
    bar = tqdm(total=len(jobs) * args.repeats, desc="bench", unit="run")
    for repeat in range(args.repeats):
        # Interleave arms and rotate their order, so drift in machine speed hits every arm alike.
        order = jobs[repeat % len(jobs):] + jobs[: repeat % len(jobs)]
        for arm, devices in order:
            k_config = replace(config, parallel={"stages": max(devices, 1)})
            processes = 1 if arm in ONE_PROCESS_ARMS else devices
            raw[(arm, devices)].append(run_arm(arm, processes, k_config, args.warmup_steps, args.steps, args.microbatches))
            bar.update(1)
    bar.close()
    summary = [_summarise(arm, devices, runs, config, args) for (arm, devices), runs in raw.items()]
    if args.train:
        _train_arms(summary, train_config, out, args)
    _write(out, summary, args)
    return out


TRAINED_ARMS = ("serial", "layerpar", "layerpar-penalty", "layerpar-al")


def _train_arms(summary: list[dict[str, Any]], config: RunConfig, out: Path, args: argparse.Namespace) -> None:
    """Train serial and layer-parallel arms to the end; fill accuracy and time-to-target."""
    from layerpar.bench.accuracy import plot_accuracy, time_to_target, train_arm

    rows = [r for r in summary if r["arm"] in TRAINED_ARMS]
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in tqdm(sorted(rows, key=lambda r: r["arm"] != "serial"), desc="train arms", unit="run"):
        record = train_arm(row["arm"], row["devices"], config, out, args.eval_every_steps)
        row["final_test_acc"] = record["final_test_acc"]
        row["train_time_s"] = record["train_time_s"]
        row["epochs_log"] = record["epochs_log"]
        curves[f"{row['arm']} K={row['devices']}"] = record["epochs_log"]
    serial = next((r for r in rows if r["arm"] == "serial"), None)
    target = args.target if args.target is not None else (
        serial["final_test_acc"] - 0.005 if serial is not None else None)
    for row in rows:
        row["target_acc"] = target
        row["time_to_target_s"] = time_to_target(row["epochs_log"], target) if target is not None else None
    plot_accuracy(out, curves, target)


def _summarise(arm: str, devices: int, runs: list[dict[str, Any]], config: RunConfig, args: argparse.Namespace) -> dict[str, Any]:
    medians = [statistics.median(r["step_times"]) for r in runs]
    median = statistics.median(medians)
    return {
        "arm": arm,
        "stages": devices,
        "devices": devices,
        "step_time_s_median": median,
        "step_time_s_spread": max(medians) - min(medians),
        "repeat_medians": medians,
        "samples_per_s": config.train.batch_size / median,
        "final_test_acc": None,
        "time_to_target_s": None,
        "peak_mem_mb": max(r["peak_mem_mb"] for r in runs),
        "bytes_per_step": statistics.median(r["bytes_per_step"] for r in runs),
        "microbatches": args.microbatches if arm in PIPELINE_ARMS else None,
        "steps": args.steps,
        "warmup_steps": args.warmup_steps,
        "config": config.to_dict(),
        **environment(),
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this run (written with every result)."""
    parts = ["layerpar bench"]
    for key in ("config", "arms", "stages", "repeats", "steps", "warmup_steps", "microbatches", "target",
                "eval_every_steps"):
        value = getattr(args, key, None)
        if value is not None:
            parts.append(f"--{key.replace('_', '-')} {value}")
    parts += [f"--set {o}" for o in args.overrides]
    if args.train:
        parts.append("--train")
    if getattr(args, "one_device", False):
        parts.append(f"--one-device --device {args.device}")
    if getattr(args, "predict", False):
        parts.append(f"--predict --max-stages {args.max_stages} --link {args.link}")
    return " ".join(parts)


def _write(out: Path, summary: list[dict[str, Any]], args: argparse.Namespace) -> None:
    command = command_line(args)
    (out / "summary.json").write_text(json.dumps({"command": command, "results": summary}, indent=2) + "\n")
    serial = next((r["step_time_s_median"] for r in summary if r["arm"] == "serial"), None)
    lines = [f"Command: `{command}`", "",
             "| arm | devices | step time (s, median) | spread | samples/s | speedup vs serial | speedup vs best pipeline (same K) | bytes/step | peak mem/worker (MB) | final test acc | time to target (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    table = Table(title="layerpar bench")
    for column in ("arm", "K", "step s", "samples/s", "vs serial", "vs pipeline", "bytes/step", "test acc", "to target s"):
        table.add_column(column)
    for r in summary:
        pipes = [p["step_time_s_median"] for p in summary if p["arm"] in PIPELINE_ARMS and p["devices"] == r["devices"]]
        vs_serial = f"{serial / r['step_time_s_median']:.2f}x" if serial else "-"
        vs_pipe = f"{min(pipes) / r['step_time_s_median']:.2f}x" if pipes else "-"
        lines.append(f"| {r['arm']} | {r['devices']} | {r['step_time_s_median']:.4f} | {r['step_time_s_spread']:.4f} | "
                     f"{r['samples_per_s']:.0f} | {vs_serial} | {vs_pipe} | {r['bytes_per_step']:,.0f} | {r['peak_mem_mb']:.0f} | "
                     f"{_fmt(r.get('final_test_acc'), '.4f')} | {_time_to_target_cell(r)} |")
        table.add_row(r["arm"], str(r["devices"]), f"{r['step_time_s_median']:.4f}", f"{r['samples_per_s']:.0f}",
                      vs_serial, vs_pipe, f"{r['bytes_per_step']:,.0f}", _fmt(r.get("final_test_acc"), ".4f"),
                      _time_to_target_cell(r))
    (out / "table.md").write_text("\n".join(lines) + "\n")
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)
    _plot(out, summary, serial)
    print(f"results: {out}")


def _time_to_target_cell(row: dict[str, Any]) -> str:
    if row.get("final_test_acc") is None:
        return "not measured"
    value = row.get("time_to_target_s")
    return f"not reached (target {row['target_acc']:.4f})" if value is None else f"{value:.1f}"


def _fmt(value: float | None, spec: str) -> str:
    return "not measured" if value is None else format(value, spec)


def _plot(out: Path, summary: list[dict[str, Any]], serial: float | None) -> None:
    if serial is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for arm in sorted({r["arm"] for r in summary} - {"serial"}):
        points = sorted((r["devices"], serial / r["step_time_s_median"]) for r in summary if r["arm"] == arm)
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=arm)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="serial")
    ax.set_xlabel("devices (K)")
    ax.set_ylabel("step throughput vs serial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=120)
    plt.close(fig)
