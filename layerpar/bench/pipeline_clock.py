"""Where a ``torch.distributed.pipelining`` arm's step goes, per rank.

The cost model predicts these arms from a per-block profile (``costmodel.py``,
``schedule_sim.py``); where it misses, the question is which part of the step it did not see:
slower compute per action than the profile's (small micro-batches, the zero-bubble schedules'
backward split into an input-gradient and a weight-gradient pass through autograd), posting or
waiting for a neighbour's message, or the runtime's own Python between actions.  This clock
times the compute, the messages and the loss on every rank of a real run; the remainder
(``other``) is the runtime's Python.

It wraps this rank's ``PipelineStage`` objects' compute methods (``forward_one_chunk``,
``backward_one_chunk``: ``backward`` when full, ``backward: input`` when split;
``backward_weight_one_chunk``: ``backward: weight``) and the schedule's
``_maybe_compute_loss`` on the instances, and torch's ``schedules._batch_p2p`` and
``schedules._wait_batch_p2p``, through which every schedule of torch 2.13 posts and waits for
its point-to-point messages (``post p2p``; ``wait: p2p``: receives not yet sent and sends not
yet taken).  All are torch's own names; if a torch release renames one, its part reads zero and
its time lands in ``other``, which the table shows rather than hides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from layerpar.bench.common import StepTimes, time_steps
from layerpar.parallel.clock import PhaseClock

PIPELINE_PARTS = (
    "batch",
    "forward",
    "backward",
    "backward: input",
    "backward: weight",
    "wait: p2p",
    "post p2p",
    "loss",
    "embedder sum",
    "optimizer",
)
"""The parts of a pipeline arm's step, in the order a report lists them."""


P2P_FUNCTIONS = {"_wait_batch_p2p": "wait: p2p", "_batch_p2p": "post p2p"}
"""torch's module-level functions in ``pipelining.schedules`` that wait for, and post, a batch of
point-to-point messages, and the part each is timed as."""


def _timed(clock: PhaseClock, part: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    def run(*args: Any, **kwargs: Any) -> Any:
        with clock(part):
            return fn(*args, **kwargs)

    return run


def clock_stages(clock: PhaseClock, stages: Sequence[Any]) -> None:
    """Time every compute call of ``stages`` (``PipelineStage``s) on ``clock``."""
    for stage in stages:
        backward = stage.backward_one_chunk

        def timed_backward(
            *args: Any, _backward: Any = backward, full_backward: bool = True, **kw: Any
        ) -> Any:
            with clock("backward" if full_backward else "backward: input"):
                return _backward(*args, full_backward=full_backward, **kw)

        stage.forward_one_chunk = _timed(clock, "forward", stage.forward_one_chunk)
        stage.backward_one_chunk = timed_backward
        stage.backward_weight_one_chunk = _timed(clock, "backward: weight", stage.backward_weight_one_chunk)


def clock_loss(clock: PhaseClock, schedule: Any) -> None:
    """Time ``schedule``'s loss on the last stage's outputs (torch's ``_maybe_compute_loss``)."""
    compute = getattr(schedule, "_maybe_compute_loss", None)
    if compute is not None:
        schedule._maybe_compute_loss = _timed(clock, "loss", compute)


@contextmanager
def clocked_p2p_waits(clock: PhaseClock) -> Iterator[None]:
    """Within the block, time torch's point-to-point waits as ``wait: p2p``."""
    from torch.distributed.pipelining import schedules

    originals = {name: getattr(schedules, name, None) for name in P2P_FUNCTIONS}
    for name, function in originals.items():
        if function is not None:  # a torch without it: its time stays in ``other``
            setattr(schedules, name, _timed(clock, P2P_FUNCTIONS[name], function))
    try:
        yield
    finally:
        for name, function in originals.items():
            if function is not None:
                setattr(schedules, name, function)


def new_pipeline_clock() -> PhaseClock:
    """A clock of ``PIPELINE_PARTS``, off until ``start``."""
    return PhaseClock(PIPELINE_PARTS)


def time_with_breakdown(step: Callable[[int], None], clock: PhaseClock, warmup: int, steps: int) -> StepTimes:
    """``time_steps`` of ``step`` with ``clock`` (its stages already wrapped, ``clock_stages``)
    counting the timed steps: times, bytes, and where the steps went (no stash)."""
    from layerpar.bench.breakdown import breakdown_per_step

    def run(i: int) -> None:
        if i == warmup:
            clock.start()  # the timed steps only, after time_steps' barrier
        step(i)

    with clocked_p2p_waits(clock):
        times, sent = time_steps(run, warmup, steps)
    return times, sent, breakdown_per_step(clock.stop(), times, PIPELINE_PARTS), None
