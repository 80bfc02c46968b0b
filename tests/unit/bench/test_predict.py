"""Prediction tables, validation against a bench summary, and the files written."""

from __future__ import annotations

import dataclasses
import json

import pytest

from layerpar.bench.costmodel import LINKS, Link
from layerpar.bench.predict import predict_table
from layerpar.bench.predict_report import write_predictions
from layerpar.bench.profile import BlockTimes, Profile
from layerpar.bench.validate import load_summary, measured_cut, run_clock, run_contention, validate
from layerpar.errors import ConfigError
from tests.unit.bench.fakes import hand_profile

LINK = Link(latency_s=0.05, bandwidth_Bps=80.0, name="hand")


def test_table_covers_every_layout_and_marks_impossible_ones():
    rows = predict_table(hand_profile(), range(1, 7), [1, 2], ["serial", "layerpar", "ddp", "gpipe"], LINK, [2, 4])
    serial = [r for r in rows if r["arm"] == "serial"]
    assert len(serial) == 1 and serial[0]["speedup_vs_serial"] == pytest.approx(1.0)
    layerpar = {(r["stages"], r["replicas"]): r for r in rows if r["arm"] == "layerpar"}
    assert len(layerpar) == 12
    assert layerpar[(5, 1)]["step_time_s"] is None and "4 blocks into 5 stages" in layerpar[(5, 1)]["note"]
    assert layerpar[(4, 1)]["step_time_s"] is None and "no AuxNet timings for K=4" in layerpar[(4, 1)]["note"]
    assert layerpar[(3, 1)]["step_time_s"] > 0
    assert layerpar[(2, 1)]["step_time_s"] == pytest.approx(9.5)
    assert layerpar[(2, 1)]["devices"] == 2 and layerpar[(2, 2)]["devices"] == 4
    gpipe = [r for r in rows if r["arm"] == "gpipe"]
    assert {r["microbatches"] for r in gpipe} == {2, 4}
    assert next(r for r in gpipe if (r["stages"], r["replicas"], r["microbatches"]) == (2, 1, 2))["step_time_s"] \
        == pytest.approx(12.6)
    ddp = {(r["stages"], r["replicas"]): r for r in rows if r["arm"] == "ddp"}
    assert ddp[(6, 2)]["step_time_s"] is None  # 8 samples over 12 devices
    assert all(r["link"] == "hand" for r in rows)


def test_unknown_arm_is_refused():
    with pytest.raises(ConfigError, match="valid"):
        predict_table(hand_profile(), [2], [1], ["serial", "fsdp"], LINK)


def test_validate_matches_arm_devices_and_microbatches():
    rows = predict_table(hand_profile(), [1, 2], [1], ["serial", "layerpar", "gpipe"], LINK, [2, 4])
    measured = [
        {"arm": "serial", "devices": 1, "step_time_s_median": 12.5, "microbatches": None},
        {"arm": "layerpar", "devices": 2, "step_time_s_median": 10.0, "microbatches": None},
        {"arm": "gpipe", "devices": 2, "step_time_s_median": 10.0, "microbatches": 2},
        {"arm": "gpipe", "devices": 2, "step_time_s_median": 10.0, "microbatches": 8},
    ]
    checked = validate(rows, measured)
    assert [c["arm"] for c in checked] == ["serial", "layerpar", "gpipe", "gpipe"]
    assert checked[0]["rel_error"] == pytest.approx(0.0)
    assert checked[1]["predicted_s"] == pytest.approx(9.5)
    assert checked[1]["rel_error"] == pytest.approx(-0.05)
    assert checked[2]["rel_error"] == pytest.approx(0.26)
    assert checked[3]["predicted_s"] is None  # no prediction for M = 8
    # speedups over serial from the same run: measured 12.5 / 10, predicted 12.5 / 9.5
    assert checked[1]["measured_speedup"] == pytest.approx(1.25)
    assert checked[1]["speedup_rel_error"] == pytest.approx((12.5 / 9.5) / 1.25 - 1)


def test_contended_prediction_is_validated_too():
    rows = predict_table(hand_profile(), [2], [1], ["layerpar"], LINK)
    rows[0]["step_time_s_contended"] = 11.0
    (checked,) = validate(rows, [{"arm": "layerpar", "devices": 2, "step_time_s_median": 10.0}])
    assert checked["rel_error_contended"] == pytest.approx(0.1)


def test_the_run_clock_comes_from_the_serial_and_contention_arms():
    prof = hand_profile()  # serial predicted: 0.1 + 12 + 0.4 = 12.5 s
    arms = ["serial", "contention", "ddp"]
    rows = predict_table(prof, [1, 2], [1], arms, LINK, [2])
    measured = [  # the machine ran at half the profile's speed, and two copies slow each other 1.2x
        {"arm": "serial", "devices": 1, "step_time_s_median": 25.0, "microbatches": None},
        {"arm": "contention", "devices": 2, "step_time_s_median": 30.0, "microbatches": None},
        {"arm": "ddp", "devices": 2, "step_time_s_median": 26.0, "microbatches": None},
    ]
    assert run_contention(measured) == {2: pytest.approx(1.2)}
    assert run_clock(rows, measured, prof, arms=arms, replicas=[1], link=LINK, microbatches=[2]) == {
        2: pytest.approx(1.2)
    }
    serial, probe, ddp = validate(rows, measured)
    assert serial["run_clock_anchor"] and probe["run_clock_anchor"]
    assert "rel_error_run_clock" not in serial
    # ddp at batch 4: 0.1 + 1.2·6 + 0.4 + all-reduce 5.1 = 12.8 s at the profile's clock; ×2 here
    assert ddp["predicted_run_clock_s"] == pytest.approx(25.6)
    assert ddp["rel_error_run_clock"] == pytest.approx(25.6 / 26.0 - 1)
    assert ddp["rel_error"] == pytest.approx(11.6 / 26.0 - 1)  # the plain model: 0.1 + 6 + 0.4 + 5.1


