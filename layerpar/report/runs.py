"""Single runs: the ``demo`` block and the values quoted in running prose from run files.

Each value reads one result file (or the files of one glob) and is formatted as the tables format
the same number: ``acc``, ``pct``, ``pt``, ``pct-range``, ``minutes``, ``std`` and ``metric``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from layerpar.report.results import (
    ReportError,
    Results,
    Table,
    accuracy_at,
    micro_batches,
    no_args,
    one_arg,
    path_and_epoch,
    percent,
    recorded_commands,
    signed,
)


def demo_table(results: Results, args: Sequence[str]) -> Table:
    """`make demo`'s run: the owner commits its ``runs/<run>/summary.json`` as
    ``results/demo/summary.json``; until then the README's block says "pending"."""
    no_args("demo", args)
    r = results.load("demo/summary.json")
    config = r["config"]
    header = (
        "run",
        "method",
        "K",
        "micro-batches M",
        "training images",
        "epochs",
        "final test acc",
        "training time (s)",
        "torch",
        "commit",
    )
    row = (
        str(r.get("run_dir", "")),
        config["layerpar"]["method"],
        str(r["stages"]),
        str(micro_batches(config)),
        str(config["data"]["train_limit"] or "all"),
        f"{float(r['epochs']):g}",
        f"{float(r['final_test_acc']):.4f}",
        f"{float(r['train_time_s']):.1f}",
        str(r.get("torch", "")),
        str(r.get("git_commit", ""))[:7],
    )
    commands = recorded_commands([r]) or ("make demo",)
    return Table(header, [row], ("demo/summary.json",), commands)


def value_acc(results: Results, args: Sequence[str]) -> str:
    """``acc FILE [EPOCH]``: a run's test accuracy as logged (4 decimals)."""
    path, epoch = path_and_epoch("acc", args)
    return f"{accuracy_at(results.load(path), epoch):.4f}"


def value_pct(results: Results, args: Sequence[str]) -> str:
    """``pct FILE [EPOCH]``: the same in percent (2 decimals)."""
    path, epoch = path_and_epoch("pct", args)
    return percent(accuracy_at(results.load(path), epoch))


def value_pt(results: Results, args: Sequence[str]) -> str:
    """``pt FILE_A FILE_B``: |final accuracy difference| in points (1 decimal), for "x pt below"."""
    if len(args) != 2:
        raise ReportError(f"pt takes two result files, got {list(args)}")
    a, b = (float(results.load(p)["final_test_acc"]) for p in args)
    return f"{abs(100 * (a - b)):.1f}"


def value_pct_range(results: Results, args: Sequence[str]) -> str:
    """``pct-range GLOB``: the lowest and highest final accuracy of the matching runs, in percent."""
    accs = [float(results.load(p)["final_test_acc"]) for p in results.glob(one_arg("pct-range", args))]
    return f"{percent(min(accs))}–{percent(max(accs))}"


def value_minutes(results: Results, args: Sequence[str]) -> str:
    """``minutes FILE``: a run's training time in whole minutes."""
    return f"{float(results.load(one_arg('minutes', args))['train_time_s']) / 60:.0f}"


def value_std(results: Results, args: Sequence[str]) -> str:
    """``std GLOB``: the seed-to-seed standard deviation of the final accuracy, in points."""
    accs = [float(results.load(p)["final_test_acc"]) for p in results.glob(one_arg("std", args))]
    if len(accs) < 2:
        raise ReportError(f"std of {args[0]} needs two runs or more, found {len(accs)}")
    return f"{100 * statistics.stdev(accs):.2f}"


def value_mean_gap(results: Results, args: Sequence[str]) -> str:
    """``mean-gap GLOB_A GLOB_B``: mean final accuracy of A's runs minus B's, in signed points."""
    if len(args) != 2:
        raise ReportError(f"mean-gap takes two result globs, got {list(args)}")
    means = []
    for pattern in args:
        accs = [float(results.load(p)["final_test_acc"]) for p in results.glob(pattern)]
        means.append(statistics.fmean(accs))  # glob refuses a pattern that matches nothing
    return signed(100 * (means[0] - means[1]), 2)


def value_metric(results: Results, args: Sequence[str]) -> str:
    """``metric FILE KEY EPOCH``: a logged diagnostic (e.g. ``aux_state_error/0``), 2 decimals."""
    if len(args) != 3:
        raise ReportError(f"metric takes FILE KEY EPOCH, got {list(args)}")
    path, key, epoch = args
    for entry in results.load(path).get("epochs_log", []):
        if float(entry["epoch"]) == float(epoch) and key in entry:
            return f"{float(entry[key]):.2f}"
    raise ReportError(f"results/{path} logs no {key} at epoch {epoch}")
