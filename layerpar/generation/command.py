"""``layerpar sample``: draw from a trained denoiser, write a picture, optionally score it.

layerpar sample runs/<run> --n 100 --out grid.png          # images: a grid, a class per column
layerpar sample runs/<run> --out scatter.png                # 2-D: samples beside held-out data
layerpar sample runs/<run> --metrics m.json --metrics-n 1000  # + held-out loss, SWD/MMD or FD
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from layerpar.data.atomic import atomic_output
from layerpar.errors import ConfigError

DESCRIPTION = (
    "Draw samples from a trained denoiser (the serially assembled modules of a layer-parallel run: "
    "its newest complete checkpoint set, else model.pt; EMA weights unless --live) and write a PNG: "
    "an image grid with one class per column, or 2-D samples beside held-out data. The sampler, its "
    "steps and the guidance scale default to the run's diffusion section. --metrics adds the "
    "held-out denoising loss and, from --metrics-n samples with fixed seeds, the sliced Wasserstein "
    "distance and MMD (2-D) or the Fréchet distance in layerpar's own MNIST/Fashion-MNIST "
    "classifier's features and the conditional accuracy (images), each beside its data-vs-data floor."
)


def add_sample_parser(sub: Any) -> None:
    parser = sub.add_parser(
        "sample",
        help="draw samples from a trained denoiser: an image grid or a 2-D scatter (+ metrics)",
        description=DESCRIPTION,
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="a denoiser's run folder (runs/<run>) or its model.pt")
    parser.add_argument("--n", type=int, default=64, help="samples in the picture (default 64; 2-D: 2000)")
    parser.add_argument("--out", help="PNG to write (default: <run>/samples.png)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    parser.add_argument(
        "--sampler", choices=["auto", "ddpm", "ddim", "euler"], help="override diffusion.sampler"
    )
    parser.add_argument("--steps", type=int, help="override diffusion.sample_steps (DDIM / Euler)")
    parser.add_argument("--guidance", type=float, help="override diffusion.guidance (1: no guidance)")
    parser.add_argument("--live", action="store_true", help="sample from the live weights, not the EMA")
    parser.add_argument("--metrics", help="also write metrics to this JSON file")
    parser.add_argument("--metrics-n", type=int, default=1000, help="samples the metrics use (default 1000)")


def _paths(args: argparse.Namespace) -> tuple[Path, Path | None]:
    source = Path(args.source)
    folder = source if source.is_dir() else source.parent
    out = Path(args.out) if args.out else folder / "samples.png"
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the picture is a PNG; give a path ending in .png")
    metrics = Path(args.metrics) if args.metrics else None
    if metrics is not None and metrics.suffix.lower() != ".json":
        raise ConfigError(f"--metrics {metrics}: metrics are JSON; give a path ending in .json")
    return out, metrics


def write_json(record: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as handle:
        handle.write((json.dumps(record, indent=2) + "\n").encode())
    return path


def command_line(args: argparse.Namespace) -> str:
    """The ``layerpar sample`` command that reproduces this draw (every option spelled out)."""
    words = ["layerpar", "sample", str(args.source), "--n", str(args.n), "--seed", str(args.seed)]
    for flag in ("out", "sampler", "steps", "guidance", "metrics"):
        if getattr(args, flag) is not None:
            words += [f"--{flag}", str(getattr(args, flag))]
    words += ["--metrics-n", str(args.metrics_n)] + (["--live"] if args.live else [])
    return shlex.join(words)


def _picture(loaded: Any, samples: Any, out: Path, title: str) -> Path:
    from layerpar.generation.figures import write_grid, write_scatter
    from layerpar.generation.metrics import held_out_split

    if loaded.is_image:
        return write_grid(samples, out, title=title, classes=loaded.num_classes)
    return write_scatter(samples, held_out_split(loaded).images[: len(samples)], out, title=title)


def _print_metrics(record: dict[str, Any]) -> None:
    pairs = [
        ("held_out_loss", None),
        ("swd", "swd_floor"),
        ("mmd", "mmd_floor"),
        ("classifier_fd", "classifier_fd_floor"),
        ("cond_acc", "classifier_test_acc"),
    ]
    for name, reference in pairs:
        if name in record:
            beside = f"   (data: {record[reference]:.4g})" if reference in record else ""
            print(f"  {name:<16} {record[name]:.4g}{beside}")


def cmd_sample(args: argparse.Namespace) -> int:
    from layerpar.generation.classifier import feature_classifier_exists
    from layerpar.generation.load import load_denoiser
    from layerpar.generation.metrics import denoiser_metrics
    from layerpar.generation.sample import draw_samples, sampler_settings

    out, metrics_path = _paths(args)
    loaded = load_denoiser(args.source, ema=not args.live)
    if metrics_path is not None and loaded.is_image:
        feature_classifier_exists(loaded.config.data.dataset)  # refuse before any sampling
    settings = sampler_settings(loaded, args.sampler, args.steps, args.guidance)
    n = args.n if loaded.is_image or args.n != 64 else 2000  # a 2-D scatter needs more points
    samples, _ = draw_samples(loaded, n, seed=args.seed, settings=settings, progress=sys.stderr.isatty())
    weights = "EMA" if loaded.ema else "live"
    steps = settings.steps or loaded.config.diffusion.timesteps
    how = f"{settings.method} {steps} steps · guidance {settings.guidance:g} · {weights}"
    title = f"{loaded.config.model.name} · {how}"
    print(
        f"wrote {_picture(loaded, samples, out, title)} ({n} samples from {loaded.origin}, {weights} weights)"
    )
    if metrics_path is not None:
        record = denoiser_metrics(loaded, args.metrics_n, seed=args.seed, settings=settings)
        record["command"] = command_line(args)
        print(f"wrote {write_json(record, metrics_path)}")
        _print_metrics(record)
    return 0
