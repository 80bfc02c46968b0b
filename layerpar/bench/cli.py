"""``layerpar bench``: parser and entry (the harness lives in ``bench/harness.py``)."""

from __future__ import annotations

import argparse
from typing import Any

ARMS = ("serial", "layerpar", "ddp", "gpipe", "1f1b")


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure speedup versus serial backprop, DDP and pipeline parallelism",
        description="Run every arm on the same model, data, batch, seed and steps, on the same "
        "devices (a device = one GPU, or one CPU core with one thread); write results/<run>/.",
    )
    bench.add_argument("--config", help="run config YAML (model, data, batch)")
    bench.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    bench.add_argument("--arms", default="serial,layerpar", help=f"comma list from {','.join(ARMS)}")
    bench.add_argument("--stages", default="2", help="comma list of K (devices for parallel arms)")
    bench.add_argument("--repeats", type=int, default=3, help="timed repeats per arm (median reported)")
    bench.add_argument("--steps", type=int, default=30, help="timed steps per repeat (after warm-up)")
    bench.add_argument("--warmup-steps", type=int, default=5)
    bench.add_argument("--microbatches", type=int, default=4, help="M for pipeline arms")
    bench.add_argument("--train", action="store_true",
                       help="also train serial and layer-parallel arms to the end: final accuracy, "
                       "time-to-target, accuracy-vs-time plot")
    bench.add_argument("--target", type=float, help="target test accuracy (default: serial's final − 0.005)")
    bench.add_argument("--eval-every-steps", type=int, help="evaluate every N steps in --train runs")
    bench.add_argument("--out", default="results", help="results folder")
    bench.add_argument("--name", help="run name (default: derived from config and time)")


def cmd_bench(args: argparse.Namespace) -> int:
    from layerpar.bench.harness import run_bench

    run_bench(args)
    return 0
