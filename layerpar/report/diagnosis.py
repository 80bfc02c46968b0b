"""The signal diagnosis: per run and evaluation, the cosine between the gradient a parallel
step of an AuxNet method applies and serial backprop's (``update_cosine/k`` in the epoch
records, ``loop.diagnose``), beside the AuxNet's state error and the test accuracy."""

from __future__ import annotations

from collections.abc import Sequence

from layerpar.report.results import Record, ReportError, Results, Table, recorded_commands


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
