"""`layerpar bench` end to end on a tiny preset: every arm runs, results have the documented shape."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from layerpar.cli import main

ROOT = Path(__file__).resolve().parents[2]
REQUIRED = ("arm", "stages", "devices", "step_time_s_median", "step_time_s_spread", "samples_per_s",
            "final_test_acc", "time_to_target_s", "peak_mem_mb", "bytes_per_step", "config", "git_commit", "torch")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_bench_writes_summary_table_and_plots(tmp_path: Path) -> None:
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--arms", "serial,layerpar,ddp,gpipe,1f1b",
                 "--stages", "2", "--repeats", "1", "--steps", "2", "--warmup-steps", "1", "--train",
                 "--eval-every-steps", "10", "--out", str(tmp_path), "--name", "b"])
    assert code == 0
    out = tmp_path / "b"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].startswith("layerpar bench")
    rows = {(r["arm"], r["devices"]): r for r in summary["results"]}
    assert set(rows) == {("serial", 1), ("layerpar", 2), ("ddp", 2), ("gpipe", 2), ("1f1b", 2)}
    for row in rows.values():
        assert all(key in row for key in REQUIRED), row.keys()
        assert row["step_time_s_median"] > 0
    # Trained arms have accuracy; exact-gradient arms are step-time only.
    assert 0 < rows[("serial", 1)]["final_test_acc"] <= 1
    # The target is serial's final accuracy − 0.5 pt; time to it: the training seconds at the
    # first evaluation that reaches it, at most the whole run's.
    serial = rows[("serial", 1)]
    assert serial["target_acc"] == pytest.approx(serial["final_test_acc"] - 0.005)
    reached = [p["train_time_s"] for p in serial["epochs_log"] if p["test_acc"] >= serial["target_acc"]]
    assert reached and serial["time_to_target_s"] == reached[0]
    assert 0 < serial["time_to_target_s"] <= serial["train_time_s"]
    assert rows[("ddp", 2)]["final_test_acc"] is None
    # Counted bytes: layer-parallel sends one adjoint per step (plus the AuxNet all-reduce),
    # GPipe an activation and a gradient per micro-batch.
    assert 0 < rows[("layerpar", 2)]["bytes_per_step"] < rows[("gpipe", 2)]["bytes_per_step"]
    assert rows[("serial", 1)]["bytes_per_step"] == 0
    for name in ("table.md", "speedup.png", "accuracy_vs_time.png"):
        assert (out / name).is_file(), name


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pinned_bench_runs_each_rank_on_a_core_of_its_own(tmp_path: Path) -> None:
    """--pin-cores: every rank of every arm is confined to its own core (recorded per rank in
    summary.json, read back from the worker's own affinity); serial-threads gets the first K."""
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        pytest.skip(f"needs 2 usable cores to pin K = 2 ranks apart, this process has {len(cores)}")
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--arms",
                 "serial,serial-threads,layerpar,ddp", "--stages", "2", "--repeats", "1", "--steps", "2",
                 "--warmup-steps", "1", "--pin-cores", "--out", str(tmp_path), "--name", "p"])
    assert code == 0
    summary = json.loads((tmp_path / "p" / "summary.json").read_text())
    assert "--pin-cores" in summary["command"]
    rows = {r["arm"]: r for r in summary["results"]}
    assert all(row["pinned"] for row in rows.values())
    assert rows["serial"]["cores_per_rank"] == [[cores[0]]]
    assert rows["serial-threads"]["cores_per_rank"] == [cores[:2]]
    for arm in ("layerpar", "ddp"):
        assert rows[arm]["cores_per_rank"] == [[cores[0]], [cores[1]]], arm


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_every_exact_pipeline_schedule_runs_at_every_m_and_the_best_m_is_marked(tmp_path: Path) -> None:
    """The two-stages-per-rank schedules (interleaved 1F1B, interleaved zero-bubble, ZBV,
    DualPipeV) beside 1F1B, swept over M = 2, 4: one row per arm and M, the fastest flagged."""
    arms = "serial,1f1b,interleaved1f1b,interleavedzb,zbv,dualpipev"
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--arms", arms, "--stages", "2",
                 "--repeats", "1", "--steps", "2", "--warmup-steps", "1", "--microbatches", "2,4",
                 "--out", str(tmp_path), "--name", "m"])
    assert code == 0
    summary = json.loads((tmp_path / "m" / "summary.json").read_text())
    assert "--microbatches 2,4" in summary["command"]
    rows = {(r["arm"], r["microbatches"]): r for r in summary["results"]}
    pipeline_arms = arms.split(",")[1:]
    # DualPipeV needs M >= 2K = 4: its M=2 is skipped, and said so.
    ran = {(a, m) for a in pipeline_arms for m in (2, 4)} - {("dualpipev", 2)}
    assert set(rows) == {("serial", None)} | ran
    assert summary["skipped"] == ["dualpipev M=2 at K=2: skipped, the schedule needs M ≥ 4"]
    for arm in pipeline_arms:
        measured = [rows[(arm, m)] for m in (2, 4) if (arm, m) in rows]
        assert sum(r["best_m"] for r in measured) >= 1
        assert all(r["bytes_per_step"] > 0 for r in measured)
    table = (tmp_path / "m" / "table.md").read_text()
    assert "zbv M=2" in table and "dualpipev M=4" in table and "needs M ≥ 4" in table


