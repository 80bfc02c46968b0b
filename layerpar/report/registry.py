"""The generators, by the NAME a marker gives: ``BLOCKS`` make tables, ``VALUES`` inline values.

A ``<!-- report:NAME ARG... -->`` block is looked up in ``BLOCKS``, an inline one in ``VALUES``;
each generator takes the results/ folder and the marker's ARGs.  A new kind of table is a
function in the module of its family and one line here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from layerpar.report.bench import (
    bench_seeds_table,
    bench_table,
    breakdown_table,
    value_bench,
    value_overhead,
)
from layerpar.report.bench_runs import bench_runs_table
from layerpar.report.costmodel import (
    costmodel_table,
    one_device_table,
    stash_table,
    value_costmodel_range,
    value_forward_ms,
    value_model_error,
)
from layerpar.report.diagnosis import ablation_table, diagnosis_table
from layerpar.report.diffusion import diffusion_seeds_table, diffusion_table
from layerpar.report.parity import gap_range, parity_auxnet, parity_heads, parity_pipelined, parity_runs
from layerpar.report.predictors import predictor_table
from layerpar.report.rank_compute import rank_compute_table
from layerpar.report.reliability import reliability_table
from layerpar.report.results import Results, Table
from layerpar.report.runs import (
    demo_table,
    value_acc,
    value_mean_gap,
    value_metric,
    value_minutes,
    value_pct,
    value_pct_range,
    value_pt,
    value_std,
)
from layerpar.report.screens import screen

BLOCKS: dict[str, Callable[[Results, Sequence[str]], Table]] = {
    "parity-pipelined": parity_pipelined,
    "parity-auxnet": parity_auxnet,
    "parity-heads": parity_heads,
    "parity-runs": parity_runs,
    "screen": screen,
    "bench": bench_table,
    "bench-one-device": one_device_table,
    "costmodel": costmodel_table,
    "stash": stash_table,
    "bench-seeds": bench_seeds_table,
    "bench-runs": bench_runs_table,
    "breakdown": breakdown_table,
    "rank-compute": rank_compute_table,
    "demo": demo_table,
    "reliability": reliability_table,
    "diagnosis": diagnosis_table,
    "ablation": ablation_table,
    "predictors": predictor_table,
    "diffusion": diffusion_table,
    "diffusion-seeds": diffusion_seeds_table,
}
VALUES: dict[str, Callable[[Results, Sequence[str]], str]] = {
    "acc": value_acc,
    "pct": value_pct,
    "pt": value_pt,
    "std": value_std,
    "mean-gap": value_mean_gap,
    "pct-range": value_pct_range,
    "minutes": value_minutes,
    "costmodel-range": value_costmodel_range,
    "metric": value_metric,
    "gap-range": gap_range,
    "bench": value_bench,
    "overhead": value_overhead,
    "model-error": value_model_error,
    "forward-ms": value_forward_ms,
}
