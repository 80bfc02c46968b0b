"""The same bench command run several times (other invocations, other commits, pinned or not):
one row per run with the ratios a target is judged on, and their mean ± std, so that a headline
speedup is read beside every run of its command, not picked from them.  Block ``bench-runs``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from layerpar.report.bench import bench_summary, pick, pipeline_ratio, step_ratio
from layerpar.report.results import Record, ReportError, Results, Table, recorded_commands, times


def bench_runs_table(results: Results, args: Sequence[str]) -> Table:
    """``bench-runs FOLDER FOLDER...``: per run, its commit, whether its ranks were pinned,
    serial's step, the machine's two-process ceiling (``contention`` arm), and layerpar's and
    DDP's ratios; a last row of mean ± std over the runs."""
    if len(args) < 2:
        raise ReportError(f"bench-runs takes two bench folders or more, got {list(args)}")
    summaries = [bench_summary(results, folder) for folder in args]
    header = (
        "run",
        "commit",
        "cores",
        "serial step (ms)",
        "ceiling",
        "layerpar vs serial",
        "DDP vs serial",
        "layerpar vs DDP",
        "layerpar vs best pipeline",
    )
    ratios = [_ratios(s) for s in summaries]
    rows = [_row(folder, s, r) for folder, s, r in zip(args, summaries, ratios, strict=True)]
    rows.append(("mean ± std", "", "", "", *(_mean_std(column) for column in zip(*ratios, strict=True))))
    return Table(header, rows, tuple(f"{f}/summary.json" for f in args), recorded_commands(summaries))


def _ratios(summary: Record) -> tuple[float | None, ...]:
    layerpar, ddp = pick(summary, "layerpar"), pick(summary, "ddp")
    contention = next((r for r in summary["results"] if r["arm"] == "contention"), None)
    ceiling = None if contention is None else int(contention["devices"]) * step_ratio(summary, contention)
    return (
        ceiling,
        step_ratio(summary, layerpar),
        step_ratio(summary, ddp),
        float(ddp["step_time_s_median"]) / float(layerpar["step_time_s_median"]),
        pipeline_ratio(summary, layerpar),
    )


def _row(folder: str, summary: Record, ratios: tuple[float | None, ...]) -> tuple[str, ...]:
    serial = pick(summary, "serial")
    commit = str(serial.get("git_commit") or "")[:7]
    cores = "pinned" if serial.get("pinned") else "unpinned"
    step_ms = f"{1000 * float(serial['step_time_s_median']):.1f}"
    return (f"`{folder}`", commit, cores, step_ms, *(_cell(r) for r in ratios))


def _cell(ratio: float | None) -> str:
    return "" if ratio is None else times(ratio)


def _mean_std(column: Sequence[float | None]) -> str:
    known = [r for r in column if r is not None]
    if len(known) < 2:
        return ""
    return f"{statistics.mean(known):.2f} ± {statistics.stdev(known):.2f}×"
