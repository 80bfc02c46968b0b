"""Every results number in README.md and docs/ generated from the JSON files under results/.

    python -m layerpar.report            # rewrite every generated table and value in place
    python -m layerpar.report --check    # exit 1, naming each cell that differs from its JSON

Why: numbers copied by hand drift away from the runs they claim to come from (a one-seed figure
becomes a headline, a tolerance becomes "bit for bit", a file is never committed).  Here every
results number in the docs is the output of a generator that reads committed result files, and
the test suite runs ``--check`` on the committed Markdown.

Markers.  A generated block sits between ``<!-- report:NAME ARG... -->`` and ``<!-- /report -->``,
each on a line of its own; a generated value sits between the same two markers inside one line
(never at the start of a line, where Markdown would read the comment as an HTML block).  NAME
picks a generator from ``BLOCKS`` or ``VALUES``; ARGs are its arguments, paths relative to
results/.  Every block ends with a line that names its source files and the commands recorded in
them.

Pending.  A block whose result files are not committed fails the check, unless its committed text
says "pending": it is then left as it is until the files exist (a run the owner still has to make).

Only the standard library and ``layerpar.errors`` are imported: the check needs no torch and runs
in well under a second.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import statistics
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerpar.errors import LayerparError

DOCUMENTS = ("README.md", "docs/parity.md", "docs/benchmarking.md")
"""The files a plain run rewrites and ``--check`` checks, relative to the repository root."""

COMMAND = "python -m layerpar.report"
MARKER = re.compile(r"<!-- report:(?P<spec>[^\n>]*?) -->(?P<body>.*?)<!-- /report -->", re.S)
MINUS = "\u2212"
PIPELINE_ARMS = ("gpipe", "1f1b", "deepspeed")
"""The arms a layer-parallel step is compared with at the same K (as in ``layerpar bench``)."""

DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
ARMS = {
    "serial": "serial backprop",
    "layerpar-minimal": "layerpar-minimal (hand-written loop, same math)",
    "ddp": "DDP",
    "gpipe": "GPipe (torch.distributed.pipelining)",
    "1f1b": "1F1B",
    "deepspeed": "DeepSpeed pipeline",
    "serial-threads": "serial, K threads (informational)",
}
Record = dict[str, Any]


class ReportError(LayerparError):
    """A marker names no generator, has wrong arguments, or its result files are inconsistent."""


class MissingResults(ReportError):
    """A result file a generator reads is not committed (yet)."""


# ---------------------------------------------------------------------------------------------
# Reading results


@functools.cache
def _read_json(path: Path) -> Any:
    """One parse per file and process: several tables read the same summary."""
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Results:
    """The results/ folder; every path a generator takes is relative to it."""

    folder: Path

    def load(self, rel: str) -> Record:
        """One JSON object; a missing file is ``MissingResults``, which a pending block tolerates."""
        path = self.folder / rel
        if not path.is_file():
            raise MissingResults(f"results/{rel} is not committed")
        record = _read_json(path)
        if not isinstance(record, dict):
            raise ReportError(f"results/{rel} holds a {type(record).__name__}, expected a JSON object")
        return record

    def glob(self, pattern: str) -> list[str]:
        """The files matching ``pattern``; none is an error, since a table would silently shrink."""
        found = sorted(
            p.relative_to(self.folder).as_posix() for p in self.folder.glob(pattern) if p.is_file()
        )
        if not found:
            raise MissingResults(f"no file matches results/{pattern}")
        return found


@dataclass(frozen=True)
class Table:
    """A generated Markdown table, the sentences printed under it, and where its numbers come from."""

    header: tuple[str, ...]
    rows: list[tuple[str, ...]]
    sources: tuple[str, ...]
    commands: tuple[str, ...]
    notes: tuple[str, ...] = field(default=())

    def render(self) -> str:
        lines = [_row(self.header), "|" + "---|" * len(self.header)]
        lines += [_row(r) for r in self.rows]
        lines += ["", *self.notes] if self.notes else []
        return "\n".join([*lines, "", _footer(self.sources, self.commands)])


def _row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _footer(sources: Sequence[str], commands: Sequence[str]) -> str:
    """The provenance line every block ends with: the files, the recorded commands, this tool."""
    files = ", ".join(f"`results/{s}`" for s in sources)
    made = "; ".join(f"`{c}`" for c in commands) if commands else "no command recorded in the JSON"
    return f"<sub>Source: {files}. Made by: {made}. Table: `{COMMAND}`.</sub>"


def _commands(records: Iterable[Record]) -> tuple[str, ...]:
    """The distinct recorded commands, in order of first appearance."""
    seen: dict[str, None] = {}
    for record in records:
        command = record.get("command") or record.get("measured_command")
        if command:
            seen.setdefault(str(command), None)
    return tuple(seen)


# ---------------------------------------------------------------------------------------------
# Formatting: one place, so that a cell and the prose quoting it cannot round differently


def signed(value: float, digits: int) -> str:
    """``+0.03`` / ``−0.06``, with the docs' typographic minus; a value that rounds to zero has no sign."""
    text = f"{value:+.{digits}f}"
    if float(text) == 0:
        return text[1:]
    return MINUS + text[1:] if text.startswith("-") else text


