"""Reading results/ and formatting its numbers: what every generator of the report shares.

``Results`` loads the committed JSON files (a missing one is ``MissingResults``, which a pending
block tolerates); ``Table`` renders a generated block with its provenance line; the formatters
are the one place a number is rounded, so that a table cell and the prose quoting it cannot
round differently; the argument checks give every generator the same error messages.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerpar.errors import LayerparError

COMMAND = "python -m layerpar.report"
MINUS = "\u2212"
DATASETS = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}
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


def recorded_commands(records: Iterable[Record]) -> tuple[str, ...]:
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


# ---------------------------------------------------------------------------------------------
# Reading a run's record


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
    if layerpar.get("method") not in ("pipelined", "corrected", "local") or "accumulate" not in layerpar:
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
# A marker's arguments


def required(value: float | None, what: str) -> float:
    if value is None:
        raise ReportError(f"this value needs {what}, and the results have none")
    return value


def one_arg(name: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise ReportError(f"{name} takes one argument, got {list(args)}")
    return args[0]


def no_args(name: str, args: Sequence[str]) -> None:
    if args:
        raise ReportError(f"{name} takes no argument, got {list(args)}")


def path_and_epoch(name: str, args: Sequence[str]) -> tuple[str, str | None]:
    if len(args) not in (1, 2):
        raise ReportError(f"{name} takes FILE [EPOCH], got {list(args)}")
    return args[0], (args[1] if len(args) == 2 else None)
