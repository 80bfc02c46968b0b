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
    lines = breakdown_markdown({"arm": "layerpar", "devices": 2, "breakdown_ms_per_step": per_rank})
    assert lines[0].startswith("Where layerpar's step goes at K = 2")
    assert lines[2] == "| part (ms per step) | rank 0 | rank 1 |"
    assert "| forward | 100.0 (25 %) | 100.0 (25 %) |" in lines
    assert lines[-1] == "| step (mean) | 400.0 | 400.0 |"
    assert len(lines) == 4 + len(ROWS)


def test_a_pipeline_arms_breakdown_has_its_own_parts_and_names_its_m() -> None:
    from layerpar.bench.pipeline_clock import PIPELINE_PARTS

    seconds = {"forward": 0.1, "backward: input": 0.05, "backward: weight": 0.05, "wait: p2p": 0.1}
    per_step = breakdown_per_step(seconds, [0.4], PIPELINE_PARTS)
    assert list(per_step) == [*PIPELINE_PARTS, OTHER, STEP]
    assert math.isclose(per_step[OTHER], 100.0)
    mean = mean_breakdown([[per_step, per_step]])
    assert mean is not None and list(mean[0]) == list(per_step)
    result = {"arm": "interleavedzb", "microbatches": 4, "devices": 2, "breakdown_ms_per_step": mean}
    lines = breakdown_markdown(result)
    assert lines[0].startswith("Where interleavedzb M = 4's step goes at K = 2")
    assert "| backward: weight | 50.0 (12 %) | 50.0 (12 %) |" in lines
    assert len(lines) == 4 + len(PIPELINE_PARTS) + 2


def test_report_table_quotes_the_run_with_serial_and_the_ideal(tmp_path) -> None:
    import json

    import pytest

    from layerpar.report.bench import breakdown_table
    from layerpar.report.results import ReportError, Results

    per_rank = [breakdown_per_step({"forward": 0.1, "backward": 0.2}, [0.4, 0.4])] * 2
    results = [
        {"arm": "serial", "devices": 1, "step_time_s_median": 0.6},
        {"arm": "layerpar", "devices": 2, "step_time_s_median": 0.4, "breakdown_ms_per_step": per_rank},
    ]
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "summary.json").write_text(json.dumps({"command": "layerpar bench x", "results": results}))
    table = breakdown_table(Results(tmp_path), ["b"])
    assert table.header == ("part (ms per step)", "rank 0", "rank 1")
    assert ("forward", "50.0 (12 %)", "50.0 (12 %)") in table.rows
    assert "the ideal at K = 2 is 300.0 ms, layerpar's slowest rank takes 400.0 ms" in table.notes[0]
    assert table.commands == ("layerpar bench x",)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "summary.json").write_text(json.dumps({"results": results[:1]}))
    with pytest.raises(ReportError, match="0 layerpar results with a breakdown"):
        breakdown_table(Results(tmp_path), ["old"])