def times(value: float) -> str:
    return f"{value:.2f}×"


def percent(acc: float) -> str:
    return f"{100 * acc:.2f}"


def mean_std(values: Sequence[float]) -> str:
    """Mean ± sample standard deviation in percent; one value alone has no spread to show."""
    if len(values) == 1:
        return percent(values[0])
    return f"{percent(statistics.mean(values))} ± {percent(statistics.stdev(values))}"


def megabytes(count: float) -> str:
    return "0" if count == 0 else f"{count / 1e6:.1f} MB"


def dataset_name(name: str) -> str:
    return DATASETS.get(name, name)


def model_name(name: str) -> str:
    """``resnet20`` → ``ResNet-20``; other names as recorded."""
    match = re.fullmatch(r"resnet(\d+)", name)
    return f"ResNet-{match.group(1)}" if match else name


def device_name(record: Record) -> str:
    """``CPU`` or the accelerator's model (``H200``), from a parity JSON or a run summary."""
    device = record.get("device") or record.get("cuda") or "cpu"
    if str(device).startswith("cpu"):
        return "CPU"
    return str(device).removeprefix("cuda: ").removeprefix("NVIDIA ")


def default_micro_batches(stages: int) -> int:
    """The pipelined method's default M, the smallest power of two ≥ 2(K−1) (as in
    ``layerpar.parallel.methods.pipelined``, restated here so that the report needs no torch)."""
    micro = 1
    while micro < 2 * (stages - 1):
        micro *= 2
    return micro


def micro_batches(config: Record) -> int:
    """M of a recorded config: ``accumulate`` if set, else the default; a config from before the
    option existed (no ``accumulate`` key) ran one micro-batch per batch."""
    layerpar = config["layerpar"]
    if layerpar.get("method") != "pipelined" or "accumulate" not in layerpar:
        return 1
    return int(layerpar["accumulate"] or default_micro_batches(int(config["parallel"]["stages"])))


def epoch_accuracies(record: Record) -> list[float]:
    """Test accuracy at each whole epoch (bench runs also evaluate in between)."""
    return [float(e["test_acc"]) for e in record.get("epochs_log", []) if float(e["epoch"]).is_integer()]


def accuracy_at(record: Record, epoch: str | None) -> float:
    """The final accuracy, or the one logged at ``epoch`` (a number, as in the log)."""
    if epoch is None:
        return float(record["final_test_acc"])
    for entry in record.get("epochs_log", []):
        if float(entry["epoch"]) == float(epoch):
            return float(entry["test_acc"])
    raise ReportError(f"no evaluation at epoch {epoch} in the log")


# ---------------------------------------------------------------------------------------------
# Accuracy parity: groups of seeds against serial backprop (absorbs scripts/parity_table.py)


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
    return Table(header, [_parity_row(c, extras) for c in found], (*patterns, *serial), _commands(used))


def parity_pipelined(results: Results, args: Sequence[str]) -> Table:
    """The default method's full-data accuracy, the README's and docs/parity.md's headline table."""
    _no_args("parity-pipelined", args)
    table = parity_table(
        results,
        ["parity/full-pipelined-2bw-*.json"],
        ["parity/full-serial-*.json"],
        "pipelined",
        ["micro"],
    )
    note = (
        "A serial accuracy marked with a device is that device's run: no serial run on the "
        "layer-parallel run's device was committed for this setting, and the gap is taken against it."
    )
    return Table(table.header, table.rows, table.sources, table.commands, (note,))


def parity_auxnet(results: Results, args: Sequence[str]) -> Table:
    """The AuxNet (AL) method's full-data accuracy: the record of the previous default."""
    _no_args("parity-auxnet", args)
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
    return Table(header, rows, tuple(args), _commands(records))


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


