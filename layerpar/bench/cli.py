"""``layerpar bench``: parser and entry (the harness lives in ``bench/harness.py``).

The arms, their help text and their validation come from ``bench/registry.py``; the flags'
defaults from ``bench/config.py`` (``BenchConfig``), which every part of the bench receives.
"""

from __future__ import annotations

import argparse
from typing import Any

from layerpar.bench import registry
from layerpar.bench.config import DEFAULT, DEVICES, LINK_NAMES, BenchConfig, commas


def add_bench_parser(sub: Any) -> None:
    bench = sub.add_parser(
        "bench",
        help="measure speedup versus serial backprop, DDP and pipeline parallelism",
        description="Run every arm on the same model, data, batch, seed and steps; write results/<run>/. "
        "The arms run as worker processes on this machine's CPU, one core and one thread per device, "
        "joined by gloo. A GPU is timed with --one-device --device cuda (each stage in turn on that "
        "one GPU); --predict extrapolates to K GPUs with a link model (--link nvlink).",
    )
    bench.add_argument("--config", help="run config YAML (model, data, batch)")
    bench.add_argument("--set", action="append", default=[], dest="overrides", metavar="SECTION.KEY=VALUE")
    bench.add_argument("--arms", default=commas(DEFAULT.arms), help=registry.help_text())
    bench.add_argument(
        "--stages", default=commas(DEFAULT.stages), help="comma list of K (devices for parallel arms)"
    )
    bench.add_argument(
        "--repeats", type=int, default=DEFAULT.repeats, help="timed repeats per arm (median reported)"
    )
    bench.add_argument(
        "--steps", type=int, default=DEFAULT.steps, help="timed steps per repeat (after warm-up)"
    )
    bench.add_argument("--warmup-steps", type=int, default=DEFAULT.warmup_steps)
    bench.add_argument(
        "--pin-cores",
        action="store_true",
        help="pin each device of every timed arm to a CPU core of its own (rank r on the r-th core; "
        "serial on the first; serial-threads on the first K): the scheduler then never runs two "
        "workers on one core. Not with --predict or --one-device; --train's runs are not pinned",
    )
    bench.add_argument(
        "--microbatches",
        default=commas(DEFAULT.microbatches),
        help="M for the pipeline arms "
        f"({commas(n for n, s in registry.ARMS.items() if s.microbatches)}); a comma list (2,4,8) runs "
        "each at every M and reports the best",
    )
    trained = commas(n for n, s in registry.ARMS.items() if s.train_mode)
    bench.add_argument(
        "--train",
        action="store_true",
        help=f"also train the {trained} arms to the end: final accuracy, time-to-target, "
        "accuracy-vs-time plot",
    )
    bench.add_argument("--target", type=float, help="target test accuracy (default: serial's final − 0.005)")
    bench.add_argument("--eval-every-steps", type=int, help="evaluate every N steps in --train runs")
    bench.add_argument(
        "--predict",
        action="store_true",
        help="scaling model: profile this machine, predict every arm with a cost model "
        f"({commas(registry.predictable())}) for K = 1..--max-stages (and --replicas layouts), "
        "validate against --measured or the measurements of this run (on a CPU it also probes "
        "torch's pipeline runtime in K processes for the pipeline arms: a few seconds)",
    )
    bench.add_argument("--max-stages", type=int, default=DEFAULT.max_stages, help="largest K to predict")
    bench.add_argument(
        "--replicas", default=commas(DEFAULT.replicas), help="comma list of data-parallel replicas to predict"
    )
    bench.add_argument("--link", default=DEFAULT.link, choices=LINK_NAMES)
    bench.add_argument("--latency", type=float, help="override the link latency (seconds)")
    bench.add_argument("--bandwidth", type=float, help="override the link bandwidth (bytes/s)")
    bench.add_argument(
        "--one-device",
        action="store_true",
        help="measure on one device only: serial step time and each layer-parallel stage's step "
        "run in turn (per-stage profile; a single GPU's view of K GPUs)",
    )
    bench.add_argument(
        "--device",
        default=DEFAULT.device,
        choices=DEVICES,
        help="device of --one-device and of its --predict profile (auto: cuda if present); "
        "the multi-process arms always run on the CPU",
    )
    bench.add_argument("--measured", help="a bench summary.json to validate the model against")
    bench.add_argument("--out", default=str(DEFAULT.out), help="results folder")
    bench.add_argument("--name", help="run name (default: derived from config and time)")


def cmd_bench(args: argparse.Namespace) -> int:
    """Measure the arms (unless only --predict with --measured is asked), then predict."""
    return run(BenchConfig.from_args(args))


def run(bench: BenchConfig) -> int:
    """What ``layerpar bench`` does with ``bench``."""
    from pathlib import Path

    measured = bench.measured
    out: Path | None = None
    if bench.predict:
        from layerpar.bench.predict_run import check_predictable

        check_predictable(bench.run_config())  # before any arm is timed
    if bench.one_device:
        from layerpar.bench.one_device import run_one_device

        out = run_one_device(bench)
        measured = out / "summary.json"
    elif not (bench.predict and measured is not None):
        from layerpar.bench.harness import run_bench

        out = run_bench(bench)
        measured = out / "summary.json"
    if bench.predict:
        from layerpar.bench.predict_run import run_predict

        assert measured is not None
        modelled = registry.predictable()
        run_predict(
            bench.run_config(),
            stages_list=range(1, bench.max_stages + 1),
            replicas_list=bench.replicas,
            arms=tuple(a for a in bench.arms if a in modelled),
            link_name=bench.link,
            latency_s=bench.latency,
            bandwidth=bench.bandwidth,
            microbatches=bench.microbatches,
            measured_summary=measured,
            out_dir=(out or measured.parent) / "predict",
            device=_profile_device(bench),
        )
    return 0


def _profile_device(bench: BenchConfig) -> str:
    """Where --predict profiles: the --one-device device; the CPU for multi-process CPU runs."""
    if not bench.one_device:
        return "cpu"
    from layerpar.bench.common import pick_device

    return pick_device(bench.device).type
