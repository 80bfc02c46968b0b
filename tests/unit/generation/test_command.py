"""``layerpar sample`` end to end: a picture, metrics JSON with its reproducing command, and
clear errors (exit 2, nothing written) for bad arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerpar.cli import main


def test_sample_writes_a_grid_and_refuses_metrics_it_cannot_compute(
    digits_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, metrics = tmp_path / "grid.png", tmp_path / "m" / "metrics.json"
    # digits have no feature classifier: asking for image metrics is refused before sampling
    code = main(["sample", str(digits_run), "--n", "20", "--out", str(out), "--steps", "3"])
    assert code == 0 and out.read_bytes()[:4] == b"\x89PNG"
    assert "20 samples" in capsys.readouterr().out
    code = main(
        [
            "sample",
            str(digits_run),
            "--n",
            "10",
            "--out",
            str(tmp_path / "second.png"),
            "--metrics",
            str(metrics),
            "--metrics-n",
            "20",
        ]
    )
    assert code == 2 and not metrics.exists() and not (tmp_path / "second.png").exists()
    assert "feature classifier" in capsys.readouterr().err


def test_toy_scatter_with_metrics_records_its_command(
    toy_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    metrics = tmp_path / "m.json"
    code = main(
        ["sample", str(toy_run), "--n", "50", "--metrics", str(metrics), "--metrics-n", "50", "--seed", "2"]
    )
    assert code == 0
    assert (toy_run / "samples.png").read_bytes()[:4] == b"\x89PNG"
    record = json.loads(metrics.read_text())
    assert record["command"].startswith(f"layerpar sample {toy_run} --n 50 --seed 2")
    assert record["n"] == 50 and record["swd"] > 0
    printed = capsys.readouterr().out
    assert "swd" in printed and "data:" in printed


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--out", "x.jpg"], "ending in .png"),
        (["--metrics", "m.txt"], "ending in .json"),
        (["--sampler", "ddpm", "--steps", "7"], "takes all 50 steps"),
        (["--n", "0"], "at least one sample"),
    ],
)
def test_bad_arguments_are_clear_errors(
    toy_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    before = sorted(toy_run.iterdir())
    extra = [str(tmp_path / e) if e.endswith((".jpg", ".txt")) else e for e in extra]
    assert main(["sample", str(toy_run), *extra]) == 2
    assert message in capsys.readouterr().err
    assert sorted(toy_run.iterdir()) == before and list(tmp_path.iterdir()) == []


def test_a_missing_run_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
