"""Tables people read at the end of a run (rich), and `layerpar info`."""

from __future__ import annotations

from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from layerpar.config import RunConfig


def print_run_summary(record: dict[str, Any]) -> None:
    table = Table(title=f"layerpar run: {record.get('run_dir', '')}")
    acc = record["final_test_acc"]
    # A classifier's score is its test accuracy; a denoiser's its held-out denoising loss.
    score = "test acc" if acc is not None else "test loss"
    value = acc if acc is not None else record.get("final_eval", {}).get("test_loss")
    for column in (
        "mode",
        "K",
        "model",
        "dataset",
        score,
        "train time (s)",
        "batch step (s, median)",
        "samples/s",
    ):
        table.add_column(column)
    batch = record["config"]["train"]["batch_size"]
    step = record["step_time_s_median"]  # per batch (optimiser step), whatever the micro-batching
    table.add_row(
        record["mode"],
        str(record["stages"]),
        record["model"],
        record["dataset"],
        f"{value:.4f}" if value is not None else "-",
        f"{record['train_time_s']:.1f}",
        f"{step:.4f}",
        f"{batch / step:.0f}" if step else "-",
    )
    _console().print(table)


def _console() -> Console:
    """Full-width tables in logs too (rich assumes 80 columns when output is not a terminal)."""
    console = Console()
    return console if console.is_terminal else Console(width=140)


def print_info(config: RunConfig) -> None:
    """Partition, boundary shapes, and the AuxNet's cost share on this machine."""
    from layerpar.auxnet import aux_cost_fraction, parameter_fraction
    from layerpar.parallel.methods import micro_batches
    from layerpar.parallel.setup import build_setup, probe_cond

    setup = build_setup(config)
    console = _console()
    table = Table(
        title=f"{config.model.name} on {config.data.dataset}: K={config.parallel.stages}, "
        f"balance={config.parallel.balance}"
    )
    for column in ("stage", "blocks", "params", "output shape"):
        table.add_column(column)
    bounds = setup.partition.bounds
    output = tuple(setup.input_shape) if config.is_diffusion else (setup.num_classes,)
    shapes = setup.boundary_shapes + [output]
    for k, stage in enumerate(setup.partition.stages):
        params = sum(p.numel() for p in stage.parameters())
        table.add_row(str(k), f"{bounds[k]}..{bounds[k + 1] - 1}", f"{params:,}", str(shapes[k]))
    console.print(table)
    method = setup.method
    console.print(
        f"Method: {method.name} ({method.auxiliary()}); each step sends "
        f"forward {method.sends_forward}, backward {method.sends_backward}"
    )
    micro = micro_batches(config)
    if micro > 1:
        console.print(
            f"Each batch of {config.train.batch_size} goes through in {micro} micro-batches of "
            f"{config.train.batch_size // micro}"
        )
    if setup.aux is not None:
        sample = torch.randn(config.train.batch_size, *setup.input_shape, dtype=setup.dtype)
        cond = probe_cond(config, len(sample), setup.dtype)
        fraction = aux_cost_fraction(setup.aux, setup.model, sample, cond=cond)
        console.print(
            f"AuxNet: {sum(p.numel() for p in setup.aux.parameters()):,} parameters "
            f"({parameter_fraction(setup.aux, setup.model):.1%} of the backbone); forward+backward "
            f"costs {fraction:.1%} of one serial forward+backward (target <= 15%)"
        )