# ---------------------------------------------------------------------------------------------
# Screens and ablations: hand-picked runs, one row each


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
        header, rows, _sources(row.path for row in spec), _commands(map(_with_command(results), spec))
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


# ---------------------------------------------------------------------------------------------
# Benchmarks (`layerpar bench`): step times, bytes, time-to-target, whole-run training time


def bench_summary(results: Results, folder: str) -> Record:
    summary = results.load(f"{folder}/summary.json")
    if not summary.get("results"):
        raise ReportError(f"results/{folder}/summary.json has no results")
    return summary


def pick(summary: Record, arm: str) -> Record:
    """The result of ``arm``, or ``arm@K`` where the arm ran at several K."""
    name, _, devices = arm.partition("@")
    found = [
        r
        for r in summary["results"]
        if r["arm"] == name and (not devices or int(r["devices"]) == int(devices))
    ]
    if len(found) != 1:
        raise ReportError(f"{len(found)} results match arm {arm!r}; write arm@K where it ran at several K")
    return found[0]


def arm_label(r: Record) -> str:
    """The arm as the README names it, with what defines its schedule (method, micro-batches)."""
    if r["arm"] == "layerpar":
        config = r["config"]
        method = config["layerpar"]["method"]
        if method == "pipelined":
            return f"layerpar (pipelined, M = {micro_batches(config)})"
        return f"layerpar ({method}, AuxNet)"
    label = ARMS.get(str(r["arm"]), str(r["arm"]))
    return f"{label}, M = {r['microbatches']}" if r.get("microbatches") else label


def step_ratio(summary: Record, r: Record) -> float:
    return float(pick(summary, "serial")["step_time_s_median"]) / float(r["step_time_s_median"])


def pipeline_ratio(summary: Record, r: Record) -> float | None:
    """Against the fastest pipeline arm at the same K (``layerpar bench``'s rule)."""
    pipes = [
        float(p["step_time_s_median"])
        for p in summary["results"]
        if p["arm"] in PIPELINE_ARMS and p["devices"] == r["devices"]
    ]
    return min(pipes) / float(r["step_time_s_median"]) if pipes else None


def time_ratio(summary: Record, r: Record, key: str) -> float | None:
    """Serial's time over this arm's: ``time_to_target_s`` or the whole run's ``train_time_s``."""
    serial, mine = pick(summary, "serial").get(key), r.get(key)
    return float(serial) / float(mine) if serial and mine else None


def _time_cell(summary: Record, r: Record, key: str) -> str:
    """``147.2 (1.99×)``; ``not reached`` for a trained arm that missed the target; blank if untrained."""
    if r.get("final_test_acc") is None:
        return ""
    if r.get(key) is None:
        return "not reached"
    ratio = time_ratio(summary, r, key)
    return f"{float(r[key]):.1f}" + (f" ({times(ratio)})" if r["arm"] != "serial" and ratio else "")


def bench_table(results: Results, args: Sequence[str]) -> Table:
    """A multi-process `layerpar bench` run: every arm's step, ratios, bytes and (trained arms)
    accuracy, time to target and whole-run training time, each with its ratio to serial."""
    folder = _one_arg("bench", args)
    summary = bench_summary(results, folder)
    header = (
        "arm",
        "devices",
        "step (s)",
        "spread (s)",
        "vs serial",
        "vs best pipeline",
        "bytes/step",
        "final test acc",
        "time to target (s)",
        "whole run (s)",
    )
    rows = [_bench_row(summary, r) for r in summary["results"]]
    return Table(header, rows, (f"{folder}/summary.json",), _commands([summary]), _bench_notes(summary))


def _bench_row(summary: Record, r: Record) -> tuple[str, ...]:
    vs_pipe = pipeline_ratio(summary, r)
    acc = r.get("final_test_acc")
    return (
        arm_label(r),
        str(r["devices"]),
        f"{float(r['step_time_s_median']):.3f}",
        f"{float(r['step_time_s_spread']):.3f}",
        times(step_ratio(summary, r)),
        times(vs_pipe) if vs_pipe else "",
        megabytes(float(r["bytes_per_step"])),
        f"{float(acc):.4f}" if acc is not None else "",
        _time_cell(summary, r, "time_to_target_s"),
        _time_cell(summary, r, "train_time_s"),
    )


