"""Every bad input an operator tried (the reliability issue's list) through the real CLI entry
point: exit code 2, a `layerpar: error:` that names the key, the value and the rule, and no
run folder or file left behind.  Then the resume checks: a resume that does not fit its
checkpoint is refused with the differing fields, and a finished run's folder is not reused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from layerpar.cli import main

ROOT = Path(__file__).resolve().parents[2]
TINY = str(ROOT / "configs" / "digits_tiny.yaml")
FAST = ["data.train_limit=128", "train.batch_size=32", "train.epochs=1", "train.progress=false",
        "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0", "parallel.balance=blocks"]


def _train(tmp_path: Path, *sets: str, extra: tuple[str, ...] = ()) -> list[str]:
    items = [*FAST, f"train.out_dir={tmp_path / 'runs'}", "train.run_name=r", *sets]
    return ["train", "--config", TINY, *[f"--set={item}" for item in items], *extra]


@pytest.mark.parametrize(("setting", "message"), [
    ("optim.lr=-1", "optim.lr must be > 0, got -1"),
    ("optim.lr=.inf", "optim.lr must be a finite number"),
    ("model.width=0", "model.width must be >= 1, got 0"),
    ("train.eval_every=0", "train.eval_every must be >= 1, got 0"),
    ("train.eval_every_steps=0", "train.eval_every_steps must be >= 1, got 0"),
    ("train.epochs=0", "train.epochs must be > 0, got 0"),
    ("train.epochs=-1", "train.epochs must be > 0, got -1"),
    ("train.stop_at_step=-3", "train.stop_at_step must be >= 1, got -3"),
    ("checkpoint.keep=0", "checkpoint.keep must be >= 1, got 0"),
    ("checkpoint.every_min=-1", "checkpoint.every_min must be > 0"),
    ("train.check_finite_every=-1", "train.check_finite_every must be >= 0"),
    ("optim.lr=fast", "optim.lr"),
])
def test_a_bad_value_is_refused_before_anything_is_written(tmp_path, capsys, setting, message):
    assert main(_train(tmp_path, setting)) == 2
    err = capsys.readouterr().err
    assert err.startswith("layerpar: error:") and message in err, err
    assert not (tmp_path / "runs").exists()


def test_an_exponent_learning_rate_is_a_number(tmp_path, capsys):
    assert main(_train(tmp_path, "optim.lr=1e-3", "train.stop_at_step=1")) == 0
    record = json.loads((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert record["config"]["optim"]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize(("line", "message"), [
    ("nodes: 0", "nodes must be >= 1, got 0"),
    ("timeout_min: -1", "timeout_min must be a number > 0, got -1"),
    ("max_restarts: -1", "max_restarts must be >= 0, got -1"),
    ("master_port: 70000", "master_port must be in 1..65535"),
])
def test_a_bad_cluster_config_is_refused(tmp_path, capsys, line, message):
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(f"launcher: local\n{line}\n")
    assert main(_train(tmp_path, extra=("--cluster", str(cluster)))) == 2
    err = capsys.readouterr().err
    assert message in err, err
    assert not (tmp_path / "runs").exists()


def test_a_missing_cluster_file_points_at_the_presets(tmp_path, capsys):
    assert main(_train(tmp_path, extra=("--cluster", str(tmp_path / "nope.yaml")))) == 2
    assert "cluster_configs/" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.fixture()
def finished_run(tmp_path, capsys):
    """A short run of the al method (stopped at step 2, so it can be resumed)."""
    assert main(_train(tmp_path, "train.stop_at_step=2")) == 0
    capsys.readouterr()
    return tmp_path / "runs" / "r"


def test_reusing_a_run_name_without_resume_is_refused(tmp_path, capsys, finished_run):
    before = (finished_run / "metrics.jsonl").read_text()
    assert main(_train(tmp_path)) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "train.run_name" in err
    assert (finished_run / "metrics.jsonl").read_text() == before  # nothing appended


@pytest.mark.parametrize(("change", "field"), [
    ("layerpar.method=pipelined", "layerpar.method: checkpoint 'al', this run 'pipelined'"),
    ("parallel.stages=3", "parallel.stages: checkpoint 2, this run 3"),
    ("model.name=resnet32", "model.name: checkpoint 'resnet20', this run 'resnet32'"),
    ("parallel.balance=params", "parallel.balance: checkpoint 'blocks', this run 'params'"),
    ("train.dtype=float64", "train.dtype"),
])
def test_a_resume_that_does_not_fit_its_checkpoint_names_the_fields(tmp_path, capsys, finished_run, change, field):
    config_before = (finished_run / "config.yaml").read_text()
    assert main(_train(tmp_path, change, extra=("--resume",))) == 2
    err = capsys.readouterr().err
    assert "cannot resume" in err and field in err, err
    assert (finished_run / "config.yaml").read_text() == config_before  # not overwritten


def test_a_tampered_shard_is_refused_by_its_checksum(tmp_path, capsys, finished_run):
    shard = next((finished_run / "checkpoint").glob("step-*/rank1.pt"))
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0xFF  # same size, different bytes
    shard.write_bytes(bytes(data))
    assert main(_train(tmp_path, extra=("--resume",))) == 2
    assert "does not match the checksum" in capsys.readouterr().err


def test_resume_goes_on_and_a_lower_learning_rate_is_allowed(tmp_path, capsys, finished_run):
    assert main(_train(tmp_path, "optim.lr=0.01", extra=("--resume",))) == 0
    record = json.loads((finished_run / "summary.json").read_text())
    assert record["steps"] == 4 and record["final_test_acc"] is not None


def test_export_writes_the_assembled_backbone(tmp_path, capsys, finished_run):
    import torch

    from layerpar.config import load_config
    from layerpar.parallel.setup import build_model_for

    out = tmp_path / "state.pt"
    assert main(["export", str(finished_run), "--out", str(out)]) == 0
    state = torch.load(out, weights_only=True)
    model, _, _ = build_model_for(load_config(TINY), None)
    model.load_state_dict(state)  # a plain state_dict of the config's backbone
    assert main(["export", str(tmp_path / "nothing"), "--out", str(tmp_path / "x.pt")]) == 2
    assert "no complete checkpoint set" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()