def test_at_the_run_clock_each_arm_is_predicted_with_the_cut_it_ran():
    """A ``time`` balance cuts anew at every start: the run's-clock prediction of an arm uses the
    cut its repeats ran most often, not the profile's own."""
    from layerpar.bench.profile import partition_bounds

    prof = dataclasses.replace(hand_profile(), timings=(BlockTimes(8, (1.0, 1.0, 1.0, 3.0), (2.0,) * 4),))
    assert partition_bounds(prof, 2) == (0, 2, 4)  # the profile's cut: 6 s | 8 s
    assert partition_bounds(prof.with_cut((0, 3, 4)), 2) == (0, 3, 4)  # 9 s | 5 s
    assert partition_bounds(prof.with_cut((0, 3, 4)), 3) == partition_bounds(prof, 3)
    assert Profile.from_dict(prof.with_cut((0, 3, 4)).to_dict()).cuts == ((0, 3, 4),)
    arms = ["serial", "contention", "gpipe"]
    rows = predict_table(prof, [1, 2], [1], arms, LINK, [2])
    measured = [
        {"arm": "serial", "devices": 1, "step_time_s_median": 25.0, "microbatches": None},
        {"arm": "contention", "devices": 2, "step_time_s_median": 25.0, "microbatches": None},
        {"arm": "gpipe", "devices": 2, "step_time_s_median": 20.0, "microbatches": 2,
         "bounds_per_repeat": [[0, 3, 4], [0, 2, 4], [0, 3, 4]]},
    ]
    gpipe = next(r for r in rows if r["arm"] == "gpipe" and r["devices"] == 2)
    assert measured_cut(measured, gpipe) == (0, 3, 4)  # two repeats of three
    run_clock(rows, measured, prof, arms=arms, replicas=[1], link=LINK, microbatches=[2])
    assert gpipe["run_clock_cut"] == [0, 3, 4]
    scale = 25.0 / next(r for r in rows if r["arm"] == "serial")["step_time_s"]
    own_cut = predict_table(prof.with_cut((0, 3, 4)), [2], [1], ["gpipe"], LINK, [2])[0]["step_time_s"]
    assert gpipe["step_time_s_run_clock"] == pytest.approx(scale * own_cut)
    assert own_cut != pytest.approx(gpipe["step_time_s"])  # the profile's cut predicts another step


def test_no_run_clock_without_its_two_arms():
    prof = hand_profile()
    rows = predict_table(prof, [1, 2], [1], ["serial", "ddp"], LINK)
    measured = [{"arm": "serial", "devices": 1, "step_time_s_median": 25.0, "microbatches": None}]
    assert run_clock(rows, measured, prof, arms=["serial", "ddp"], replicas=[1], link=LINK, microbatches=[4]) == {}
    assert all("step_time_s_run_clock" not in r for r in rows)


def test_files_are_written(tmp_path):
    prof = hand_profile()
    arms = ["serial", "layerpar", "ddp", "gpipe", "1f1b"]
    rows = predict_table(prof, range(1, 6), [1], arms, LINKS["nvlink"], 2)
    checked = validate(rows, [{"arm": "layerpar", "devices": 2, "step_time_s_median": 10.0}])
    paths = write_predictions(tmp_path, prof, rows, checked, LINKS["nvlink"])
    for key in ("predictions", "profile", "scaling", "predicted_vs_measured"):
        assert paths[key].is_file() and paths[key].stat().st_size > 0
    data = json.loads(paths["predictions"].read_text())
    assert data["link"]["name"] == "nvlink" and len(data["predictions"]) == len(rows)
    assert data["validation"][0]["arm"] == "layerpar"


def test_no_validation_plot_without_measurements(tmp_path):
    prof = hand_profile()
    paths = write_predictions(tmp_path, prof, predict_table(prof, [1, 2], [1], link=LINK), [], LINK)
    assert "predicted_vs_measured" not in paths and paths["scaling"].is_file()


def test_load_summary(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text(json.dumps({"command": "layerpar bench", "results": [{"arm": "serial"}]}))
    assert load_summary(path) == ("layerpar bench", [{"arm": "serial"}])
    path.write_text("[]")
    with pytest.raises(ConfigError, match="summary.json"):
        load_summary(path)


def test_the_runtime_probe_runs_at_the_measured_pipeline_k_or_the_smallest():
    from layerpar.bench.predict_run import _runtime_stages

    assert _runtime_stages([1, 2, 3, 4], [{"arm": "gpipe", "devices": 3}, {"arm": "ddp", "devices": 4}]) == [3]
    assert _runtime_stages([1, 2, 3, 4], []) == [2]  # other K use the nearest probed one
    assert _runtime_stages([1], []) == []
