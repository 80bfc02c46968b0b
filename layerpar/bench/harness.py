"""``layerpar bench``: every arm of ``--arms`` on the same model, data, batch, seed and steps,
repeated and interleaved.

Every arm runs in worker processes on this machine's CPU: one process per device, one thread
each (``torch.set_num_threads(1)``: a device is one CPU core, DESIGN.md §4), joined by gloo over
loopback; ``serial-threads`` uses K threads of one process.  No arm here runs on a GPU; timing a
GPU is ``layerpar bench --one-device --device cuda`` (``one_device.py``).

``--pin-cores`` makes "one core per device" literal: each rank on a core of its own (``cores.py``).
Timing excludes evaluation and start-up; each step's time is the slowest rank's.  Results go to
``results/<name>/``: summary.json (one object per arm and K), table.md, speedup.png.
"""

from __future__ import annotations

import os
import resource
import statistics
import traceback
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from layerpar.bench import registry
from layerpar.bench.breakdown import breakdown_markdown, mean_breakdown
from layerpar.bench.common import (
    count_bytes,
    markdown_table,
    recorded_cut,
    spawn_ranks,
    timing_config,
    write_summary,
)
from layerpar.bench.config import BenchConfig
from layerpar.bench.cores import check_cores, pin, usable_cores
from layerpar.bench.registry import SERIAL
from layerpar.config import RunConfig, replace
from layerpar.errors import WorkerError
from layerpar.launchers.env import contract
from layerpar.parallel.comm import close_process_group, init_process_group
from layerpar.parallel.run import environment


def _worker(
    rank: int,
    world: int,
    port: int,
    arm: str,
    config: RunConfig,
    warmup: int,
    steps: int,
    microbatches: int,
    pin_threads: int | None,
    results: Any,
) -> None:
    os.environ.update(contract("127.0.0.1", port, rank, world, rank))
    if pin_threads is not None:
        pin(rank, pin_threads)  # before gloo starts its threads: they inherit the cores
    torch.set_num_threads(1)
    try:
        run = registry.get(arm).run
        init_process_group("gloo", timeout_s=1800.0)  # torch's default timeout; store on loopback
        try:
            count_bytes()
            times, sent, *extra = run(config, warmup, steps, microbatches=microbatches)
            breakdown, stash = (extra + [None, None])[:2]  # the layerpar arm's, others return none
            gathered: list[Any] = [None] * world
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            cores = usable_cores()
            dist.all_gather_object(gathered, (times, sent, peak, breakdown, stash, recorded_cut(), cores))
        finally:
            close_process_group()
        if rank == 0:
            results.put(("ok", gathered))
    except BaseException as error:  # noqa: BLE001
        results.put(("error", f"rank {rank}: {error!r}\n{traceback.format_exc()}"))


def run_arm(
    arm: str,
    devices: int,
    config: RunConfig,
    warmup: int,
    steps: int,
    microbatches: int,
    *,
    pin_cores: bool = False,
) -> dict[str, Any]:
    """Run ``arm`` in ``devices`` worker processes (CPU, one thread each, gloo); per-step times
    (the slowest rank's), bytes sent per step (all ranks) and peak memory per worker (the
    largest, and each rank's).  An arm that cannot run ``config`` (a denoiser) fails here.
    ``pin_cores``: each device on a core of its own (``cores.py``)."""
    registry.check_denoiser([arm], config)
    threads = config.parallel.stages if registry.ARMS[arm].one_process else 1
    args = (arm, config, warmup, steps, microbatches, threads if pin_cores else None)
    status, payload = spawn_ranks(_worker, devices, args, 1800)
    if status != "ok":
        raise WorkerError(payload, None)
    per_rank_times = [p[0] for p in payload]
    step_times = [max(ts) for ts in zip(*per_rank_times)]
    return {
        "step_times": step_times,
        "bytes_per_step": sum(p[1] for p in payload),
        "peak_mem_mb": max(p[2] for p in payload) / 1024,
        "peak_mem_mb_per_rank": [p[2] / 1024 for p in payload],  # ru_maxrss is in KiB on Linux
        "breakdown_ms_per_rank": None if payload[0][3] is None else [p[3] for p in payload],
        "stash_per_rank": None if payload[0][4] is None else [p[4] for p in payload],
        "bounds": None if payload[0][5] is None else list(payload[0][5]),
        "cores": [p[6] for p in payload],
    }


