"""The files and tables of ``layerpar bench --predict``: ``write_predictions`` (predictions.json,
profile.json, scaling.png and predicted_vs_measured.png) and ``print_tables`` (the predicted step
times and the validation, as rich tables).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerpar.bench.costmodel import Link
from layerpar.bench.profile import Profile
from layerpar.bench.registry import SERIAL


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


def _fmt(value: float | None, spec: str = ".4f") -> str:
    return "-" if value is None else format(value, spec)


def print_tables(
    console: Any,
    table_cls: Any,
    profile: Profile,
    rows: Sequence[dict[str, Any]],
    validation: Sequence[dict[str, Any]],
    link: Link,
) -> None:
    """Print the profile and link line, the predicted step times (R = 1) and the validation."""
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
