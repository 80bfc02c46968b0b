"""``layerpar bench``: parser and entry (the harness lives in ``bench/harness.py``)."""

from __future__ import annotations

import argparse
from typing import Any

ARMS = ("serial", "layerpar", "ddp", "gpipe", "1f1b", "deepspeed", "serial-threads", "layerpar-minimal")


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
    bench.add_argument("--predict", action="store_true",
                       help="scaling model: profile this machine, predict every arm's step time for "
                       "K = 1..--max-stages (and --replicas layouts), validate against --measured or "
                       "the measurements of this run")
    bench.add_argument("--max-stages", type=int, default=64, help="largest K to predict")
    bench.add_argument("--replicas", default="1", help="comma list of data-parallel replicas to predict")
    bench.add_argument("--link", default="gloo-loopback", choices=("gloo-loopback", "nvlink", "infiniband"))
    bench.add_argument("--latency", type=float, help="override the link latency (seconds)")
    bench.add_argument("--bandwidth", type=float, help="override the link bandwidth (bytes/s)")
    bench.add_argument("--one-device", action="store_true",
                       help="measure on one device only: serial step time and each layer-parallel stage's step "
                            "run in turn (per-stage profile; a single GPU's view of K GPUs)")
    bench.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                       help="device of --one-device and of the --predict profile (auto: cuda if present)")
    bench.add_argument("--measured", help="a bench summary.json to validate the model against")
    bench.add_argument("--out", default="results", help="results folder")
    bench.add_argument("--name", help="run name (default: derived from config and time)")


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the arms (unless only --predict with --measured is asked), then predict."""
    from pathlib import Path

    from layerpar.bench.harness import run_bench

    measured = Path(args.measured) if args.measured else None
    out: Path | None = None
    if args.one_device:
        from layerpar.bench.one_device import run_one_device

        out = run_one_device(args)
        measured = out / "summary.json"
    elif not (args.predict and measured is not None):
        out = run_bench(args)
        measured = out / "summary.json"
    if args.predict:
        from layerpar.bench.predict import run_predict
        from layerpar.config import load_config

        config = load_config(args.config, args.overrides)
        run_predict(
            config,
            stages_list=range(1, args.max_stages + 1),
            replicas_list=tuple(int(r) for r in args.replicas.split(",")),
            arms=tuple(a for a in args.arms.split(",") if a in ("serial", "layerpar", "ddp", "gpipe", "1f1b")),
            link_name=args.link,
            latency_s=args.latency,
            bandwidth=args.bandwidth,
            microbatches=args.microbatches,
            measured_summary=measured,
            out_dir=(out or measured.parent) / "predict",
            device=_profile_device(args),
        )
    return 0


def _profile_device(args: argparse.Namespace) -> str:
    """Where --predict profiles: the --one-device device; the CPU for multi-process CPU runs."""
    if not args.one_device:
        return "cpu"
    from layerpar.bench.one_device import pick_device

    return pick_device(args.device).type
