"""The pipeline schedules are pure functions: checked against tables written out by hand.

Each cell is (micro-batch forwarded, micro-batch backwarded) by module k at run step r; "-" is
nothing (the pipeline is filling).  Pipelined: module k forwards r − k and backwards
r − 2(K−1) + k; delayed: every module forwards r and backwards r − (K−1−k).
"""

from __future__ import annotations

import pytest

from layerpar.parallel.pipeline_schedule import Tick, delayed_tick, pipelined_tick, schedule_table


def _parse(rows: str) -> list[list[Tick]]:
    def cell(text: str) -> Tick:
        forward, backward = text.strip("()").split(",")
        return Tick(None if forward == "-" else int(forward), None if backward == "-" else int(backward))

    return [[cell(c) for c in line.split()] for line in rows.strip().splitlines()]


PIPELINED = {
    2: """
        (0,-) (-,-)
        (1,-) (0,0)
        (2,0) (1,1)
        (3,1) (2,2)
    """,
    3: """
        (0,-) (-,-) (-,-)
        (1,-) (0,-) (-,-)
        (2,-) (1,-) (0,0)
        (3,-) (2,0) (1,1)
        (4,0) (3,1) (2,2)
        (5,1) (4,2) (3,3)
    """,
    4: """
        (0,-) (-,-) (-,-) (-,-)
        (1,-) (0,-) (-,-) (-,-)
        (2,-) (1,-) (0,-) (-,-)
        (3,-) (2,-) (1,-) (0,0)
        (4,-) (3,-) (2,0) (1,1)
        (5,-) (4,0) (3,1) (2,2)
        (6,0) (5,1) (4,2) (3,3)
        (7,1) (6,2) (5,3) (4,4)
    """,
}

DELAYED = {
    2: """
        (0,-) (0,0)
        (1,0) (1,1)
        (2,1) (2,2)
    """,
    3: """
        (0,-) (0,-) (0,0)
        (1,-) (1,0) (1,1)
        (2,0) (2,1) (2,2)
        (3,1) (3,2) (3,3)
    """,
    4: """
        (0,-) (0,-) (0,-) (0,0)
        (1,-) (1,-) (1,0) (1,1)
        (2,-) (2,0) (2,1) (2,2)
        (3,0) (3,1) (3,2) (3,3)
    """,
}


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_pipelined_schedule_matches_the_hand_written_table(stages):
    want = _parse(PIPELINED[stages])
    assert schedule_table(pipelined_tick, stages, len(want)) == want


@pytest.mark.parametrize("stages", [2, 3, 4])
def test_delayed_schedule_matches_the_hand_written_table(stages):
    want = _parse(DELAYED[stages])
    assert schedule_table(delayed_tick, stages, len(want)) == want


@pytest.mark.parametrize("stages", [2, 3, 4, 8])
def test_every_micro_batch_is_forwarded_then_backwarded_once_by_every_module(stages):
    steps = 40
    table = schedule_table(pipelined_tick, stages, steps)
    for k in range(stages):
        forwards = [r for r in range(steps) if table[r][k].forward is not None]
        backwards = [table[r][k].backward for r in range(steps) if table[r][k].backward is not None]
        assert backwards == list(range(len(backwards)))  # in order, none skipped or repeated
        for b in backwards:  # a module backwards a micro-batch only after it forwarded it
            assert table[forwards[0] + b][k].forward == b
