"""Predictions against measurements: ``load_summary`` reads a ``layerpar bench`` summary.json,
``validate`` pairs its rows with the ``predict.predict_table`` rows and reports the relative
errors (plain, contended and at the run's clock) and the speedups over serial.

The run's clock.  The profile is measured minutes after the arms, on a machine whose speed
drifts (on the 2-core CI VM serial's step has moved by a third between the two), and the
profile-time contention probe need not match the contention while the arms ran.  Two arms of
the same bench run, timed interleaved with the others, measure both: ``serial`` (the clock) and
``contention`` (K serial copies at once).  ``run_clock`` re-predicts every K-device arm with
the run's contention, step_contention(K) / step_serial, and with the cut the arm ran (a ``time``
balance measures the blocks anew at each start, so its cut can differ from the profile's), and
rescales it by step_serial measured / predicted.  Serial's own error is then zero by
construction (it is the anchor, reported as such); every other arm's error at the run's clock
is what the model's structure misses.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layerpar.bench import registry
from layerpar.bench.costmodel import Link
from layerpar.bench.predict import predict_table, sweeps_microbatches
from layerpar.bench.profile import Profile
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
            clocked = p.get("step_time_s_run_clock")
            probe = arm == SERIAL or (arm in registry.ARMS and registry.ARMS[arm].measures_contention)
            if probe and clocked is not None:  # the run's clock is read off these two arms
                row["run_clock_anchor"] = True
            elif clocked is not None:
                row["predicted_run_clock_s"] = clocked
                row["rel_error_run_clock"] = (clocked - measured) / measured
                if p.get("rank_compute_s_run_clock"):
                    row["predicted_rank_compute_run_clock_s"] = p["rank_compute_s_run_clock"]
        out.append(row)
    return out


def load_summary(path: Path) -> tuple[str | None, list[dict[str, Any]]]:
    """(command, rows) of a ``layerpar bench`` summary.json."""
    data = json.loads(Path(path).read_text())
    if not isinstance(data, dict) or "results" not in data:
        raise ConfigError(f"{path} is not a layerpar bench summary.json (expected an object with 'results')")
    return data.get("command"), list(data["results"])


def run_contention(measured_summary_rows: Sequence[dict[str, Any]]) -> dict[int, float]:
    """Contention per device count, measured in the run: the ``contention`` arm's step over
    serial's (empty without both)."""
    serial = next((float(m["step_time_s_median"]) for m in measured_summary_rows if m["arm"] == SERIAL), None)
    if serial is None:
        return {}
    return {
        int(m["devices"]): float(m["step_time_s_median"]) / serial
        for m in measured_summary_rows
        if registry.ARMS.get(m["arm"]) is not None and registry.ARMS[m["arm"]].measures_contention
    }


def run_clock(
    rows: list[dict[str, Any]],
    measured_summary_rows: Sequence[dict[str, Any]],
    profile: Profile,
    *,
    arms: Sequence[str],
    replicas: Sequence[int],
    link: Link,
    microbatches: Sequence[int],
) -> dict[int, float]:
    """Add ``step_time_s_run_clock`` to the rows of every K whose contention the run measured
    (module docstring); returns that contention per K."""
    contention = run_contention(measured_summary_rows)
    serial_measured = next(
        (float(m["step_time_s_median"]) for m in measured_summary_rows if m["arm"] == SERIAL), None
    )
    serial_row = next((r for r in rows if r["arm"] == SERIAL and r.get("step_time_s")), None)
    if not contention or serial_measured is None or serial_row is None:
        return {}
    scale = serial_measured / serial_row["step_time_s"]
    serial_row["step_time_s_run_clock"] = serial_measured
    others = [a for a in arms if a != SERIAL]
    cuts = {measured_cut(measured_summary_rows, row) for row in rows}
    for devices, factor in contention.items():
        for cut in cuts:  # each arm with the cut it ran (a ``time`` balance may differ per run)
            cut_profile = profile if cut is None else profile.with_cut(cut)
            again = predict_table(
                cut_profile, [devices], replicas, others, link, microbatches, contention=factor
            )
            for new in again:
                if new.get("step_time_s") is None:
                    continue
                for row in rows:
                    same = all(row[k] == new[k] for k in ("arm", "stages", "replicas", "microbatches"))
                    if same and measured_cut(measured_summary_rows, row) == cut:
                        row["step_time_s_run_clock"] = scale * new["step_time_s"]
                        row["rank_compute_s_run_clock"] = [scale * c for c in new.get("rank_compute_s", [])]
                        row["run_clock_cut"] = None if cut is None else list(cut)
    return contention


def measured_cut(
    measured_summary_rows: Sequence[dict[str, Any]], prediction: dict[str, Any]
) -> tuple[int, ...] | None:
    """The cut the measured run of ``prediction``'s arm ran most often over its repeats (None:
    not recorded, as in summaries older than the record, or an arm that cuts nothing)."""
    for m in measured_summary_rows:
        if _match([prediction], m["arm"], int(m["devices"]), m.get("microbatches")) is not prediction:
            continue
        cuts = [tuple(c) for c in m.get("bounds_per_repeat") or [] if c]
        return Counter(cuts).most_common(1)[0][0] if cuts else None
    return None