def _bench_notes(summary: Record) -> tuple[str, ...]:
    """What a trained row rests on: its seed count, the target and the evaluation interval."""
    serial = pick(summary, "serial")
    if serial.get("final_test_acc") is None:
        return ("Step times only (no `--train`).",)
    seeds = sorted(
        {int(r["config"]["train"]["seed"]) for r in summary["results"] if r.get("final_test_acc") is not None}
    )
    interval = int(serial["epochs_log"][0]["step"])
    plural = "seed" if len(seeds) == 1 else "seeds"
    return (
        f"Accuracy and times: {len(seeds)} {plural} ({', '.join(map(str, seeds))}), trained to the "
        f"end of the preset; target {float(serial['target_acc']):.4f} (serial's final − 0.5 pt), "
        f"evaluated every {interval} batches, so a time to target is resolved to one interval; whole "
        "run = training time of all steps, evaluation excluded.",
    )


def one_device_table(results: Results, args: Sequence[str]) -> Table:
    """A `layerpar bench --one-device` run: each K's slowest stage, its stages, and the scaling
    model's prediction for K devices with its error."""
    folder = _one_arg("bench-one-device", args)
    summary = bench_summary(results, folder)
    predictions = results.load(f"{folder}/predict/predictions.json")
    link = predictions["link"]["name"]
    header = ("arm", "K", "step (ms)", "per-stage step (ms)", "vs serial", f"model, {link} (ms)")
    rows = [_one_device_row(summary, predictions, r) for r in summary["results"]]
    sources = (f"{folder}/summary.json", f"{folder}/predict/predictions.json")
    note = (
        f"Measured on one {device_name(pick(summary, 'serial'))}: each stage's phases run in turn, "
        "so a K row is the step K devices would take without communication.",
    )
    return Table(header, rows, sources, _commands([summary]), note)


def _one_device_row(summary: Record, predictions: Record, r: Record) -> tuple[str, ...]:
    stages = [1000 * float(s) for s in r.get("stage_step_s_median", [])]
    shown = (
        ", ".join(f"{s:.1f}" for s in stages)
        if len(stages) <= 4
        else f"{min(stages):.1f} … {max(stages):.1f}"
    )
    model = validation(predictions, r["arm"], int(r["devices"]))
    predicted = f"{1000 * float(model['predicted_s']):.1f} ({signed(100 * float(model['rel_error']), 0)} %)"
    return (
        r["arm"],
        str(r["stages"]),
        f"{1000 * float(r['step_time_s_median']):.1f}",
        shown,
        times(step_ratio(summary, r)),
        predicted,
    )


def validation(predictions: Record, arm: str, devices: int) -> Record:
    """The scaling model's check against one measured arm (``predict/predictions.json``)."""
    for entry in predictions["validation"]:
        if entry["arm"] == arm and int(entry["devices"]) == devices and entry.get("predicted_s") is not None:
            return entry
    raise ReportError(f"the scaling model made no prediction for {arm} on {devices} devices")


def costmodel_table(results: Results, args: Sequence[str]) -> Table:
    """The scaling model (``--predict``) against every measured arm of the matching bench folders:
    the evidence for any "the model is within x %" sentence."""
    pattern = _one_arg("costmodel", args)
    paths = results.glob(f"{pattern}/predict/predictions.json")
    header = (
        "bench run",
        "arm",
        "devices",
        "measured (s)",
        "predicted (s)",
        "error",
        "error, contention-corrected",
    )
    rows, records = [], []
    for path in paths:
        predictions = results.load(path)
        records.append(predictions)
        run = path.split("/predict/")[0].removeprefix("bench/")
        rows += [
            _costmodel_row(run, e) for e in predictions["validation"] if e.get("predicted_s") is not None
        ]
    return Table(header, rows, (f"{pattern}/predict/predictions.json",), _commands(records))


def _costmodel_row(run: str, e: Record) -> tuple[str, ...]:
    contended = e.get("rel_error_contended")
    return (
        run,
        e["arm"],
        str(e["devices"]),
        f"{float(e['measured_s']):.3f}",
        f"{float(e['predicted_s']):.3f}",
        f"{signed(100 * float(e['rel_error']), 0)} %",
        f"{signed(100 * float(contended), 0)} %" if contended is not None else "",
    )


