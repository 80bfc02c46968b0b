"""Accuracy parity: groups of seeds against serial backprop (absorbs scripts/parity_table.py).

The runs of one setting (dataset, model, epochs, device, arm, K) are grouped by seed and set
against serial backprop's runs of the same setting and seeds; the tables give both accuracies as
mean ± std and the gap in points.  Blocks ``parity-pipelined``, ``parity-heads``,
``parity-auxnet`` and ``parity-runs``; value ``gap-range``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from layerpar.report.results import (
    Record,
    ReportError,
    Results,
    Table,
    dataset_name,
    device_name,
    epoch_accuracies,
    mean_std,
    micro_batches,
    model_name,
    no_args,
    percent,
    recorded_commands,
    signed,
)


@dataclass(frozen=True)
class Group:
    """The runs of one setting, by seed; ``device`` keeps CPU and GPU apart, since serial's
    accuracy differs between their numerics by more than between seeds."""

    dataset: str
    model: str
    epochs: float
    device: str
    arm: str
    stages: int


def group_runs(results: Results, patterns: Sequence[str]) -> dict[Group, dict[int, Record]]:
    groups: dict[Group, dict[int, Record]] = {}
    for rel in sorted({rel for pattern in patterns for rel in results.glob(pattern)}):
        r = results.load(rel)
        key = Group(r["dataset"], r["model"], float(r["epochs"]), device_name(r), r["arm"], int(r["stages"]))
        groups.setdefault(key, {})[int(r["seed"])] = r
    return groups


def serial_twin(groups: dict[Group, dict[int, Record]], key: Group) -> tuple[dict[int, Record], str]:
    """Serial runs of the same setting and seeds: on the same device if there are any, else on
    another one (returned with that device's name, so the table can say so); ``({}, "")`` if none."""
    same = [
        g
        for g in groups
        if g.arm == "serial" and (g.dataset, g.model, g.epochs) == (key.dataset, key.model, key.epochs)
    ]
    same.sort(key=lambda g: g.device != key.device)
    for twin in same:
        if set(groups[twin]) & set(groups[key]):
            return groups[twin], ("" if twin.device == key.device else twin.device)
    return {}, ""


@dataclass(frozen=True)
class Comparison:
    """One layer-parallel group against its serial twin, over the seeds both ran (all of the
    group's seeds where there is no twin)."""

    key: Group
    parallel: list[Record]
    serial: list[Record]
    serial_device: str  # "" where serial ran on the group's own device

    @property
    def seeds(self) -> list[int]:
        return [int(r["seed"]) for r in self.parallel]

    @property
    def gap(self) -> float | None:
        """Layer-parallel − serial mean final accuracy, in points."""
        if not self.serial:
            return None
        return 100 * (statistics.mean(_finals(self.parallel)) - statistics.mean(_finals(self.serial)))


def _finals(records: Iterable[Record]) -> list[float]:
    return [float(r["final_test_acc"]) for r in records]


def comparisons(groups: dict[Group, dict[int, Record]]) -> list[Comparison]:
    """Every layer-parallel group with its twin, in the docs' order (model, dataset, K)."""
    out = []
    for key in sorted(
        (g for g in groups if g.arm != "serial"), key=lambda g: (g.model, g.dataset, g.stages, g.device)
    ):
        runs = groups[key]
        serial, device = serial_twin(groups, key)
        seeds = sorted(set(runs) & set(serial)) or sorted(runs)
        out.append(
            Comparison(key, [runs[s] for s in seeds], [serial[s] for s in seeds if s in serial], device)
        )
    return out


PARITY_EXTRAS = {"arm": "arm", "micro": "micro-batches M"}
"""Optional columns of a parity table: the arm (where groups of several arms share a table) and
the pipelined method's M."""


def _parity_row(c: Comparison, extras: Sequence[str]) -> tuple[str, ...]:
    cells = {
        "arm": str(c.key.arm).removeprefix("layerpar-"),
        "micro": str(micro_batches(c.parallel[0]["config"])),
    }
    if c.gap is None:
        serial_cell, gap = "–", "–"
    else:
        serial_cell = mean_std(_finals(c.serial)) + (f" ({c.serial_device})" if c.serial_device else "")
        gap = signed(c.gap, 2)
    head = (
        dataset_name(c.key.dataset),
        model_name(c.key.model),
        str(c.key.stages),
        *(cells[e] for e in extras),
    )
    return (*head, c.key.device, serial_cell, mean_std(_finals(c.parallel)), gap, ",".join(map(str, c.seeds)))


def parity_table(
    results: Results, patterns: Sequence[str], serial: Sequence[str], label: str, extras: Sequence[str] = ()
) -> Table:
    """Serial and layer-parallel accuracy (mean ± std over the seeds both ran) and the gap;
    ``extras`` adds columns of ``PARITY_EXTRAS``."""
    found = comparisons(group_runs(results, [*patterns, *serial]))
    columns = tuple(PARITY_EXTRAS[e] for e in extras)
    header = (
        "dataset",
        "model",
        "K",
        *columns,
        "device",
        "serial acc (%)",
        f"{label} acc (%)",
        "gap (pt)",
        "seeds",
    )
    used = [r for c in found for r in (*c.parallel, *c.serial)]
    return Table(
        header, [_parity_row(c, extras) for c in found], (*patterns, *serial), recorded_commands(used)
    )


def parity_pipelined(results: Results, args: Sequence[str]) -> Table:
    """The default method's full-data accuracy, the README's and docs/parity.md's headline table."""
    no_args("parity-pipelined", args)
    table = parity_table(
        results,
        ["parity/full-pipelined-2bw-*.json"],
        ["parity/full-serial-*.json"],
        "pipelined",
        ["micro"],
    )
    return Table(table.header, table.rows, table.sources, table.commands, (OTHER_DEVICE_NOTE,))


OTHER_DEVICE_NOTE = (
    "A serial accuracy marked with a device is that device's run: no serial run on the "
    "layer-parallel run's device was committed for this setting, and the gap is taken against it."
)


def parity_heads(results: Results, args: Sequence[str]) -> Table:
    """The local-heads method's full-data accuracy (issue 11), beside its serial twins."""
    no_args("parity-heads", args)
    table = parity_table(
        results, ["parity/full-local-*.json"], ["parity/full-serial-*.json"], "local heads", ["arm", "micro"]
    )
    serial_column = table.header.index("serial acc (%)")
    notes = (OTHER_DEVICE_NOTE,) if any(row[serial_column].endswith(")") for row in table.rows) else ()
    return Table(table.header, table.rows, table.sources, table.commands, notes)


def parity_auxnet(results: Results, args: Sequence[str]) -> Table:
    """The AuxNet (AL) method's full-data accuracy: the record of the previous default."""
    no_args("parity-auxnet", args)
    return parity_table(
        results, ["parity/full-al-b0.01-hybrid0.5-*.json"], ["parity/full-serial-*.json"], "AL"
    )


def parity_runs(results: Results, args: Sequence[str]) -> Table:
    """One row per run (every seed, every epoch): what the mean ± std rows are made of."""
    if not args:
        raise ReportError("parity-runs needs one or more result globs, e.g. parity/full-serial-*-cpu.json")
    records = [results.load(rel) for rel in sorted({rel for p in args for rel in results.glob(p)})]
    records.sort(key=lambda r: (r["model"], r["dataset"], int(r["stages"]), r["arm"], int(r["seed"])))
    header = ("dataset", "model", "arm", "K", "device", "seed", "test acc by epoch (%)")
    rows = [_run_row(r) for r in records]
    return Table(header, rows, tuple(args), recorded_commands(records))


def _run_row(r: Record) -> tuple[str, ...]:
    curve = " / ".join(percent(a) for a in epoch_accuracies(r))
    arm = str(r["arm"]).removeprefix("layerpar-")
    return (
        dataset_name(r["dataset"]),
        model_name(r["model"]),
        arm,
        str(r["stages"]),
        device_name(r),
        str(r["seed"]),
        curve,
    )


def gap_range(results: Results, args: Sequence[str]) -> str:
    """``gap-range GLOB``: the smallest and largest |gap| in points over a parity table's groups
    (``1.4–7.5``), against the serial runs ``parity/full-serial-*.json``."""
    if not args:
        raise ReportError(
            "gap-range needs the layer-parallel glob, e.g. parity/full-al-b0.01-hybrid0.5-*.json"
        )
    gaps = [
        abs(c.gap)
        for c in comparisons(group_runs(results, [*args, "parity/full-serial-*.json"]))
        if c.gap is not None
    ]
    if not gaps:
        raise ReportError(f"no group of {list(args)} has a serial twin")
    return f"{min(gaps):.1f}–{max(gaps):.1f}"
