"""Predictions against measurements: ``load_summary`` reads a ``layerpar bench`` summary.json,
``validate`` pairs its rows with the ``predict.predict_table`` rows and reports the relative
errors (plain and, when measured, contended) and the speedups over serial.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerpar.bench.predict import sweeps_microbatches
from layerpar.bench.registry import SERIAL
from layerpar.errors import ConfigError


def _match(
    predictions: Sequence[dict[str, Any]], arm: str, devices: int, microbatches: int | None
) -> dict[str, Any] | None:
    for p in predictions:
        if p["arm"] != arm or p["replicas"] != 1 or p.get("step_time_s") is None:
            continue
        same_m = not sweeps_microbatches(arm) or p["microbatches"] == microbatches
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


def load_summary(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(command, rows) of a ``layerpar bench`` summary.json."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "results" not in data:
        raise ConfigError(f"{path} is not a layerpar bench summary.json (expected an object with 'results')")
    return data.get("command"), list(data["results"])