def bench_seeds_table(results: Results, args: Sequence[str]) -> Table:
    """The same bench run repeated with other seeds (``--set train.seed=S``): every ratio to serial
    as mean ± std over the seeds, so that a headline speedup does not rest on one seed."""
    if len(args) < 2:
        raise ReportError(f"bench-seeds takes two bench folders or more, got {list(args)}")
    summaries = [bench_summary(results, folder) for folder in args]
    seeds = [int(pick(s, "serial")["config"]["train"]["seed"]) for s in summaries]
    if len(set(seeds)) != len(seeds):
        raise ReportError(f"the bench folders {list(args)} repeat a seed: {seeds}")
    header = (
        "arm",
        "seeds",
        "step vs serial",
        "final test acc",
        "time to target vs serial",
        "whole run vs serial",
    )
    arms = [r["arm"] for r in summaries[0]["results"] if r["arm"] != "serial"]
    rows = [_seeds_row(summaries, arm, seeds) for arm in arms]
    return Table(header, rows, tuple(f"{f}/summary.json" for f in args), _commands(summaries))


def _seeds_row(summaries: Sequence[Record], arm: str, seeds: Sequence[int]) -> tuple[str, ...]:
    mine = [(s, pick(s, arm)) for s in summaries]
    accs = [float(r["final_test_acc"]) for _, r in mine if r.get("final_test_acc") is not None]
    ttt = [time_ratio(s, r, "time_to_target_s") for s, r in mine]
    whole = [time_ratio(s, r, "train_time_s") for s, r in mine]
    return (
        arm_label(mine[0][1]),
        ",".join(map(str, seeds)),
        _spread([step_ratio(s, r) for s, r in mine]),
        mean_std(accs) if accs else "",
        _spread(ttt),
        _spread(whole),
    )


def _spread(ratios: Sequence[float | None]) -> str:
    """``1.79 ± 0.03×`` over the seeds; blank where no seed has the ratio, and the count where only
    some do (a target reached on some seeds only)."""
    known = [r for r in ratios if r is not None]
    if not known:
        return ""
    text = (
        times(known[0])
        if len(known) == 1
        else f"{statistics.mean(known):.2f} ± {statistics.stdev(known):.2f}×"
    )
    return text if len(known) == len(ratios) else f"{text} ({len(known)} of {len(ratios)} seeds)"


def demo_table(results: Results, args: Sequence[str]) -> Table:
    """`make demo`'s run: the owner commits its ``runs/<run>/summary.json`` as
    ``results/demo/summary.json``; until then the README's block says "pending"."""
    _no_args("demo", args)
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
    commands = _commands([r]) or ("make demo",)
    return Table(header, [row], ("demo/summary.json",), commands)


# ---------------------------------------------------------------------------------------------
# Values quoted in running prose


def value_acc(results: Results, args: Sequence[str]) -> str:
    """``acc FILE [EPOCH]``: a run's test accuracy as logged (4 decimals)."""
    path, epoch = _path_and_epoch("acc", args)
    return f"{accuracy_at(results.load(path), epoch):.4f}"


def value_pct(results: Results, args: Sequence[str]) -> str:
    """``pct FILE [EPOCH]``: the same in percent (2 decimals)."""
    path, epoch = _path_and_epoch("pct", args)
    return percent(accuracy_at(results.load(path), epoch))


def value_pt(results: Results, args: Sequence[str]) -> str:
    """``pt FILE_A FILE_B``: |final accuracy difference| in points (1 decimal), for "x pt below"."""
    if len(args) != 2:
        raise ReportError(f"pt takes two result files, got {list(args)}")
    a, b = (float(results.load(p)["final_test_acc"]) for p in args)
    return f"{abs(100 * (a - b)):.1f}"


def value_pct_range(results: Results, args: Sequence[str]) -> str:
    """``pct-range GLOB``: the lowest and highest final accuracy of the matching runs, in percent."""
    accs = [float(results.load(p)["final_test_acc"]) for p in results.glob(_one_arg("pct-range", args))]
    return f"{percent(min(accs))}–{percent(max(accs))}"


def value_minutes(results: Results, args: Sequence[str]) -> str:
    """``minutes FILE``: a run's training time in whole minutes."""
    return f"{float(results.load(_one_arg('minutes', args))['train_time_s']) / 60:.0f}"


def value_std(results: Results, args: Sequence[str]) -> str:
    """``std GLOB``: the seed-to-seed standard deviation of the final accuracy, in points."""
    accs = [float(results.load(p)["final_test_acc"]) for p in results.glob(_one_arg("std", args))]
    if len(accs) < 2:
        raise ReportError(f"std of {args[0]} needs two runs or more, found {len(accs)}")
    return f"{100 * statistics.stdev(accs):.2f}"


