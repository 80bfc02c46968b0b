"""Which micro-batch each module forwards and backwards at each micro-step: pure functions.

Micro-batches are numbered from the start of a run of parallel steps: module 0 forwards
micro-batch r at run step r.  The two stale methods differ in where a module's input comes from:

* pipelined: module k's input is module k−1's output of the previous step, so module k forwards
  micro-batch r − k, and the adjoint of the last module's micro-batch travels back one module
  per step: module k backwards micro-batch r − 2(K−1) + k, D_k = 2(K−1−k) steps after its
  forward (the last module: at once).
* delayed: every module forwards micro-batch r on the AuxNet's prediction of its input, and
  backwards micro-batch r − (K−1−k) when the next module's true adjoint of it arrives.

``None`` means nothing to do yet (the pipeline is still filling).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Tick:
    """What one module does at one micro-step."""

    forward: int | None
    backward: int | None


def _at_least_zero(index: int) -> int | None:
    return index if index >= 0 else None


def pipeline_delay(stage: int, stages: int) -> int:
    """Micro-steps between module ``stage``'s forward of a micro-batch and its backward."""
    return 2 * (stages - 1 - stage)


def pipelined_tick(stage: int, stages: int, run_step: int) -> Tick:
    """Module ``stage`` of ``stages`` at step ``run_step`` of a run (the pipelined method)."""
    forward = run_step - stage
    return Tick(_at_least_zero(forward), _at_least_zero(forward - pipeline_delay(stage, stages)))


def delayed_tick(stage: int, stages: int, run_step: int) -> Tick:
    """Module ``stage`` of ``stages`` at step ``run_step`` of a run (the delayed method)."""
    return Tick(run_step, _at_least_zero(run_step - (stages - 1 - stage)))


def schedule_table(tick_fn: Callable[[int, int, int], Tick], stages: int, steps: int) -> list[list[Tick]]:
    """``table[r][k]``: module k at run step r (for ``layerpar info`` and the tests)."""
    return [[tick_fn(k, stages, r) for k in range(stages)] for r in range(steps)]