def run_bench(bench: BenchConfig) -> Path:
    """Run every arm; returns the results folder (summary.json, table.md, plots)."""
    train_config = bench.run_config()
    registry.check_denoiser(bench.arms, train_config)  # before any arm runs
    # Step timing needs only the batches it times (train_limit never grows past the preset's).
    config = timing_config(train_config, bench.warmup_steps, bench.steps)
    candidates = [
        (arm, k, m)
        for arm in bench.arms
        for k in registry.ARMS[arm].device_counts(bench.stages)
        for m in (bench.microbatches if registry.ARMS[arm].microbatches else (None,))
    ]
    least = {(a, k): registry.ARMS[a].min_microbatches_per_device * k for a, k, _ in candidates}
    jobs = [(a, k, m) for a, k, m in candidates if m is None or m >= least[(a, k)]]
    skipped = [
        f"{a} M={m} at K={k}: skipped, the schedule needs M ≥ {least[(a, k)]}"
        for a, k, m in candidates
        if (a, k, m) not in jobs
    ]
    if bench.pin_cores:
        check_cores(max(k for _, k, _ in jobs))  # before any arm runs or any file is written
    out = bench.out_dir(f"bench-{config.model.name}-{config.data.dataset}-%Y%m%d-%H%M%S")
    raw: dict[tuple[str, int, int | None], list[dict[str, Any]]] = {job: [] for job in jobs}
    bar = tqdm(total=len(jobs) * bench.repeats, desc="bench", unit="run")
    for repeat in range(bench.repeats):
        # Interleave arms and rotate their order, so drift in machine speed hits every arm alike.
        order = jobs[repeat % len(jobs) :] + jobs[: repeat % len(jobs)]
        for arm, devices, micro in order:
            k_config = replace(config, parallel={"stages": max(devices, 1)})
            processes = registry.ARMS[arm].processes(devices)
            m = micro if micro is not None else bench.microbatches[0]
            result = run_arm(
                arm, processes, k_config, bench.warmup_steps, bench.steps, m, pin_cores=bench.pin_cores
            )
            raw[(arm, devices, micro)].append(result)
            bar.update(1)
    bar.close()
    summary = [_summarise(arm, k, m, runs, config, bench) for (arm, k, m), runs in raw.items()]
    mark_best_microbatches(summary)
    if bench.train:
        _train_arms(summary, train_config, out, bench)
    _write(out, summary, bench, skipped, config.is_diffusion)
    return out


def _train_arms(summary: list[dict[str, Any]], config: RunConfig, out: Path, bench: BenchConfig) -> None:
    """Train the arms with a ``train_mode`` to the end; fill the final metric (a classifier's
    accuracy, a denoiser's held-out loss) and time-to-target."""
    from layerpar.bench.accuracy import final_value, metric_for, plot_accuracy, time_to_target, train_arm

    metric = metric_for(config)
    rows = [r for r in summary if registry.ARMS[r["arm"]].train_mode is not None]
    curves: dict[str, list[dict[str, Any]]] = {}
    for row in tqdm(sorted(rows, key=lambda r: r["arm"] != SERIAL), desc="train arms", unit="run"):
        record = train_arm(row["arm"], row["devices"], config, out, bench.eval_every_steps)
        row[metric.final_key] = final_value(record, metric)
        row["train_time_s"] = record["train_time_s"]
        row["epochs_log"] = record["epochs_log"]
        curves[f"{row['arm']} K={row['devices']}"] = record["epochs_log"]
    serial = next((r for r in rows if r["arm"] == SERIAL), None)
    target = bench.target
    if target is None and serial is not None and serial[metric.final_key] is not None:
        target = metric.default_target(serial[metric.final_key])
    for row in rows:
        row[metric.target_key] = target
        log = row["epochs_log"]
        row["time_to_target_s"] = time_to_target(log, target, metric) if target is not None else None
    plot_accuracy(out, curves, target, metric)


def mark_best_microbatches(summary: list[dict[str, Any]]) -> None:
    """``best_m``: whether a row is its arm's fastest M at its K (rows without M: True)."""
    for row in summary:
        rivals = [r for r in summary if r["arm"] == row["arm"] and r["devices"] == row["devices"]]
        row["best_m"] = row["step_time_s_median"] == min(r["step_time_s_median"] for r in rivals)


def largest_stash(repeats: list[list[dict[str, int]] | None]) -> list[dict[str, int]] | None:
    """Per rank, the repeat whose stash was largest (None for arms that measure none)."""
    if not repeats or any(r is None for r in repeats):
        return None
    per_rank = zip(*[r for r in repeats if r is not None], strict=True)
    return [max(sizes, key=lambda size: size["total_bytes"]) for sizes in per_rank]


def _summarise(
    arm: str,
    devices: int,
    micro: int | None,
    runs: list[dict[str, Any]],
    config: RunConfig,
    bench: BenchConfig,
) -> dict[str, Any]:
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
        "peak_mem_mb_per_rank": [max(mb) for mb in zip(*(r["peak_mem_mb_per_rank"] for r in runs))],
        "bytes_per_step": statistics.median(r["bytes_per_step"] for r in runs),
        "microbatches": micro,
        "breakdown_ms_per_step": mean_breakdown([r["breakdown_ms_per_rank"] for r in runs]),
        "stash_bytes_per_rank": largest_stash([r["stash_per_rank"] for r in runs]),
        "bounds_per_repeat": [r.get("bounds") for r in runs],
        "pinned": bench.pin_cores,
        "cores_per_rank": runs[0]["cores"],  # where each rank was allowed to run (every repeat alike)
        "steps": bench.steps,
        "warmup_steps": bench.warmup_steps,
        "config": config.to_dict(),
        **environment(),
    }


