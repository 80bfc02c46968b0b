"""Where an arm's step time goes, per rank: milliseconds per step in each part.

The ``layerpar`` arm turns each worker's clock (``parallel/clock.py``) on for its timed steps.
A part is compute (forward, backward), the stash's copies and gradient moves, waits on a
neighbour (a message not yet sent, an all-reduce whose slowest rank had not arrived, a send not
yet received), posting sends, the optimiser step (with the EMA of a denoiser), and drawing the
micro-batches.  The ``torch.distributed.pipelining`` arms time their own parts
(``pipeline_clock.py``).  ``other`` is the mean step time minus the parts: Python and
bookkeeping.  Parts are means over steps (they add up to the mean step time); the bench's
headline is the median.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import Any

from layerpar.bench.common import Breakdown, markdown_table
from layerpar.parallel.clock import PARTS

OTHER = "other (Python, bookkeeping)"
STEP = "step (mean)"
ROWS = (*PARTS, OTHER, STEP)
"""The rows of a breakdown, in order."""


def breakdown_per_step(
    seconds: dict[str, float], step_times: Sequence[float], parts: Sequence[str] = PARTS
) -> Breakdown:
    """Milliseconds per step in each of ``parts``, from a clock's seconds over ``step_times``'
    steps, then ``OTHER`` and ``STEP``."""
    steps = max(len(step_times), 1)
    per_part = {part: 1000 * seconds.get(part, 0.0) / steps for part in parts}
    step = 1000 * sum(step_times) / steps
    return {**per_part, OTHER: step - sum(per_part.values()), STEP: step}


def mean_breakdown(per_repeat: Sequence[Sequence[Breakdown] | None]) -> list[Breakdown] | None:
    """Per rank, each part's mean over the repeats (None: the arm records no breakdown)."""
    runs = [r for r in per_repeat if r is not None]
    if not runs:
        return None
    return [
        {row: statistics.fmean(run[rank][row] for run in runs) for row in runs[0][rank]}
        for rank in range(len(runs[0]))
    ]


def breakdown_rows(per_rank: Sequence[Breakdown]) -> list[list[str]]:
    """One row per part: its ms per step on each rank and its share of that rank's step."""
    rows = []
    for row in per_rank[0]:  # the arm's parts, in its clock's order
        cells = [row]
        for rank in per_rank:
            share = 100 * rank[row] / rank[STEP] if rank[STEP] else 0.0
            cells.append(f"{rank[row]:.1f}" if row == STEP else f"{rank[row]:.1f} ({share:.0f} %)")
        rows.append(cells)
    return rows


def breakdown_markdown(result: dict[str, Any]) -> list[str]:
    """table.md's section for one ``layerpar`` result: a row per part, a column per rank."""
    per_rank = result["breakdown_ms_per_step"]
    columns = ["part (ms per step)", *(f"rank {r}" for r in range(len(per_rank)))]
    arm = result["arm"] + (f" M = {result['microbatches']}" if result.get("microbatches") else "")
    title = f"Where {arm}'s step goes at K = {result['devices']} (mean over timed steps and repeats):"
    return [title, "", *markdown_table(columns, breakdown_rows(per_rank))]
