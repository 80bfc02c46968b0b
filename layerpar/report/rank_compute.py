"""Where the scaling model misses a pipeline arm: its compute per rank, measured and predicted.

A bench run with ``--predict`` holds, for each pipeline arm, every rank's measured breakdown
(``summary.json``: forward, backward and its split halves, p2p posts and waits, the loss, the
rest; ``bench/pipeline_clock.py``) and the model's compute of the same rank's actions at the
run's clock (``predict/predictions.json``: ``predicted_rank_compute_run_clock_s``).  Their
ratio says how much the compute itself was slower than the profile's; the runtime's own parts
(posting messages, the loss, the remainder) are what the model adds nothing for.  Block
``rank-compute``.
"""

from __future__ import annotations

from collections.abc import Sequence

from layerpar.report.bench import bench_summary
from layerpar.report.results import Record, ReportError, Results, Table, one_arg, recorded_commands

COMPUTE_PARTS = ("forward", "backward", "backward: input", "backward: weight")
RUNTIME_PARTS = ("post p2p", "loss", "other (Python, bookkeeping)")


def rank_compute_table(results: Results, args: Sequence[str]) -> Table:
    """``rank-compute FOLDER``: a row per pipeline arm (and M) of the run: per rank, measured
    compute, the model's at the run's clock, and the runtime's own milliseconds."""
    folder = one_arg("rank-compute", args)
    summary = bench_summary(results, folder)
    predictions = results.load(f"{folder}/predict/predictions.json")
    header = (
        "arm",
        "compute, measured (ms per rank)",
        "compute, model at the run's clock",
        "measured ÷ model",
        "posting, loss and the rest (ms per rank)",
    )
    rows = []
    for entry in predictions["validation"]:
        model = entry.get("predicted_rank_compute_run_clock_s")
        measured = _breakdown(summary, entry)
        if model and measured:
            rows.append(_row(entry, measured, [1000 * float(s) for s in model]))
    if not rows:
        raise ReportError(f"results/{folder}: no arm with both a breakdown and a per-rank prediction")
    sources = (f"{folder}/summary.json", f"{folder}/predict/predictions.json")
    return Table(header, rows, sources, recorded_commands([summary]))


def _breakdown(summary: Record, entry: Record) -> list[Record] | None:
    for r in summary["results"]:
        if r["arm"] == entry["arm"] and r.get("microbatches") == entry.get("microbatches"):
            return r.get("breakdown_ms_per_step")
    return None


def _row(entry: Record, measured: Sequence[Record], model: Sequence[float]) -> tuple[str, ...]:
    compute = [sum(float(rank.get(p, 0.0)) for p in COMPUTE_PARTS) for rank in measured]
    runtime = [sum(float(rank.get(p, 0.0)) for p in RUNTIME_PARTS) for rank in measured]
    m = entry.get("microbatches")

    def cells(values: Sequence[float], spec: str) -> str:
        return " / ".join(format(v, spec) for v in values)

    return (
        entry["arm"] if m is None else f"{entry['arm']}, M = {m}",
        cells(compute, ".0f"),
        cells(model, ".0f"),
        cells([c / p if p else float("nan") for c, p in zip(compute, model)], ".2f"),
        cells(runtime, ".0f"),
    )
