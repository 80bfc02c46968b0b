"""Where a worker's step time goes: wall seconds per part of the step, summed while enabled.

``layerpar bench`` turns a worker's clock on for the timed steps of the ``layerpar`` arm and
reports each part per step beside the step time (``bench/breakdown.py``); training leaves it
off, where a part costs a context manager's entry and one attribute test (about a
microsecond).  The parts are leaves (no part contains another), so what the step spent outside
all of them is the step time minus their sum: Python and bookkeeping.  A wait is time blocked
on a neighbour: the message it needs was not sent yet, or (an all-reduce) the slowest rank had
not arrived.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager

PARTS = (
    "batch",
    "forward",
    "backward",
    "stash",
    "wait: receive",
    "wait: all-reduce",
    "wait: send",
    "send",
    "optimizer",
)
"""Every part a worker's clock can record, in the order a report lists them."""


class PhaseClock:
    """Seconds per part (``parts``, a worker's ``PARTS`` unless given) summed over the steps
    since ``start``."""

    def __init__(self, parts: tuple[str, ...] = PARTS) -> None:
        self.parts = parts
        self.enabled = False
        self.seconds: defaultdict[str, float] = defaultdict(float)

    def start(self) -> None:
        """Forget what was counted, and count from now."""
        self.seconds.clear()
        self.enabled = True

    def stop(self) -> dict[str, float]:
        """Stop counting; the seconds per part since ``start``."""
        self.enabled = False
        return dict(self.seconds)

    @contextmanager
    def __call__(self, part: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        if part not in self.parts:
            raise ValueError(f"unknown clock part {part!r}: one of {', '.join(self.parts)}")
        begun = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] += time.perf_counter() - begun
