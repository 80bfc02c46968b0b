"""The denoiser study table: one row per arm over its seeds, every metric against serial's and
issue 12's criteria (2-D: SWD within 10 %; images: loss 3 %, FD 10 %, conditional accuracy 2 pt)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerpar.report.diffusion import diffusion_table
from layerpar.report.results import ReportError, Results


def _write(folder: Path, arm: str, seed: int, **metrics: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "arm": arm,
        "seed": seed,
        "model": "m",
        "dataset": "d",
        "epochs": 3,
        "command": "python scripts/diffusion_study.py --study x",
        "metrics": {"n": 100, "sampler": "ddim", "sample_steps": 10, "guidance": 2.0, **metrics},
    }
    (folder / f"{arm}-s{seed}.json").write_text(json.dumps(record))


def test_point_study_compares_each_arm_with_serial(tmp_path: Path) -> None:
    study = tmp_path / "diffusion" / "toy"
    for seed, swd in ((0, 0.10), (1, 0.12)):
        _write(study, "serial", seed, held_out_loss=0.3, swd=swd, swd_floor=0.05, mmd=0.001)
    _write(study, "pipelined-K2", 0, held_out_loss=0.3, swd=0.121, swd_floor=0.05, mmd=0.002)
    _write(study, "al-K2", 0, held_out_loss=0.4, swd=0.2, swd_floor=0.05, mmd=0.01)
    table = diffusion_table(Results(tmp_path), ["diffusion/toy"])
    rows = {row[0]: row for row in table.rows}
    assert list(rows) == ["serial", "pipelined-K2", "al-K2"]
    assert rows["serial"][1] == "2" and rows["serial"][3] == "0.1100 ± 0.0141"
    assert rows["pipelined-K2"][4] == "+10.0%" and rows["pipelined-K2"][-1] == "yes"
    assert rows["al-K2"][4] == "+81.8%" and rows["al-K2"][-1] == "no"
    assert table.commands == ("python scripts/diffusion_study.py --study x",)
    assert len(table.sources) == 4


def test_image_study_checks_loss_fd_and_conditional_accuracy(tmp_path: Path) -> None:
    study = tmp_path / "diffusion" / "dit"
    common = {"classifier_fd_floor": 1.0, "classifier_test_acc": 0.98}
    _write(study, "serial", 0, held_out_loss=0.10, classifier_fd=10.0, cond_acc=0.90, **common)
    _write(study, "pipelined-K2", 0, held_out_loss=0.102, classifier_fd=10.5, cond_acc=0.89, **common)
    _write(study, "al-K2", 0, held_out_loss=0.102, classifier_fd=10.5, cond_acc=0.87, **common)
    rows = {row[0]: row for row in diffusion_table(Results(tmp_path), ["diffusion/dit"]).rows}
    assert rows["pipelined-K2"][3] == "+2.0%" and rows["pipelined-K2"][5] == "+5.0%"
    assert rows["pipelined-K2"][-1] == "yes"
    assert rows["al-K2"][-1] == "no"  # 3 pt of conditional accuracy lost


def test_a_study_without_serial_is_an_error(tmp_path: Path) -> None:
    _write(tmp_path / "diffusion" / "toy", "al-K2", 0, held_out_loss=0.3, swd=0.1, swd_floor=0.05, mmd=0.0)
    with pytest.raises(ReportError, match="no serial run"):
        diffusion_table(Results(tmp_path), ["diffusion/toy"])