def value_metric(results: Results, args: Sequence[str]) -> str:
    """``metric FILE KEY EPOCH``: a logged diagnostic (e.g. ``aux_state_error/0``), 2 decimals."""
    if len(args) != 3:
        raise ReportError(f"metric takes FILE KEY EPOCH, got {list(args)}")
    path, key, epoch = args
    for entry in results.load(path).get("epochs_log", []):
        if float(entry["epoch"]) == float(epoch) and key in entry:
            return f"{float(entry[key]):.2f}"
    raise ReportError(f"results/{path} logs no {key} at epoch {epoch}")


BENCH_VALUES: dict[str, Callable[[Record, Record], str]] = {
    "speedup": lambda s, r: times(step_ratio(s, r)),
    "vs-pipeline": lambda s, r: times(_required(pipeline_ratio(s, r), "a pipeline arm at this K")),
    "bytes": lambda s, r: megabytes(float(r["bytes_per_step"])),
    "step-ms": lambda s, r: f"{1000 * float(r['step_time_s_median']):.1f}",
    "acc": lambda s, r: f"{float(r['final_test_acc']):.4f}",
    "acc-gap": lambda s, r: signed(
        100 * (float(r["final_test_acc"]) - float(pick(s, "serial")["final_test_acc"])), 1
    ),
    "target": lambda s, r: f"{float(r['target_acc']):.4f}",
    "ttt": lambda s, r: f"{float(_required(r.get('time_to_target_s'), 'a time to target')):.0f}",
    "ttt-ratio": lambda s, r: times(_required(time_ratio(s, r, "time_to_target_s"), "both times to target")),
    "whole": lambda s, r: f"{float(r['train_time_s']):.0f}",
    "whole-ratio": lambda s, r: times(_required(time_ratio(s, r, "train_time_s"), "both training times")),
}
"""``bench FOLDER QUANTITY ARM``: one number of a bench run, formatted as its table cell is."""


def value_bench(results: Results, args: Sequence[str]) -> str:
    if len(args) != 3 or args[1] not in BENCH_VALUES:
        raise ReportError(
            f"bench takes FOLDER QUANTITY ARM, QUANTITY one of {sorted(BENCH_VALUES)}; got {list(args)}"
        )
    folder, quantity, arm = args
    summary = bench_summary(results, folder)
    return BENCH_VALUES[quantity](summary, pick(summary, arm))


def value_overhead(results: Results, args: Sequence[str]) -> str:
    """``overhead FOLDER ARM BASE``: how much longer ARM's step is than BASE's (``+2.7 %``)."""
    if len(args) != 3:
        raise ReportError(f"overhead takes FOLDER ARM BASE, got {list(args)}")
    summary = bench_summary(results, args[0])
    arm, base = (float(pick(summary, a)["step_time_s_median"]) for a in args[1:])
    return f"{signed(100 * (arm / base - 1), 1)} %"


def value_model_error(results: Results, args: Sequence[str]) -> str:
    """``model-error ARM@K FOLDER...``: the scaling model's error for one arm, or its range over
    several bench runs (``24–80``, unsigned when every error has the same sign)."""
    if len(args) < 2:
        raise ReportError(f"model-error takes ARM[@K] FOLDER..., got {list(args)}")
    name, _, devices = args[0].partition("@")
    errors = [
        100
        * float(
            validation(results.load(f"{f}/predict/predictions.json"), name, int(devices or 1))["rel_error"]
        )
        for f in args[1:]
    ]
    return error_range(errors)


def error_range(errors: Sequence[float]) -> str:
    """One error signed (``+80 %``); several as a range, unsigned when all share a sign (``24–80 %``:
    the sentence says over or under), signed where they straddle zero."""
    if len(errors) == 1:
        return f"{signed(errors[0], 0)} %"
    if min(errors) < 0 < max(errors):
        return f"{signed(min(errors), 0)} to {signed(max(errors), 0)} %"
    low, high = sorted(abs(e) for e in (min(errors), max(errors)))
    return f"{low:.0f}–{high:.0f} %"


def value_costmodel_range(results: Results, args: Sequence[str]) -> str:
    """``costmodel-range GLOB``: the scaling model's error range over every arm of the matching runs."""
    paths = results.glob(f"{_one_arg('costmodel-range', args)}/predict/predictions.json")
    errors = [
        100 * float(e["rel_error"])
        for p in paths
        for e in results.load(p)["validation"]
        if e.get("predicted_s") is not None
    ]
    return error_range(errors)


