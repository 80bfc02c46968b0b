"""``layerpar bench --predict``: profile once, predict every arm for K = 1…64, check against
measurements.

``run_predict`` measures a ``Profile`` of the config on one device of this machine (one CPU
core with one thread, as the multi-process arms use; with ``--one-device --device cuda``, the
GPU), feeds it to every arm's cost model (``registry.ArmSpec.predict``, formulas in
``costmodel.py``) with a link model, and writes ``predictions.json``, ``profile.json``,
``scaling.png`` (predicted speedup vs K) and, given a ``layerpar bench`` summary.json,
``predicted_vs_measured.png`` with a table of the relative errors.

Two prediction columns.  ``step_time_s`` assumes every device is as fast as the profiled one
while all of them run at once (true for one GPU per worker).  On a small CPU machine, concurrent
single-thread workers slow each other down; when the contention factor was measured
(``Profile.contention``) ``step_time_s_contended`` applies it to multi-device arms, and the
validation reports both errors.  The profile itself is measured single-process, one thread.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from layerpar.bench import registry
from layerpar.bench.costmodel import get_link
from layerpar.bench.predict import predict_table
from layerpar.bench.predict_report import print_tables, write_predictions
from layerpar.bench.profile import Profile
from layerpar.bench.profile_measure import measure_profile
from layerpar.bench.profile_runtime import SCHEDULES as RUNTIME_SCHEDULES
from layerpar.bench.registry import SERIAL
from layerpar.bench.stash_model import stash_validation
from layerpar.bench.validate import load_summary, run_clock, validate
from layerpar.config import RunConfig
from layerpar.errors import ConfigError


def check_predictable(config: RunConfig) -> None:
    """The per-block profile times blocks without a conditioning input: a denoiser's (which
    embed ``(time, label)``) cannot be profiled yet, so ``--predict`` refuses it up front."""
    if config.is_diffusion:
        raise ConfigError(
            f"--predict does not profile diffusion denoisers yet (model {config.model.name!r}): "
            "its per-block profile feeds blocks no conditioning; run layerpar bench without --predict"
        )


def run_predict(
    config: RunConfig,
    *,
    stages_list: Iterable[int] = range(1, 65),
    replicas_list: Iterable[int] = (1,),
    arms: Sequence[str] | None = None,
    link_name: str = "gloo-loopback",
    latency_s: float | None = None,
    bandwidth: float | None = None,
    microbatches: int | Iterable[int] = 4,
    measured_summary: Path | None = None,
    out_dir: Path,
    device: str = "cpu",
    repeats: int = 5,
    contention: bool = True,
    profile: Profile | Path | None = None,
) -> dict[str, Any]:
    """Profile ``config`` on ``device``, predict every arm, validate against ``measured_summary``.

    Args:
        stages_list, replicas_list: the K (stages) and R (replicas) to predict; each layout uses
            K × R devices.  Measured K and M from the summary are added automatically.
        arms: the arms to predict (default: every arm of the registry with a cost model; others
            are skipped with a warning).
        link_name, latency_s, bandwidth: a named link of ``costmodel.LINKS``, optionally with
            its latency (s) and bandwidth (bytes/s) overridden.
        microbatches: M (or several) for the pipeline arms.
        measured_summary: a ``layerpar bench`` summary.json to validate against.
        contention: on a CPU, measure the contention factor (spawns one process) and report a
            second, contended prediction for multi-device arms.
        profile: reuse a saved profile (a Profile or a profile.json path) instead of measuring.

    Returns the content of predictions.json plus ``paths`` (the files written).
    """
    from rich.console import Console
    from rich.table import Table

    if profile is None:
        check_predictable(config)
    console = Console()
    stages = sorted(set(stages_list))
    replicas = sorted(set(replicas_list))
    ms = sorted({microbatches} if isinstance(microbatches, int) else set(microbatches))
    command: str | None = None
    measured: list[dict[str, Any]] = []
    if measured_summary is not None:
        command, measured = load_summary(measured_summary)
        stages = sorted(set(stages) | {int(r["devices"]) for r in measured if r["arm"] != SERIAL})
        ms = sorted(set(ms) | {int(r["microbatches"]) for r in measured if r.get("microbatches")})
        _warn_if_different(console, config, measured)
    link = get_link(link_name, latency_s=latency_s, bandwidth_Bps=bandwidth)
    modelled = registry.predictable()
    arms = modelled if arms is None else arms
    skipped = [a for a in arms if a not in modelled]
    if skipped:
        console.print(
            f"[yellow]no cost model for arm(s) {skipped}; predicting {', '.join(modelled)} only[/yellow]"
        )
    arms = [a for a in arms if a in modelled]
    if isinstance(profile, (str, Path)):
        profile = Profile.load(profile)
    if profile is None:
        console.print(f"profiling {config.model.name} on {device} (batch {config.train.batch_size}) ...")
        profile = measure_profile(
            config,
            device=device,
            repeats=repeats,
            stages=[k for k in stages if k >= 2],
            microbatches=ms,
            replicas=replicas,
            contention=contention,
            # torch's pipeline runtime per schedule and M, for the pipeline arms predicted, at the
            # K the run measured (else the smallest K; other K use the nearest one measured)
            schedules=[a for a in arms if a in RUNTIME_SCHEDULES],
            runtime_stages=_runtime_stages(stages, measured),
        )
    rows = predict_table(profile, stages, replicas, arms, link, ms)
    if profile.contention is not None:
        contended = predict_table(profile, stages, replicas, arms, link, ms, contention=profile.contention)
        for row, other in zip(rows, contended):
            row["step_time_s_contended"] = other["step_time_s"]
    clock = run_clock(rows, measured, profile, arms=arms, replicas=replicas, link=link, microbatches=ms)
    validation = validate(rows, measured) if measured else []
    extra = {
        "config": config.to_dict(),
        "measured_command": command,
        "measured_summary": str(measured_summary) if measured_summary else None,
        "contention": profile.contention,
        "run_contention": {str(k): v for k, v in clock.items()},
        "stash_validation": stash_validation(profile, measured) if measured else [],
    }
    paths = write_predictions(Path(out_dir), profile, rows, validation, link, extra)
    print_tables(console, Table, profile, rows, validation, link)
    console.print("written: " + ", ".join(str(p) for p in paths.values()))
    return {
        **extra,
        "link": dataclasses.asdict(link),
        "predictions": rows,
        "validation": validation,
        "paths": {k: str(v) for k, v in paths.items()},
    }


def _runtime_stages(stages: Sequence[int], measured: Sequence[dict[str, Any]]) -> list[int]:
    """The K at which to probe torch's pipeline runtime (it spawns K processes per K)."""
    ran = sorted({int(r["devices"]) for r in measured if r["arm"] in RUNTIME_SCHEDULES})
    return ran or [k for k in stages if k >= 2][:1]


def _warn_if_different(console: Any, config: RunConfig, measured: Sequence[dict[str, Any]]) -> None:
    for row in measured:
        c = row.get("config") or {}
        theirs = (
            c.get("model", {}).get("name"),
            c.get("data", {}).get("dataset"),
            c.get("train", {}).get("batch_size"),
        )
        mine = (config.model.name, config.data.dataset, config.train.batch_size)
        if c and theirs != mine:
            console.print(
                f"[yellow]warning: measured {row['arm']} used model/data/batch {theirs}, "
                f"the prediction {mine}: errors compare different runs[/yellow]"
            )
            return
