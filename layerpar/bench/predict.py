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
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from layerpar.bench import registry
from layerpar.bench.costmodel import Link, Prediction, get_link
from layerpar.bench.profile import Profile, measure_profile, partition_bounds
from layerpar.bench.registry import SERIAL
from layerpar.config import RunConfig
from layerpar.errors import ConfigError


def predict(
    arm: str,
    profile: Profile,
    stages: int = 1,
    replicas: int = 1,
    *,
    link: Link,
    microbatches: int = 4,
    contention: float = 1.0,
) -> Prediction | None:
    """Predicted step of ``arm`` on ``stages`` × ``replicas`` devices (None: cannot be laid out),
    by the arm's ``predict`` hook in the registry."""
    _check_modelled([arm])
    hook = registry.ARMS[arm].predict
    assert hook is not None
    return hook(profile, stages, replicas, link=link, microbatches=microbatches, contention=contention)


def _check_modelled(arms: Sequence[str]) -> None:
    registry.check(arms)
    missing = [a for a in arms if registry.ARMS[a].predict is None]
    if missing:
        raise ConfigError(f"no cost model for arm(s) {missing}; valid: {', '.join(registry.predictable())}")


def _sweeps_microbatches(arm: str) -> bool:
    spec = registry.ARMS.get(arm)
    return spec is not None and spec.microbatches


def predict_table(
    profile: Profile,
    stages_list: Iterable[int] = range(1, 65),
    replicas_list: Iterable[int] = (1,),
    arms: Sequence[str] | None = None,
    link: Link | None = None,
    microbatches: int | Iterable[int] = 4,
    contention: float = 1.0,
) -> list[dict[str, Any]]:
    """One row per arm × K × R (× M for pipelines); ``step_time_s`` is None, with a ``note``
    saying why, where the layout is impossible (K beyond the number of blocks, a shard or
    micro-batch smaller than one sample) or the profile lacks that K's AuxNet timings.
    Serial appears once (K = R = 1).  ``arms``: default every arm with a cost model."""
    link = link or get_link()
    arms = registry.predictable() if arms is None else arms
    _check_modelled(arms)
    ms = [microbatches] if isinstance(microbatches, int) else list(microbatches)
    baseline = predict(SERIAL, profile, link=link)
    assert baseline is not None
    serial_s = baseline.step_s
    rows = []
    for arm in arms:
        one = registry.ARMS[arm].devices == "one"
        layouts = [(1, 1)] if one else [(k, r) for k in stages_list for r in replicas_list]
        for k, r in layouts:
            for m in ms if _sweeps_microbatches(arm) else [None]:
                row: dict[str, Any] = {
                    "arm": arm,
                    "stages": k,
                    "replicas": r,
                    "devices": k * r,
                    "microbatches": m,
                    "link": link.name,
                    "contention": contention,
                }
                try:
                    p = predict(arm, profile, k, r, link=link, microbatches=m or 1, contention=contention)
                except KeyError as missing:  # the profile lacks this K's AuxNet
                    row.update(step_time_s=None, note=str(missing.args[0]))
                    rows.append(row)
                    continue
                if p is None:
                    row.update(step_time_s=None, note=_why_not(profile, arm, k, r, m))
                else:
                    row.update(
                        step_time_s=p.step_s,
                        speedup_vs_serial=serial_s / p.step_s,
                        samples_per_s=profile.batch_size / p.step_s,
                        compute_s=p.compute_s,
                        comm_s=p.comm_s,
                        bounds=list(p.bounds),
                        stage_s=list(p.stage_s),
                    )
                rows.append(row)
    return rows


def _why_not(profile: Profile, arm: str, k: int, r: int, m: int | None) -> str:
    splits = registry.ARMS[arm].splits_model
    if splits and partition_bounds(profile, k) is None:
        return f"cannot cut {profile.num_blocks} blocks into {k} stages"
    if not splits:
        return f"batch {profile.batch_size} cannot be sharded over {k * r} devices"
    if m is not None:
        return f"batch {profile.batch_size} / {r} replicas cannot make {m} micro-batches"
    return f"batch {profile.batch_size} cannot be sharded over {r} replicas"


def _match(
    predictions: Sequence[dict[str, Any]], arm: str, devices: int, microbatches: int | None
) -> dict[str, Any] | None:
    for p in predictions:
        if p["arm"] != arm or p["replicas"] != 1 or p.get("step_time_s") is None:
            continue
        same_m = not _sweeps_microbatches(arm) or p["microbatches"] == microbatches
        if arm == SERIAL or (p["devices"] == devices and same_m):
            return p
    return None


