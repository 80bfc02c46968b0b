"""In-process trainers: a layer-parallel run whose every step is serial *is* serial backprop."""

from __future__ import annotations

import json
import math

import pytest
import torch

from layerpar.checkpoint import load_checkpoint
from layerpar.parallel.checkpoints import latest_set
from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer, serial_config
from tests.helpers.oracle import digits_config, relative_error


def _steps(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == "step"]


def _config(tmp_path, name, stages, *extra):
    return digits_config(
        tmp_path, "data.train_limit=160", "data.test_limit=64", "train.epochs=1",
        "layerpar.bn_reestimate_batches=1", f"train.run_name={name}", *extra, stages=stages,
    )


@pytest.mark.parametrize("stages", [2, 3])
def test_all_serial_layer_parallel_run_equals_serial_trainer(tmp_path, stages):
    """Serial steps across K modules (activations and gradients through LocalComm) reproduces
    plain backprop on the whole model: same losses, same final parameters, same accuracy."""
    extra = ("layerpar.warmup_epochs=1", "layerpar.serial_final_epochs=0")
    par = LayerParallelTrainer(_config(tmp_path, "par", stages, *extra)).fit()
    ser = SerialTrainer(_config(tmp_path, "ser", stages, *extra)).fit()
    a, b = _steps(par.run_dir), _steps(ser.run_dir)
    assert len(a) == len(b) == 5
    assert all(r["serial"] == 1.0 for r in a)
    for ra, rb in zip(a, b):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-12, abs=1e-14)
    ma = load_checkpoint(par.run_dir / "model.pt")["model"]
    mb = load_checkpoint(ser.run_dir / "model.pt")["model"]
    assert ma.keys() == mb.keys()
    for key in ma:
        torch.testing.assert_close(ma[key], mb[key], rtol=1e-12, atol=1e-14, msg=key)
    assert par.final_test_acc == ser.final_test_acc
    assert par.record["stages"] == stages and ser.record["stages"] == 1


def test_serial_config_is_one_module():
    c = serial_config(digits_config("/tmp/unused", "parallel.replicas=2", stages=3))
    assert (c.parallel.stages, c.parallel.replicas, c.train.mode) == (1, 1, "serial")


def test_parallel_steps_run_and_record_metrics(tmp_path):
    """A short AL run with serial warm-up, parallel middle and serial end writes one record per
    step with finite losses, residuals and AuxNet losses."""
    config = _config(tmp_path, "mix", 2, "layerpar.warmup_epochs=0.4", "layerpar.serial_final_epochs=0.2")
    summary = LayerParallelTrainer(config).fit()
    steps = _steps(summary.run_dir)
    assert [r["serial"] for r in steps] == [1.0, 1.0, 0.0, 0.0, 1.0]
    for r in steps:
        assert r["loss"] is not None and r["loss"] > 0
    parallel = [r for r in steps if r["serial"] == 0.0]
    assert all("residual/0" in r and "aux_loss/0" in r and "local_loss/0" in r for r in parallel)
    assert 0.0 <= summary.final_test_acc <= 1.0
    assert (summary.run_dir / "summary.json").is_file()
    final_set = latest_set(summary.run_dir / "checkpoint")
    assert final_set is not None and final_set.step == 5
    assert sorted(final_set.manifest["shards"]) == ["0", "1"] and final_set.shard_path(1).is_file()


def test_auxnet_replicas_stay_identical_and_train(tmp_path):
    """Every worker holds an AuxNet replica; all-reduced gradients keep the parameters equal."""
    config = _config(tmp_path, "aux", 3, "layerpar.warmup_epochs=0.4", "layerpar.serial_final_epochs=0")
    trainer = LayerParallelTrainer(config)
    initial = [p.detach().clone() for p in trainer.workers[0].aux.net.parameters()]
    trainer.fit()
    params = [list(w.aux.net.parameters()) for w in trainer.workers]
    assert len({id(p[0]) for p in params}) == 3  # private copies, not one shared object
    for other in params[1:]:
        for a, b in zip(params[0], other):
            assert torch.equal(a, b)
    assert relative_error([p.detach() for p in params[0]], initial) > 0


def test_one_parallel_step_sends_one_adjoint_per_boundary_plus_the_aux_all_reduce(tmp_path):
    config = _config(tmp_path, "bytes", 3, "layerpar.warmup_epochs=0")
    trainer = LayerParallelTrainer(config)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(trainer.runner.program(serial=False))
    batch = config.train.batch_size
    adjoints = sum(batch * math.prod(shape) * 8 for shape in trainer.setup.boundary_shapes)
    aux_bytes = sum(p.numel() for p in trainer.setup.aux.parameters()) * 8
    world = 3
    all_reduce = world * int(2 * (world - 1) / world * aux_bytes)
    assert trainer.runner.bytes_sent() == adjoints + all_reduce


def test_unnamed_runs_started_in_the_same_second_get_their_own_folders(tmp_path, monkeypatch):
    """The run folder's name says the method and never reuses a folder: a script that trains
    serial, pipelined and al one after another (the README's API example) once had two of them
    start within one second and the second refused to overwrite the first."""
    monkeypatch.setattr("time.strftime", lambda fmt, *args: "20261207-120000")
    names = []
    for method in ("pipelined", "al", "pipelined"):
        config = digits_config(tmp_path, f"layerpar.method={method}", stages=2)
        trainer = LayerParallelTrainer(config)
        trainer.run_dir.mkdir(parents=True)
        names.append(trainer.run_dir.name)
    assert names == [
        "pipelined-K2-resnet20-digits-s0-20261207-120000",
        "al-K2-resnet20-digits-s0-20261207-120000",
        "pipelined-K2-resnet20-digits-s0-20261207-120000-2",
    ]
    assert SerialTrainer(digits_config(tmp_path, stages=2)).run_dir.name.startswith("serial-K1-")
