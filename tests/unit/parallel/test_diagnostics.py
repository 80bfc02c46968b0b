"""Diagnostics logged per evaluation and plotted: AuxNet state / multiplier errors, residuals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from layerpar.config import load_config
from layerpar.parallel.trainer import LayerParallelTrainer

ROOT = Path(__file__).resolve().parents[3]


def test_epoch_records_carry_aux_errors_and_plot_is_written(tmp_path: Path) -> None:
    config = load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "parallel.stages=3", "data.train_limit=256", "train.batch_size=32", "train.epochs=1",
        "train.progress=false", f"train.out_dir={tmp_path}", "train.run_name=r", "layerpar.method=al"])
    trainer = LayerParallelTrainer(config)
    before = [p.detach().clone() for p in trainer.setup.model.parameters()]
    summary = trainer.fit()
    run = tmp_path / "r"
    evals = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert evals, "no evaluation record"
    # The logged errors are the final AuxNet's on step 0's batch against the true states
    # h_k and per-sample adjoints B dL/dh_k of a train-mode serial pass: recompute them.
    x, y = trainer.data.plan.batch(0)
    x = x.to(trainer.setup.dtype)
    states, h = [], x
    for stage in trainer.setup.partition.stages:
        h = stage.train()(h)
        states.append(h)
    adjoints = torch.autograd.grad(F.cross_entropy(h, y), states[:-1])
    for boundary in (0, 1):
        with torch.no_grad():
            out = trainer.workers[boundary].aux.net.train()(x, upto=boundary)
        state, adjoint = states[boundary].detach(), adjoints[boundary] * len(y)
        state_error = float((out.states[boundary] - state).norm() / state.norm())
        multiplier_error = float((out.multipliers[boundary] - adjoint).norm() / adjoint.norm())
        assert state_error > 0 and multiplier_error > 0
        assert evals[-1][f"aux_state_error/{boundary}"] == pytest.approx(state_error, rel=1e-4)
        assert evals[-1][f"multiplier_error/{boundary}"] == pytest.approx(multiplier_error, rel=1e-4)
    assert (run / "diagnostics.png").stat().st_size > 0
    assert summary.final_test_acc is not None
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.setup.model.parameters()))


def test_pipelined_run_logs_weight_staleness_and_plots_it(tmp_path: Path) -> None:
    config = load_config(None, [
        "data.dataset=digits", "model.name=resnet20", "parallel.stages=3", "parallel.balance=blocks",
        "data.train_limit=256", "train.batch_size=32", "train.epochs=1", "train.progress=false",
        f"train.out_dir={tmp_path}", "train.run_name=p"])
    assert config.layerpar.method == "pipelined"
    summary = LayerParallelTrainer(config).fit()
    steps = [json.loads(x) for x in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines() if '"step"' in x]
    staleness = [r["weight_staleness/0"] for r in steps if "weight_staleness/0" in r]
    # Module 0's weights move between a micro-batch's forward and its update (K=3: 4 micro-steps
    # later, at most one optimiser step); never by much at this learning rate.
    assert staleness and all(0.0 <= v < 0.1 for v in staleness) and max(staleness) > 0.0
    assert not any("weight_staleness/2" in r for r in steps)  # the last module updates at once
    assert (tmp_path / "p" / "diagnostics.png").stat().st_size > 0
    assert summary.final_test_acc is not None


def test_diagnostic_pass_changes_no_parameter(tmp_path: Path) -> None:
    from layerpar.parallel.loop import diagnose

    config = load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "data.train_limit=256", "train.batch_size=32", f"train.out_dir={tmp_path}", "train.progress=false"])
    trainer = LayerParallelTrainer(config)
    params = [p.detach().clone() for w in trainer.workers for p in w.module.parameters()]
    aux = [p.detach().clone() for w in trainer.workers for p in w.aux.net.parameters()]
    result = diagnose(trainer.runner, trainer.data.schedule)
    assert "aux_state_error/0" in result
    assert all(torch.equal(a, p) for a, p in zip(params, [p for w in trainer.workers for p in w.module.parameters()]))
    assert all(torch.equal(a, p) for a, p in zip(aux, [p for w in trainer.workers for p in w.aux.net.parameters()]))
    assert all(w.step == 0 for w in trainer.workers)


@pytest.mark.parametrize("missing", ["metrics.jsonl"])
def test_plot_command_needs_a_run_folder(tmp_path: Path, missing: str, capsys: pytest.CaptureFixture[str]) -> None:
    from layerpar.cli import main

    assert main(["plot", str(tmp_path)]) == 2
    assert missing in capsys.readouterr().err