def value_forward_ms(results: Results, args: Sequence[str]) -> str:
    """``forward-ms FOLDER``: the range of the whole forward's time over the profiled batch sizes,
    with those sizes (the evidence that a GPU step is launch-bound)."""
    profile = results.load(f"{_one_arg('forward-ms', args)}/predict/profile.json")
    timings = {int(t["batch"]): 1000 * sum(map(float, t["forward_s"])) for t in profile["timings"]}
    return (
        f"{min(timings.values()):.1f}–{max(timings.values()):.1f} ms at every batch size from "
        f"{min(timings)} to {max(timings)}"
    )


def _required(value: float | None, what: str) -> float:
    if value is None:
        raise ReportError(f"this value needs {what}, and the results have none")
    return value


def _one_arg(name: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise ReportError(f"{name} takes one argument, got {list(args)}")
    return args[0]


def _no_args(name: str, args: Sequence[str]) -> None:
    if args:
        raise ReportError(f"{name} takes no argument, got {list(args)}")


def _path_and_epoch(name: str, args: Sequence[str]) -> tuple[str, str | None]:
    if len(args) not in (1, 2):
        raise ReportError(f"{name} takes FILE [EPOCH], got {list(args)}")
    return args[0], (args[1] if len(args) == 2 else None)


BLOCKS: dict[str, Callable[[Results, Sequence[str]], Table]] = {
    "parity-pipelined": parity_pipelined,
    "parity-auxnet": parity_auxnet,
    "parity-runs": parity_runs,
    "screen": screen,
    "bench": bench_table,
    "bench-one-device": one_device_table,
    "costmodel": costmodel_table,
    "bench-seeds": bench_seeds_table,
    "demo": demo_table,
}
VALUES: dict[str, Callable[[Results, Sequence[str]], str]] = {
    "acc": value_acc,
    "pct": value_pct,
    "pt": value_pt,
    "std": value_std,
    "pct-range": value_pct_range,
    "minutes": value_minutes,
    "costmodel-range": value_costmodel_range,
    "metric": value_metric,
    "gap-range": gap_range,
    "bench": value_bench,
    "overhead": value_overhead,
    "model-error": value_model_error,
    "forward-ms": value_forward_ms,
}


# ---------------------------------------------------------------------------------------------
# Markers: find, generate, compare, rewrite


@dataclass(frozen=True)
class Marker:
    """One ``<!-- report:... -->`` … ``<!-- /report -->`` span of a document."""

    spec: str
    body: str
    start: int  # offset of the body in the document
    line: int  # line of the opening marker, 1-based

    @property
    def block(self) -> bool:
        return self.body.startswith("\n")

    @property
    def name(self) -> str:
        return self.spec.split()[0] if self.spec.split() else ""

    @property
    def args(self) -> list[str]:
        return self.spec.split()[1:]


def find_markers(text: str) -> list[Marker]:
    """Every marker of a document, in order (markers do not nest: a body ends at the first close)."""
    markers = []
    for match in MARKER.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        markers.append(Marker(match["spec"].strip(), match["body"], match.start("body"), line))
    return markers


def generate(marker: Marker, results: Results) -> str:
    """The body the marker should hold: ``\\n<table>\\n`` for a block, the bare value inline."""
    registry: dict[str, Callable[[Results, Sequence[str]], Any]] = BLOCKS if marker.block else VALUES
    if marker.name not in registry:
        kind = "block" if marker.block else "inline value"
        raise ReportError(f"no {kind} generator {marker.name!r}; known: {', '.join(sorted(registry))}")
    if marker.block:
        if not marker.body.endswith("\n"):
            raise ReportError("a block's closing <!-- /report --> must start a line")
        return "\n" + BLOCKS[marker.name](results, marker.args).render() + "\n"
    if "\n" in marker.body:
        raise ReportError("an inline value must close on its own line (a block starts with a line break)")
    return VALUES[marker.name](results, marker.args)


def _inline_at_line_start(text: str, marker: Marker) -> bool:
    """Whether an inline value's opening comment is the first thing on its line (indented or not)."""
    opening = text.rfind("<!--", 0, marker.start)
    line_start = text.rfind("\n", 0, opening) + 1
    return not marker.block and not text[line_start:opening].strip()


def diff_block(committed: str, generated: str) -> list[tuple[int, str]]:
    """(line offset in the block, what differs): cell by cell in table rows, else line by line."""
    old, new = committed.strip("\n").split("\n"), generated.strip("\n").split("\n")
    header = next((_cells(line) for line in new if line.startswith("|")), [])
    out: list[tuple[int, str]] = []
    for i in range(max(len(old), len(new))):
        a, b = (old[i] if i < len(old) else ""), (new[i] if i < len(new) else "")
        if a == b:
            continue
        if a.startswith("|") and b.startswith("|"):
            out += [(i, d) for d in _diff_row(_cells(a), _cells(b), header)]
        else:
            out.append((i, f"committed {a!r}, from results {b!r}"))
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def _diff_row(old: list[str], new: list[str], header: list[str]) -> list[str]:
    label = " | ".join(new[:3])
    if len(old) != len(new):
        return [f"row {label!r}: committed {len(old)} cells, from results {len(new)}"]
    return [
        f"row {label!r}, column {header[j] if j < len(header) else j!r}: committed {a!r}, from results {b!r}"
        for j, (a, b) in enumerate(zip(old, new))
        if a != b
    ]


@dataclass
class Outcome:
    """What processing one document found: its regenerated text, the differences and failures."""

    text: str
    differences: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    pending: list[str] = field(default_factory=list)


def process(text: str, results: Results, name: str) -> Outcome:
    """Regenerate every marker of ``text``; ``name`` only labels the messages."""
    outcome, pieces, cursor = Outcome(text), [], 0
    for marker in find_markers(text):
        body = _regenerate(text, marker, results, name, outcome)
        pieces += [text[cursor : marker.start], body]
        cursor = marker.start + len(marker.body)
    outcome.text = "".join([*pieces, text[cursor:]])
    return outcome


def _regenerate(text: str, marker: Marker, results: Results, name: str, outcome: Outcome) -> str:
    """The new body of one marker; the committed one (and a recorded reason) where none can be made."""
    where = f"{name}:{marker.line}: [report:{marker.spec}]"
    try:
        if _inline_at_line_start(text, marker):
            raise ReportError("an inline value must not start a line (Markdown would read an HTML block)")
        body = generate(marker, results)
    except MissingResults as missing:
        if "pending" in marker.body.lower():
            outcome.pending.append(f"{where} pending: {missing}")
        else:
            outcome.errors.append(
                f"{where} {missing} (mark the block 'pending' if the run is still to be made)"
            )
        return marker.body
    except (ReportError, KeyError, TypeError, ValueError) as error:
        outcome.errors.append(f"{where} {type(error).__name__}: {error}")
        return marker.body
    if body == marker.body:
        return body
    if marker.block:
        outcome.differences += [
            f"{name}:{marker.line + 1 + offset}: [report:{marker.spec}] {what}"
            for offset, what in diff_block(marker.body, body)
        ]
    else:
        outcome.differences.append(f"{where} committed {marker.body!r}, from results {body!r}")
    return body


def display_name(doc: Path, root: Path) -> str:
    """The document as the messages name it: relative to the repository root where it lies inside."""
    path, base = doc.resolve(), root.resolve()
    return path.relative_to(base).as_posix() if path.is_relative_to(base) else str(doc)


def run(documents: Sequence[Path], results: Results, root: Path, check: bool) -> int:
    """Check or rewrite ``documents``; 1 if a check found a difference or anything failed."""
    status = 0
    for doc in documents:
        name = display_name(doc, root)
        outcome = process(doc.read_text(encoding="utf-8"), results, name)
        for line in outcome.pending:
            print(line)
        for line in outcome.errors:
            print(f"error: {line}", file=sys.stderr)
        status |= bool(outcome.errors)
        if check:
            for line in outcome.differences:
                print(line)
            status |= bool(outcome.differences)
        elif outcome.differences:
            doc.write_text(outcome.text, encoding="utf-8")
            print(f"{name}: rewrote {len(outcome.differences)} differing cells or lines")
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit status (so that the tests can call it in-process)."""
    parser = argparse.ArgumentParser(
        prog=COMMAND, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "files", nargs="*", type=Path, help=f"Markdown files (default: {', '.join(DOCUMENTS)} under --root)"
    )
    parser.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 and print each differing cell"
    )
    parser.add_argument(
        "--root",
        type=Path,
        default=Path(__file__).resolve().parents[1],
        help="repository root holding results/ (default: this checkout)",
    )
    args = parser.parse_args(argv)
    documents = args.files or [args.root / d for d in DOCUMENTS]
    status = run(documents, Results(args.root / "results"), args.root, args.check)
    if args.check and status == 0:
        print(f"{COMMAND} --check: every generated table and value matches results/")
    return status


if __name__ == "__main__":
    sys.exit(main())