CONSOLE_COLUMNS = {
    "arm": "arm",
    "K": "devices",
    "step s": "step time (s, median)",
    "samples/s": "samples/s",
    "vs serial": "speedup vs serial",
    "vs pipeline": "speedup vs best pipeline (same K)",
    "bytes/step": "bytes/step",
    "mem MB": "peak mem/worker (MB)",
    "test acc": "final test acc",
    "to target s": "time to target (s)",
}
"""The console table: short names of some of table.md's columns (a denoiser's ``test acc`` is
its final held-out loss, ``DENOISER_COLUMN``)."""

DENOISER_COLUMN = ("held-out loss", "final held-out loss")


def _write(
    out: Path, summary: list[dict[str, Any]], bench: BenchConfig, skipped: list[str], denoiser: bool = False
) -> None:
    command = bench.command_line()
    write_summary(out, command, summary, skipped)
    serial = next((r["step_time_s_median"] for r in summary if r["arm"] == SERIAL), None)
    columns = dict(CONSOLE_COLUMNS)
    final_key = "final_test_acc"
    if denoiser:
        columns = {DENOISER_COLUMN[0] if k == "test acc" else k: v for k, v in columns.items()}
        columns[DENOISER_COLUMN[0]], final_key = DENOISER_COLUMN[1], "final_test_loss"
    table = Table(title="layerpar bench")
    for column in columns:
        table.add_column(column)
    rows = []
    for r in summary:
        step = r["step_time_s_median"]
        probe = registry.ARMS[r["arm"]].measures_contention  # measures the machine, not a method
        pipes = [
            p["step_time_s_median"]
            for p in summary
            if registry.ARMS[p["arm"]].microbatches and p["devices"] == r["devices"]
        ]
        cells = {  # table.md's columns
            "arm": r["arm"] if r["microbatches"] is None else f"{r['arm']} M={r['microbatches']}",
            "devices": str(r["devices"]),
            "step time (s, median)": f"{step:.4f}",
            "spread": f"{r['step_time_s_spread']:.4f}",
            "samples/s": f"{r['samples_per_s']:.0f}",
            "speedup vs serial": f"{serial / step:.2f}x" if serial else "-",
            "speedup vs best pipeline (same K)": f"{min(pipes) / step:.2f}x" if pipes and not probe else "-",
            "bytes/step": f"{r['bytes_per_step']:,.0f}",
            "peak mem/worker (MB)": f"{r['peak_mem_mb']:.0f}",
            columns.get(DENOISER_COLUMN[0], "final test acc"): _fmt(r.get(final_key), ".4f"),
            "time to target (s)": _time_to_target_cell(r, final_key),
        }
        rows.append(cells)
        table.add_row(*(cells[name] for name in columns.values()))
    lines = [f"Command: `{command}`", "", *markdown_table(list(rows[0]), [list(c.values()) for c in rows])]
    lines += ["", *(f"- {note}" for note in skipped)] if skipped else []
    for r in summary:
        if r.get("breakdown_ms_per_step"):
            lines += ["", *breakdown_markdown(r)]
    (out / "table.md").write_text("\n".join(lines) + "\n")
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)
    _plot(out, summary, serial)
    print(f"results: {out}")


def _time_to_target_cell(row: dict[str, Any], final_key: str = "final_test_acc") -> str:
    if row.get(final_key) is None:
        return "not measured"
    value = row.get("time_to_target_s")
    target = row.get("target_acc", row.get("target_loss"))
    if value is not None:
        return f"{value:.1f}"
    return "not reached" if target is None else f"not reached (target {target:.4f})"


def _fmt(value: float | None, spec: str) -> str:
    return "not measured" if value is None else format(value, spec)


def _plot(out: Path, summary: list[dict[str, Any]], serial: float | None) -> None:
    if serial is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    probes = {name for name, spec in registry.ARMS.items() if spec.measures_contention}
    for arm in sorted({r["arm"] for r in summary} - {SERIAL} - probes):
        points = sorted(
            (r["devices"], serial / r["step_time_s_median"])
            for r in summary
            if r["arm"] == arm and r.get("best_m", True)
        )
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=arm)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="serial")
    ax.set_xlabel("devices (K)")
    ax.set_ylabel("step throughput vs serial")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "speedup.png", dpi=120)
    plt.close(fig)
