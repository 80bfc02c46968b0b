"""The layerpar arm's step breakdown: parts per step, the remainder, means over repeats."""

from __future__ import annotations

import math

from layerpar.bench.breakdown import OTHER, ROWS, STEP, breakdown_markdown, breakdown_per_step, mean_breakdown


def test_parts_and_the_remainder_add_up_to_the_mean_step() -> None:
    seconds = {"forward": 0.3, "backward": 0.5, "wait: receive": 0.1}
    per_step = breakdown_per_step(seconds, [0.5, 0.5])  # two steps of 0.5 s
    assert per_step["forward"] == 150.0 and per_step["backward"] == 250.0
    assert per_step["optimizer"] == 0.0  # a part never entered
    assert math.isclose(per_step[OTHER], 500.0 - 450.0) and per_step[STEP] == 500.0
    assert list(per_step) == list(ROWS)


def test_mean_over_repeats_per_rank_and_none_without_a_breakdown() -> None:
    a = breakdown_per_step({"forward": 0.1}, [0.2])
    b = breakdown_per_step({"forward": 0.3}, [0.4])
    mean = mean_breakdown([[a, b], [b, a]])
    assert mean is not None and [r["forward"] for r in mean] == [200.0, 200.0]
    assert mean_breakdown([None, None]) is None


def test_markdown_has_a_row_per_part_and_a_column_per_rank() -> None:
    per_rank = [breakdown_per_step({"forward": 0.1, "backward": 0.1}, [0.4])] * 2
    lines = breakdown_markdown({"devices": 2, "breakdown_ms_per_step": per_rank})
    assert "K = 2" in lines[0]
    assert lines[2] == "| part (ms per step) | rank 0 | rank 1 |"
    assert "| forward | 100.0 (25 %) | 100.0 (25 %) |" in lines
    assert lines[-1] == "| step (mean) | 400.0 | 400.0 |"
    assert len(lines) == 4 + len(ROWS)
