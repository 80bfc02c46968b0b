"""The scaling model (``layerpar bench --predict``) against measurement, and one-device runs.

A bench folder's ``predict/predictions.json`` validates the model against every measured arm;
``predict/profile.json`` holds the profiled forward times.  Blocks ``bench-one-device`` and
``costmodel``; values ``model-error``, ``costmodel-range`` and ``forward-ms``.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerpar.report.bench import bench_summary, pick, step_ratio
from layerpar.report.results import (
    Record,
    ReportError,
    Results,
    Table,
    device_name,
    one_arg,
    recorded_commands,
    signed,
    times,
)


def one_device_table(results: Results, args: Sequence[str]) -> Table:
    """A `layerpar bench --one-device` run: each K's slowest stage, its stages, and the scaling
    model's prediction for K devices with its error."""
    folder = one_arg("bench-one-device", args)
    summary = bench_summary(results, folder)
    predictions = results.load(f"{folder}/predict/predictions.json")
    link = predictions["link"]["name"]
    header = ("arm", "K", "step (ms)", "per-stage step (ms)", "vs serial", f"model, {link} (ms)")
    rows = [_one_device_row(summary, predictions, r) for r in summary["results"]]
    sources = (f"{folder}/summary.json", f"{folder}/predict/predictions.json")
    note = (
        f"Measured on one {device_name(pick(summary, 'serial'))}: each stage's phases run in turn, "
        "so a K row is the step K devices would take without communication.",
    )
    return Table(header, rows, sources, recorded_commands([summary]), note)


def _one_device_row(summary: Record, predictions: Record, r: Record) -> tuple[str, ...]:
    stages = [1000 * float(s) for s in r.get("stage_step_s_median", [])]
    shown = (
        ", ".join(f"{s:.1f}" for s in stages)
        if len(stages) <= 4
        else f"{min(stages):.1f} … {max(stages):.1f}"
    )
    model = validation(predictions, r["arm"], int(r["devices"]))
    predicted = f"{1000 * float(model['predicted_s']):.1f} ({signed(100 * float(model['rel_error']), 0)} %)"
    return (
        r["arm"],
        str(r["stages"]),
        f"{1000 * float(r['step_time_s_median']):.1f}",
        shown,
        times(step_ratio(summary, r)),
        predicted,
    )


def validation(predictions: Record, arm: str, devices: int) -> Record:
    """The scaling model's check against one measured arm (``predict/predictions.json``)."""
    for entry in predictions["validation"]:
        if entry["arm"] == arm and int(entry["devices"]) == devices and entry.get("predicted_s") is not None:
            return entry
    raise ReportError(f"the scaling model made no prediction for {arm} on {devices} devices")


def costmodel_table(results: Results, args: Sequence[str]) -> Table:
    """The scaling model (``--predict``) against every measured arm of the matching bench folders:
    the evidence for any "the model is within x %" sentence."""
    pattern = one_arg("costmodel", args)
    paths = results.glob(f"{pattern}/predict/predictions.json")
    header = (
        "bench run",
        "arm",
        "devices",
        "measured (s)",
        "predicted (s)",
        "error",
        "error, contention-corrected",
        "error, run's clock",
    )
    rows, records = [], []
    for path in paths:
        predictions = results.load(path)
        records.append(predictions)
        run = path.split("/predict/")[0].removeprefix("bench/")
        rows += [
            _costmodel_row(run, e) for e in predictions["validation"] if e.get("predicted_s") is not None
        ]
    return Table(header, rows, (f"{pattern}/predict/predictions.json",), recorded_commands(records))


def _costmodel_row(run: str, e: Record) -> tuple[str, ...]:
    contended = e.get("rel_error_contended")
    clocked = e.get("rel_error_run_clock")
    clock_cell = "anchor" if e.get("run_clock_anchor") else ""
    if clocked is not None:  # one decimal: the column is read against a 15 % line
        clock_cell = f"{signed(100 * float(clocked), 1)} %"
    m = e.get("microbatches")
    return (
        run,
        e["arm"] if m is None else f"{e['arm']}, M = {m}",
        str(e["devices"]),
        f"{float(e['measured_s']):.3f}",
        f"{float(e['predicted_s']):.3f}",
        f"{signed(100 * float(e['rel_error']), 0)} %",
        f"{signed(100 * float(contended), 0)} %" if contended is not None else "",
        clock_cell,
    )


