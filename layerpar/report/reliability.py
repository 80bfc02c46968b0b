"""The fault drill: ``scripts/fault_drill.py``'s measured detection and recovery times."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from layerpar.report.results import Results, Table, one_arg, recorded_commands

OUTCOMES = {
    "SIGKILL of one worker": "the dead rank is named with its signal; the group restarts from the newest "
    "complete set and the run finishes",
    "SIGSTOP of one worker (parallel.timeout_s=8)": "its peer times out; the stopped rank is named, killed "
    "(SIGKILL) and the group restarts",
    "SIGTERM of the driver": "the driver stops its workers and exits non-zero",
    "SIGKILL of the driver": "every worker dies with it (parent-death signal)",
    "NaN loss (optim.lr=1e6)": "stops at the first non-finite step, names module and step, exit 2, no "
    "model.pt, no restart",
}


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{float(value):.1f}"


def reliability_table(results: Results, args: Sequence[str]) -> Table:
    path = one_arg("reliability", args)
    record = results.load(path)
    header = ("fault", "launcher", "what happens", "detected after (s)", "extra wall time (s)", "ok")
    rows: list[tuple[str, ...]] = []
    for fault in record["faults"]:
        detected = fault.get("detected_s")
        if detected is None and "all_gone_s" in fault:
            detected = fault["all_gone_s"]
        at_step = re.search(r"at step (\d+)", fault.get("message", ""))
        extra = fault.get("extra_wall_s")
        rows.append(
            (
                str(fault["fault"]),
                str(fault["launcher"]),
                OUTCOMES.get(fault["fault"], ""),
                f"at batch {at_step.group(1)}" if at_step else _seconds(detected),
                _seconds(extra),
                "yes" if fault.get("ok") else f"no: {fault.get('error')}",
            )
        )
    notes = (
        "Detected: signal sent → the launcher names the failure (a killed driver: → its last worker "
        "gone; torchrun restarts its workers itself and reports nothing back: —). Extra wall time: "
        "the faulted run minus the same run uninterrupted, on the same launcher.",
    )
    return Table(header, rows, (path,), recorded_commands([record]), notes)