def validate(
    predictions: Sequence[dict[str, Any]], measured_summary_rows: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """For each measured arm/K (a ``layerpar bench`` summary row): predicted and measured step
    seconds and the relative error (predicted − measured) / measured; with a serial row on both
    sides also the speedups over serial and their relative error; with a contended prediction
    (``step_time_s_contended``) its error too."""
    out = []
    serial_measured = next(
        (float(m["step_time_s_median"]) for m in measured_summary_rows if m["arm"] == SERIAL), None
    )
    serial_predicted = next((p["step_time_s"] for p in predictions if p["arm"] == SERIAL), None)
    for m in measured_summary_rows:
        arm, devices, mb = m["arm"], int(m["devices"]), m.get("microbatches")
        p = _match(predictions, arm, devices, mb)
        measured = float(m["step_time_s_median"])
        row: dict[str, Any] = {
            "arm": arm,
            "devices": devices,
            "microbatches": mb,
            "measured_s": measured,
            "measured_spread_s": m.get("step_time_s_spread"),
            "predicted_s": None,
            "rel_error": None,
        }
        if p is not None:
            row["predicted_s"] = p["step_time_s"]
            row["rel_error"] = (p["step_time_s"] - measured) / measured
            if serial_measured is not None and serial_predicted is not None:
                # Speedups over serial measured in the same run: machine-wide drift cancels.
                row["measured_speedup"] = serial_measured / measured
                row["predicted_speedup"] = serial_predicted / p["step_time_s"]
                row["speedup_rel_error"] = row["predicted_speedup"] / row["measured_speedup"] - 1
            contended = p.get("step_time_s_contended")
            if contended is not None:
                row["predicted_contended_s"] = contended
                row["rel_error_contended"] = (contended - measured) / measured
        out.append(row)
    return out


def write_predictions(
    out_dir: Path,
    profile: Profile,
    predictions: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]] = (),
    link: Link | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """Write predictions.json, profile.json, scaling.png and (with validation rows)
    predicted_vs_measured.png under ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "predictions": out_dir / "predictions.json",
        "profile": out_dir / "profile.json",
        "scaling": out_dir / "scaling.png",
    }
    payload = {
        **(extra or {}),
        "link": dataclasses.asdict(link) if link else None,
        "predictions": list(predictions),
        "validation": list(validation),
    }
    paths["predictions"].write_text(json.dumps(payload, indent=2) + "\n")
    profile.save(paths["profile"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    lines = [
        (arm, m)
        for arm in dict.fromkeys(r["arm"] for r in predictions)
        if arm != SERIAL
        for m in dict.fromkeys(r["microbatches"] for r in predictions if r["arm"] == arm)
    ]
    for arm, m in lines:
        points = sorted(
            (r["devices"], r["speedup_vs_serial"])
            for r in predictions
            if r["arm"] == arm
            and r["replicas"] == 1
            and r.get("step_time_s") is not None
            and r["microbatches"] == m
        )
        if points:
            # 1F1B has GPipe's bubble in this model: dashed, so both stay visible.
            ax.plot(
                [p[0] for p in points],
                [p[1] for p in points],
                marker=".",
                linestyle="--" if arm == "1f1b" else "-",
                label=arm + (f" M={m}" if m else ""),
            )
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="serial")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("devices K (stages; DDP: replicas)")
    ax.set_ylabel("predicted speedup vs serial")
    ax.set_title(f"{profile.model} · batch {profile.batch_size} · {link.name if link else ''}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(paths["scaling"], dpi=120)
    plt.close(fig)

    checked = [v for v in validation if v.get("predicted_s") is not None]
    if checked:
        paths["predicted_vs_measured"] = out_dir / "predicted_vs_measured.png"
        fig, ax = plt.subplots(figsize=(4.5, 4.2))
        values = [v["measured_s"] for v in checked] + [v["predicted_s"] for v in checked]
        values += [v["predicted_contended_s"] for v in checked if "predicted_contended_s" in v]
        lo, hi = min(values) * 0.8, max(values) * 1.2
        ax.plot([lo, hi], [lo, hi], color="grey", linestyle="--", linewidth=1, label="y = x")
        for i, arm in enumerate(dict.fromkeys(v["arm"] for v in checked)):
            mine = [v for v in checked if v["arm"] == arm]
            color = f"C{i}"
            ax.scatter(
                [v["measured_s"] for v in mine], [v["predicted_s"] for v in mine], color=color, label=arm
            )
            contended = [v for v in mine if "predicted_contended_s" in v]
            if contended and arm != SERIAL:
                ax.scatter(
                    [v["measured_s"] for v in contended],
                    [v["predicted_contended_s"] for v in contended],
                    facecolors="none",
                    edgecolors=color,
                )
            for v in mine:
                ax.annotate(
                    f"K={v['devices']}",
                    (v["measured_s"], v["predicted_s"]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel("measured step (s)")
        ax.set_ylabel("predicted step (s)")
        ax.set_title("filled: ideal devices; hollow: with measured contention", fontsize=8)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(paths["predicted_vs_measured"], dpi=120)
        plt.close(fig)
    return paths


def load_summary(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(command, rows) of a ``layerpar bench`` summary.json."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "results" not in data:
        raise ConfigError(f"{path} is not a layerpar bench summary.json (expected an object with 'results')")
    return data.get("command"), list(data["results"])


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
        )
    rows = predict_table(profile, stages, replicas, arms, link, ms)
    if profile.contention is not None:
        contended = predict_table(profile, stages, replicas, arms, link, ms, contention=profile.contention)
        for row, other in zip(rows, contended):
            row["step_time_s_contended"] = other["step_time_s"]
    validation = validate(rows, measured) if measured else []
    extra = {
        "config": config.to_dict(),
        "measured_command": command,
        "measured_summary": str(measured_summary) if measured_summary else None,
        "contention": profile.contention,
    }
    paths = write_predictions(Path(out_dir), profile, rows, validation, link, extra)
    _print(console, Table, profile, rows, validation, link)
    console.print("written: " + ", ".join(str(p) for p in paths.values()))
    return {
        **extra,
        "link": dataclasses.asdict(link),
        "predictions": rows,
        "validation": validation,
        "paths": {k: str(v) for k, v in paths.items()},
    }


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


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def _print(
    console: Any,
    table_cls: Any,
    profile: Profile,
    rows: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]],
    link: Link,
) -> None:
    contention = profile.contention
    console.print(
        f"profile: {profile.device}; contention factor: "
        f"{'not measured' if contention is None else f'{contention:.2f}'}; link {link.name}: "
        f"{link.latency_s * 1e6:.1f} µs, {link.bandwidth_Bps / 1e9:.1f} GB/s"
    )
    table = table_cls(title="predicted step time (s), R = 1")
    columns = [
        (arm, m)
        for arm in dict.fromkeys(r["arm"] for r in rows)
        for m in dict.fromkeys(r["microbatches"] for r in rows if r["arm"] == arm)
    ]
    table.add_column("K", justify="right")
    for arm, m in columns:
        table.add_column(arm + (f" M={m}" if m else ""), justify="right")
    ks = sorted({r["stages"] for r in rows if r["replicas"] == 1})
    for k in [k for k in ks if k <= 8 or k in (16, 32, 64)]:
        cells = []
        for arm, m in columns:
            hit = [
                r
                for r in rows
                if r["arm"] == arm and r["microbatches"] == m and r["replicas"] == 1 and r["stages"] == k
            ]
            cells.append(_fmt(hit[0]["step_time_s"]) if hit else "")
        table.add_row(str(k), *cells)
    console.print(table)
    if validation:
        check = table_cls(title="validation: predicted vs measured step time")
        for column in (
            "arm",
            "K",
            "M",
            "measured s",
            "predicted s",
            "error",
            "contended s",
            "error (contended)",
            "speedup meas/pred",
        ):
            check.add_column(column, justify="right" if column not in ("arm",) else "left")
        for v in validation:
            speedups = (
                f"{v['measured_speedup']:.2f}/{v['predicted_speedup']:.2f}"
                if "measured_speedup" in v
                else "-"
            )
            check.add_row(
                v["arm"],
                str(v["devices"]),
                str(v["microbatches"] or "-"),
                _fmt(v["measured_s"]),
                _fmt(v["predicted_s"]),
                _fmt(v["rel_error"], "+.1%"),
                _fmt(v.get("predicted_contended_s")),
                _fmt(v.get("rel_error_contended"), "+.1%"),
                speedups,
            )
        console.print(check)
