"""Screens and ablations: hand-picked runs, one row each (the ``screen NAME`` blocks).

``SCREENS`` names which committed run each row of a docs/parity.md screen table is: the labels
live here, the numbers in the JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from layerpar.report.results import (
    Record,
    ReportError,
    Results,
    Table,
    device_name,
    epoch_accuracies,
    recorded_commands,
)


@dataclass(frozen=True)
class RunRow:
    """A row of a screen table: what the run is, its result file, and (ablations) what it changes."""

    label: str
    path: str
    what: str = ""


SCREENS: dict[str, tuple[RunRow, ...]] = {
    "screen-fixed": (
        RunRow(
            "serial backprop (same data and schedule; unaffected by the bug)",
            "parity/before-aux-grad-fix/screen-serial-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "AL β=0.01, last 0.5 epoch serial (default)",
            "parity/fixed-al-b0.01-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow("AL β=0.001", "parity/fixed-al-b0.001-fmnist20k-K2-s0.json"),
        RunRow(
            "penalty β=0.01, last 0.5 epoch serial",
            "parity/fixed-penalty-b0.01-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow("AL β=0.01, AL step clipped at ±0.1", "parity/fixed-al-b0.01-clip0.1-fmnist20k-K2-s0.json"),
        RunRow("penalty β=0.01", "parity/fixed-penalty-b0.01-fmnist20k-K2-s0.json"),
        RunRow("AL β=0.01", "parity/fixed-al-b0.01-fmnist20k-K2-s0.json"),
        RunRow("penalty β=0.1", "parity/fixed-penalty-b0.1-fmnist20k-K2-s0.json"),
        RunRow("AL β=0.1", "parity/fixed-al-b0.1-fmnist20k-K2-s0.json"),
    ),
    "screen-cpu-levers": (
        RunRow(
            "AL β=0.01 → 1 (geometric continuation) + hybrid 0.5",
            "parity/cpu-al-b0.01-cont1-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "AL β=0.01, AuxNet 16 channels × 2 blocks per stage + hybrid 0.5",
            "parity/cpu-al-b0.01-aux16x2-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "AL β=0.01, warm-up 0.5 epoch, hybrid 1 epoch",
            "parity/cpu-al-b0.01-warmup0.5-hybrid1-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "AL β=0.01 + hybrid 0.5, AuxNet stem stride 1 (the AL demo preset; `layerpar bench --train`)",
            "bench/cpu-demo-K2-auxstride1/runs/layerpar-K2/summary.json",
        ),
        RunRow(
            "same, AuxNet stem stride 2 (trunk at 14×14; the demo preset of the time)",
            "bench/cpu-demo-K2/runs/layerpar-K2/summary.json",
        ),
    ),
    "delayed": (
        RunRow("20k screen, K = 2, β = 0.01, no hybrid", "parity/cpu-delayed-b0.01-fmnist20k-K2-s0.json"),
        RunRow("AL on the same setting (for comparison)", "parity/fixed-al-b0.01-fmnist20k-K2-s0.json"),
        RunRow(
            "20k screen, K = 2, β = 0.01, hybrid 0.5",
            "parity/gpu-delayed-b0.01-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "AL on the same setting (for comparison)", "parity/fixed-al-b0.01-hybrid0.5-fmnist20k-K2-s0.json"
        ),
        RunRow(
            "20k screen, K = 2, β = 0.03, hybrid 0.5",
            "parity/gpu-delayed-b0.03-hybrid0.5-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "20k screen, K = 2, β = 0.1, hybrid 0.5", "parity/gpu-delayed-b0.1-hybrid0.5-fmnist20k-K2-s0.json"
        ),
        RunRow(
            "20k screen, K = 2, β = 1, hybrid 0.5", "parity/gpu-delayed-b1-hybrid0.5-fmnist20k-K2-s0.json"
        ),
        RunRow(
            "20k screen, K = 2, β = 0.01, warm-up 0.25 epoch, no hybrid",
            "parity/cpu-delayed-b0.01-w0.25-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "full data, K = 4, β = 0.01, hybrid 0.5, seed 0",
            "parity/full-delayed-b0.01-hybrid0.5-resnet20-fashion_mnist-K4-s0.json",
        ),
        RunRow(
            "full data, K = 2, β = 0.1, hybrid 0.5, seed 0",
            "parity/full-delayed-b0.1-hybrid0.5-resnet20-fashion_mnist-K2-s0.json",
        ),
        RunRow(
            "full data, K = 4, β = 0.1, hybrid 0.5, seed 0",
            "parity/full-delayed-b0.1-hybrid0.5-resnet20-fashion_mnist-K4-s0.json",
        ),
    ),
    "periodic-serial": (
        RunRow(
            "no periodic serial steps (the AL demo preset; `layerpar bench --train`)",
            "bench/cpu-demo-K2-auxstride1/runs/layerpar-K2/summary.json",
        ),
        RunRow("every 2nd parallel step serial", "parity/cpu-al-b0.01-every2-hybrid0.5-fmnist20k-K2-s0.json"),
        RunRow("every 4th parallel step serial", "parity/cpu-al-b0.01-every4-hybrid0.5-fmnist20k-K2-s0.json"),
    ),
    "ablations": (
        RunRow("al", "parity/diag-al-fmnist20k-K2-s0.json", "default AL step"),
        RunRow(
            "al-freeze-early",
            "parity/diag-al-freeze-early-fmnist20k-K2-s0.json",
            "module 1 takes no update in parallel steps",
        ),
        RunRow(
            "al-freeze-early-htarget",
            "parity/diag-al-freeze-early-htarget-fmnist20k-K2-s0.json",
            "same, AuxNet distilled on the true h (no AL shift of module 2's inputs)",
        ),
        RunRow(
            "al-every2",
            "parity/diag-al-every2-fmnist20k-K2-s0.json",
            "default AL, every 2nd parallel step serial",
        ),
        RunRow(
            "al-every2-freeze-early",
            "parity/diag-al-every2-freeze-early-fmnist20k-K2-s0.json",
            "every 2nd step serial, module 1 frozen in parallel steps",
        ),
        RunRow(
            "every2-freeze-all",
            "parity/diag-every2-freeze-all-fmnist20k-K2-s0.json",
            "every 2nd step serial, *no module* updates in parallel steps",
        ),
        RunRow(
            "delayed-every2",
            "parity/diag-delayed-every2-fmnist20k-K2-s0.json",
            "every 2nd step serial, stale-adjoint updates in parallel steps",
        ),
        RunRow(
            "delayed-b1e-4",
            "parity/diag-delayed-b1e-4-fmnist20k-K2-s0.json",
            "stale-adjoint, β = 1e-4 (almost no pull towards the AuxNet)",
        ),
    ),
    "screen-pipelined": (
        RunRow("serial backprop", "parity/cpu-serial-fmnist20k-K2-s0.json"),
        RunRow(
            "pipelined, one batch per step (delay 2 steps for module 0)",
            "parity/cpu-pipelined-fmnist20k-K2-s0.json",
        ),
        RunRow("same + last 0.5 epoch serial", "parity/cpu-pipelined-hybrid0.5-fmnist20k-K2-s0.json"),
        RunRow(
            "same + weight prediction θ − D·lr·b (`predict_weights`)",
            "parity/cpu-pipelined-predict-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "same + momentum lowered for the delay (`compensate_momentum`)",
            "parity/cpu-pipelined-mom-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "2 micro-batches per batch (gradients ≤ 1 version old; the default for K = 2)",
            "parity/cpu-pipelined-acc2-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "pipelined, one batch per step (delays 6, 4, 2, 0 steps)",
            "parity/cpu-pipelined-K4-fmnist20k-K2-s0.json",
        ),
        RunRow("same + weight prediction", "parity/cpu-pipelined-predict-K4-fmnist20k-K2-s0.json"),
        RunRow("same + momentum lowered for the delay", "parity/cpu-pipelined-mom-K4-fmnist20k-K2-s0.json"),
        RunRow("same after 0.5 epoch of serial warm-up", "parity/cpu-pipelined-w0.5-K4-fmnist20k-K2-s0.json"),
        RunRow(
            "4 micro-batches per batch (≤ 2 versions old)",
            "parity/cpu-pipelined-acc4-K4-fmnist20k-K2-s0.json",
        ),
        RunRow(
            "8 micro-batches per batch (≤ 1 version old; the default for K = 4)",
            "parity/cpu-pipelined-acc8-K4-fmnist20k-K2-s0.json",
        ),
    ),
}
"""The screen tables of docs/parity.md: which committed run each row is (labels live here, numbers
in the JSON)."""


def screen(results: Results, args: Sequence[str]) -> Table:
    """A screen or ablation table: K, device and the accuracy at every epoch of each listed run."""
    if len(args) != 1 or args[0] not in SCREENS:
        raise ReportError(f"screen takes one of {sorted(SCREENS)}, got {list(args)}")
    spec = SCREENS[args[0]]
    records = [results.load(row.path) for row in spec]
    what = ("what the parallel steps do",) if any(row.what for row in spec) else ()
    header = ("run", *what, "K", "device", "test acc by epoch (last = final)")
    rows = [_screen_row(row, r, bool(what)) for row, r in zip(spec, records)]
    return Table(
        header, rows, _sources(row.path for row in spec), recorded_commands(map(_with_command(results), spec))
    )


def _screen_row(row: RunRow, r: Record, with_what: bool) -> tuple[str, ...]:
    curve = " / ".join(f"{a:.4f}" for a in epoch_accuracies(r))
    return (row.label, *((row.what,) if with_what else ()), str(r["stages"]), device_name(r), curve)


def _sources(paths: Iterable[str]) -> tuple[str, ...]:
    """The distinct source files, folded into one glob per folder: a 12-row table names 1–3 globs."""
    folders: dict[str, list[str]] = {}
    for path in paths:
        folder, _, name = path.rpartition("/")
        folders.setdefault(folder, []).append(name)
    return tuple(f"{folder}/{_common_glob(names)}" for folder, names in folders.items())


def _common_glob(names: Sequence[str]) -> str:
    """``cpu-*-fmnist20k-K2-s0.json`` for names sharing a prefix and suffix; the name itself if one."""
    if len(set(names)) == 1:
        return names[0]
    prefix = _common_prefix(names)
    suffix = _common_prefix([n[len(prefix) :][::-1] for n in names])[::-1]
    return f"{prefix}*{suffix}"


def _common_prefix(names: Sequence[str]) -> str:
    first, last = min(names), max(names)
    size = next((i for i, (a, b) in enumerate(zip(first, last)) if a != b), min(len(first), len(last)))
    return first[:size]


def _with_command(results: Results) -> Callable[[RunRow], Record]:
    """A run summary of ``layerpar bench --train`` records no command; its bench folder's does."""

    def record(row: RunRow) -> Record:
        r = results.load(row.path)
        if "command" not in r and "/runs/" in row.path:
            return results.load(row.path.split("/runs/")[0] + "/summary.json")
        return r

    return record
