"""The signal diagnosis: per run and evaluation, the cosine between the gradient a parallel
step of an AuxNet method applies and serial backprop's (``update_cosine/k`` in the epoch
records, ``loop.diagnose``), beside the AuxNet's state error and the test accuracy."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from layerpar.report.results import Record, ReportError, Results, Table, mean_std, recorded_commands, signed


def _label(r: Record) -> str:
    lp = r["config"]["layerpar"]
    serial = lp["warmup_epochs"] or lp["serial_final_epochs"]
    return f"{lp['method']} β={lp['beta']:g}{', with serial epochs' if serial else ', parallel steps only'}"


def _cells(epoch: Record, prefix: str, count: int, signed: bool = True) -> str:
    values = [epoch.get(f"{prefix}/{k}") for k in range(count)]
    form = "+.2f" if signed else ".2f"
    return " / ".join("–" if v is None else format(float(v), form) for v in values)


def diagnosis_table(results: Results, args: Sequence[str]) -> Table:
    """``diagnosis RUN.json ...``: one row per run and evaluation."""
    if not args:
        raise ReportError("diagnosis takes one or more run files")
    records = [results.load(path) for path in args]
    header = ("run", "K", "epoch", "update cosine per module", "AuxNet state error per boundary", "test acc")
    rows: list[tuple[str, ...]] = []
    for r in records:
        stages = int(r["stages"])
        for epoch in r["epochs_log"]:
            rows.append(
                (
                    _label(r),
                    str(stages),
                    f"{float(epoch['epoch']):g}",
                    _cells(epoch, "update_cosine", stages),
                    _cells(epoch, "aux_state_error", stages - 1, signed=False),
                    f"{float(epoch['test_acc']):.4f}",
                )
            )
    notes = (
        "Update cosine: cos(gradient of one parallel step, serial backprop's gradient of the same "
        "batch at the same weights), module 0 first; 1 = backprop's direction, 0 = no signal.",
    )
    return Table(header, rows, tuple(args), recorded_commands(records), notes)


ABLATION_ROWS = {
    None: "AuxNet states and multipliers (al)",
    "multipliers": "(a) true multipliers at the AuxNet's states",
    "states": "(b) true states, the AuxNet's multipliers",
    "both": "(c) true states and multipliers",
}
"""``layerpar.oracle`` -> what the modules receive in the parallel steps."""


def ablation_table(results: Results, args: Sequence[str]) -> Table:
    """``ablation SERIAL_GLOB[,SERIAL_GLOB...] RUNS_GLOB...``: per oracle ablation and K, the final
    accuracy over seeds, its gap to serial backprop of the same seeds, and the last evaluation's
    cosines."""
    if len(args) < 2:
        raise ReportError(
            "ablation takes the globs of the serial twins (comma-separated), then the runs' globs"
        )
    run_paths = [path for pattern in args[1:] for path in results.glob(pattern)]
    runs = [results.load(p) for p in run_paths]
    serial_paths = [path for pattern in args[0].split(",") for path in results.glob(pattern)]
    serial = {int(r["seed"]): float(r["final_test_acc"]) for r in map(results.load, serial_paths)}
    groups: dict[tuple[str | None, int], list[Record]] = {}
    for r in runs:
        groups.setdefault((r["config"]["layerpar"].get("oracle"), int(r["stages"])), []).append(r)
    order = list(ABLATION_ROWS)
    header = (
        "what the modules get",
        "K",
        "seeds",
        "test acc %",
        "gap to serial (pt)",
        "update cosine per module (last eval)",
        "AuxNet state error (last eval)",
    )
    rows: list[tuple[str, ...]] = []
    for (oracle, stages), group in sorted(groups.items(), key=lambda g: (order.index(g[0][0]), g[0][1])):
        seeds = sorted(int(r["seed"]) for r in group)
        missing = [s for s in seeds if s not in serial]
        if missing:
            raise ReportError(f"ablation: no serial twin for seed(s) {missing} in results/{args[0]}")
        accs = [float(r["final_test_acc"]) for r in group]
        gaps = [100 * (float(r["final_test_acc"]) - serial[int(r["seed"])]) for r in group]
        last = [r["epochs_log"][-1] for r in group]
        rows.append(
            (
                ABLATION_ROWS[oracle],
                str(stages),
                ", ".join(map(str, seeds)),
                mean_std(accs),
                signed(statistics.mean(gaps), 1),
                _mean_cells(last, "update_cosine", stages),
                _mean_cells(last, "aux_state_error", stages - 1, with_sign=False),
            )
        )
    notes = (
        "Parallel steps only (no serial epochs). Cosines and state errors are means over the seeds "
        "at the last evaluation; state error ||a_k − h_k||/||h_k|| is the AuxNet's own prediction "
        "even where the modules received the truth.",
    )
    return Table(header, rows, (*run_paths, *serial_paths), recorded_commands(runs), notes)


def _mean_cells(epochs: Sequence[Record], prefix: str, count: int, with_sign: bool = True) -> str:
    form = "+.2f" if with_sign else ".2f"
    cells = []
    for k in range(count):
        values = [float(e[f"{prefix}/{k}"]) for e in epochs if e.get(f"{prefix}/{k}") is not None]
        cells.append(format(statistics.mean(values), form) if values else "–")
    return " / ".join(cells)