def test_two_stage_schedules_place_stages_in_a_loop_or_a_v() -> None:
    from layerpar.bench.multistage_arms import stage_ids

    assert [stage_ids("interleaved1f1b", r, 2) for r in range(2)] == [(0, 2), (1, 3)]
    assert [stage_ids("zbv", r, 2) for r in range(2)] == [(0, 3), (1, 2)]  # rank 0: first and last
    assert [stage_ids("dualpipev", r, 4) for r in range(4)] == [(0, 7), (1, 6), (2, 5), (3, 4)]


def test_unknown_arm_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--arms", "serial,nope",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "nope" in capsys.readouterr().err
    assert not any(tmp_path.iterdir()), "a rejected run must not leave a results folder"


@pytest.mark.timeout(300)
def test_one_device_bench_measures_stages_and_validates_the_model(tmp_path: Path) -> None:
    """`--one-device` (what a single GPU can measure; here the CPU stands in for it): serial and
    each stage's step in turn, then the model profiled on the same device predicts them."""
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--one-device", "--device", "cpu",
                 "--stages", "2,3", "--repeats", "1", "--steps", "3", "--warmup-steps", "1", "--predict",
                 "--max-stages", "4", "--link", "nvlink", "--out", str(tmp_path), "--name", "g"])
    assert code == 0
    out = tmp_path / "g"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["command"].startswith("layerpar bench")
    rows = {(r["arm"], r["devices"]): r for r in summary["results"]}
    assert set(rows) == {("serial", 1), ("layerpar", 2), ("layerpar", 3)}
    for k in (2, 3):
        stage_times = rows[("layerpar", k)]["stage_step_s_median"]
        assert len(stage_times) == k and all(t > 0 for t in stage_times)
        assert rows[("layerpar", k)]["step_time_s_median"] == max(stage_times)
    predictions = json.loads((out / "predict" / "predictions.json").read_text())
    checked = {(v["arm"], v["devices"]) for v in predictions["validation"]}
    assert {("serial", 1), ("layerpar", 2), ("layerpar", 3)} <= checked
    assert (out / "table.md").is_file() and (out / "predict" / "scaling.png").is_file()


def test_one_device_bench_on_cuda_without_gpu_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the error path cannot be reached")
    code = main(["bench", "--config", str(ROOT / "configs/digits_tiny.yaml"), "--one-device", "--device", "cuda",
                 "--out", str(tmp_path)])
    assert code == 2
    assert "no CUDA device" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