def value_model_error(results: Results, args: Sequence[str]) -> str:
    """``model-error ARM@K FOLDER...``: the scaling model's error for one arm, or its range over
    several bench runs (``24–80``, unsigned when every error has the same sign)."""
    if len(args) < 2:
        raise ReportError(f"model-error takes ARM[@K] FOLDER..., got {list(args)}")
    name, _, devices = args[0].partition("@")
    errors = [
        100
        * float(
            validation(results.load(f"{f}/predict/predictions.json"), name, int(devices or 1))["rel_error"]
        )
        for f in args[1:]
    ]
    return error_range(errors)


def error_range(errors: Sequence[float], digits: int = 0) -> str:
    """One error signed (``+80 %``); several as a range, unsigned when all share a sign (``24–80 %``:
    the sentence says over or under), signed where they straddle zero; ``digits`` decimals."""
    if len(errors) == 1:
        return f"{signed(errors[0], digits)} %"
    if min(errors) < 0 < max(errors):
        return f"{signed(min(errors), digits)} to {signed(max(errors), digits)} %"
    low, high = sorted(abs(e) for e in (min(errors), max(errors)))
    return f"{low:.{digits}f}–{high:.{digits}f} %"


def value_costmodel_range(results: Results, args: Sequence[str]) -> str:
    """``costmodel-range GLOB [run-clock]``: the scaling model's error range over every arm of the
    matching runs; with ``run-clock``, its error at the run's clock (``bench/validate.py``) over
    every arm that is not one of the clock's two anchors."""
    if not 1 <= len(args) <= 2 or (len(args) == 2 and args[1] != "run-clock"):
        raise ReportError(f"costmodel-range takes GLOB [run-clock], got {list(args)}")
    key = "rel_error_run_clock" if len(args) == 2 else "rel_error"
    paths = results.glob(f"{args[0]}/predict/predictions.json")
    errors = [
        100 * float(e[key])
        for p in paths
        for e in results.load(p)["validation"]
        if e.get("predicted_s") is not None and e.get(key) is not None
    ]
    if not errors:
        raise ReportError(f"no {key} in {args[0]}/predict/predictions.json")
    # one decimal at the run's clock, as its table column: it is read against a 15 % line
    return error_range(errors, 1 if len(args) == 2 else 0)


def value_forward_ms(results: Results, args: Sequence[str]) -> str:
    """``forward-ms FOLDER``: the range of the whole forward's time over the profiled batch sizes,
    with those sizes (the evidence that a GPU step is launch-bound)."""
    profile = results.load(f"{one_arg('forward-ms', args)}/predict/profile.json")
    timings = {int(t["batch"]): 1000 * sum(map(float, t["forward_s"])) for t in profile["timings"]}
    return (
        f"{min(timings.values()):.1f}–{max(timings.values()):.1f} ms at every batch size from "
        f"{min(timings)} to {max(timings)}"
    )


def stash_table(results: Results, args: Sequence[str]) -> Table:
    """``stash FOLDER``: the pipelined method's largest stash per module, predicted by the cost
    model (``bench/stash_model.py``) beside what the bench measured (``parallel/stash_meter.py``)."""
    folder = one_arg("stash", args)
    predictions = results.load(f"{folder}/predict/predictions.json")
    rows_in = predictions.get("stash_validation") or []
    if not rows_in:
        raise ReportError(f"results/{folder}/predict/predictions.json has no stash validation rows")
    header = (
        "K",
        "module",
        "micro-batches in flight",
        "weight versions",
        "weights (MB)",
        "activations (MB)",
        "total (MB)",
        "error",
    )
    rows = [_stash_row(r) for r in rows_in]
    notes = ("Each cell: predicted / measured, at the module's fullest (just after a forward).",)
    return Table(
        header, rows, (f"{folder}/predict/predictions.json",), recorded_commands([predictions]), notes
    )


def _stash_row(r: Record) -> tuple[str, ...]:
    p, m = r["predicted"], r["measured"]

    def pair(name: str, scale: float = 1.0, digits: int = 0) -> str:
        return f"{float(p[name]) / scale:.{digits}f} / {float(m[name]) / scale:.{digits}f}"

    error = r.get("total_error")
    return (
        str(r["stages"]),
        str(r["stage"]),
        pair("micro_batches"),
        pair("weight_versions"),
        pair("weight_bytes", 1e6, 2),
        pair("activation_bytes", 1e6, 2),
        pair("total_bytes", 1e6, 2),
        "–" if error is None else f"{signed(100 * float(error), 0)} %",
    )
