"""Denoisers train under every method exactly as the algorithm says (float64, both backbones).

* The AuxNet method's oracle property: with true states and adjoints as the AuxNet, every
  module's gradient — the replicated embedder's summed over modules — is serial backprop's.
* The pipelined method: each update is backprop through the weights (embedder included) every
  module forwarded its micro-batch with, each module conditioned on that micro-batch's (t, y).
* Every worker draws the same (t, ε, label dropout) for a sample; a stop and resume in the
  middle of the pipeline (conditioning in flight) goes on exactly.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch.nn import functional as F

from layerpar.auxnet import OracleAux
from layerpar.checkpoint import load_checkpoint
from layerpar.config import replace
from layerpar.models import is_conditioned
from layerpar.parallel.pipeline_schedule import pipeline_delay
from layerpar.parallel.run import load_run_data
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.denoisers import denoiser_config, perturb, serial_denoiser_gradients, whole_model_gradients
from tests.helpers.oracle import FIRST_PHASE, NoisyOracle, relative_error

TOL = 1e-10


def _oracle(setup):
    return OracleAux(setup.partition.stages, F.mse_loss)


def _first_phase(trainer, perturbed: bool = True):
    if perturbed:
        perturb(trainer)
    plan = trainer.data.plan
    x, y, cond = *plan.batch(0), plan.cond(0)
    want = serial_denoiser_gradients(trainer.setup.model, x, y, cond)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(FIRST_PHASE)
    return whole_model_gradients(trainer, trainer.setup.partition.bounds), want


@pytest.mark.parametrize("backbone", ["mlp", "dit"])
@pytest.mark.parametrize("stages", [2, 4])
def test_oracle_gradients_of_a_denoiser_equal_serial(tmp_path, backbone, stages):
    """The augmented Lagrangian's multipliers carry the adjoint (the penalty method's m ≡ 0 has
    no oracle property: with exact states its early modules get no gradient at all)."""
    config = denoiser_config(tmp_path, backbone, "layerpar.method=al", stages=stages)
    trainer = LayerParallelTrainer(config, oracle_factory=_oracle)
    got, want = _first_phase(trainer)
    assert got.keys() == want.keys()
    names = sorted(want)
    assert relative_error([got[n] for n in names], [want[n] for n in names]) < TOL
    embedder = [n for n in names if n.startswith("embedder.")]
    assert embedder and relative_error([got[n] for n in embedder], [want[n] for n in embedder]) < TOL
    # Every module with a conditioned block contributes to the embedder: no share is dropped.
    for w in trainer.runner.workers:
        share = sum(float(g.abs().sum()) for (name, _), g in zip(w.module.named_parameters(), w.stage_gradients())
                    if name.startswith("embedder."))
        assert (share > 0) == any(is_conditioned(b) for b in w.module.blocks), (w.stage, share)


def test_the_denoiser_oracle_check_is_not_vacuous(tmp_path):
    config = denoiser_config(tmp_path, "dit", "layerpar.method=al", stages=2)
    trainer = LayerParallelTrainer(config, oracle_factory=lambda s: NoisyOracle(_oracle(s), 0.01))
    got, want = _first_phase(trainer)
    names = sorted(want)
    assert relative_error([got[n] for n in names], [want[n] for n in names]) > 1e-4


def _stashed_chain_gradients(trainer, snapshots, batch: int, stage: int) -> list[torch.Tensor]:
    """Backprop of micro-batch ``batch`` through module j at its weights of step batch + j (its
    own embedder replica at that step too): the gradients of module ``stage``."""
    bounds = trainer.setup.partition.bounds
    chain = [copy.deepcopy(snapshots[batch + j].slice(bounds[j], bounds[j + 1])) for j in range(len(bounds) - 1)]
    plan = trainer.data.plan
    x, y, cond = (t.double() for t in (*plan.batch(batch), plan.cond(batch)))
    h = x
    for module in chain:
        h = module(h, cond)
    F.mse_loss(h, y).backward()
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in chain[stage].parameters()]


@pytest.mark.parametrize("backbone", ["mlp", "dit"])
@pytest.mark.parametrize("stages", [2, 3])
def test_pipelined_denoiser_update_is_backprop_through_the_stashed_weights(tmp_path, backbone, stages):
    config = denoiser_config(tmp_path, backbone, "layerpar.method=pipelined", "layerpar.accumulate=1",
                             "optim.name=sgd", "optim.lr=0.05", stages=stages)
    trainer = LayerParallelTrainer(config)
    perturb(trainer)
    runner, steps = trainer.runner, 2 * stages + 1
    grads, snapshots = [], []
    for step in range(steps):
        snapshots.append(copy.deepcopy(trainer.setup.model))
        program = runner.program(serial=False)
        runner.begin(step, 0.01)
        runner.run(program[:1])
        grads.append([w.stage_gradients() for w in runner.workers])
        runner.run(program[1:])
        runner.take_metrics()
    checked = 0
    for step in range(steps):
        for worker in runner.workers:
            batch = step - worker.stage - pipeline_delay(worker.stage, stages)
            if batch < 0:
                continue
            want = _stashed_chain_gradients(trainer, snapshots, batch, worker.stage)
            assert relative_error(grads[step][worker.stage], want) < TOL, (step, worker.stage)
            checked += 1
    assert checked == sum(steps - (2 * (stages - 1) - k) for k in range(stages))
    # The replicas of the embedder took the same steps: they are still identical.
    first = dict(runner.workers[0].module.embedder.named_parameters())
    for worker in runner.workers[1:]:
        for name, param in worker.module.embedder.named_parameters():
            assert torch.equal(param, first[name]), (worker.stage, name)


def test_every_worker_draws_the_same_noise_for_a_sample(tmp_path):
    config = denoiser_config(tmp_path, "dit", "layerpar.method=pipelined", "diffusion.label_dropout=0.5")
    a, b = load_run_data(config), load_run_data(config)
    assert a.plan.micro == 2
    for step in (0, 1, 7):
        assert torch.equal(a.plan.batch(step)[0], b.plan.batch(step)[0])
        assert torch.equal(a.plan.cond(step), b.plan.cond(step))
    serial = load_run_data(replace(config, train={"mode": "serial"}, parallel={"stages": 1}))
    whole_x, whole_y = serial.plan.batch(3)
    halves = [a.plan.batch(6 + j) for j in range(2)]
    assert torch.equal(torch.cat([h[0] for h in halves]), whole_x)  # micro-batches: the same samples, noise
    assert torch.equal(torch.cat([h[1] for h in halves]), whole_y)
    assert torch.equal(torch.cat([a.plan.cond(6), a.plan.cond(7)]), serial.plan.cond(3))
    cond = torch.cat([a.plan.cond(s) for s in range(40)])
    assert 0.3 < float((cond[:, 1] == 10).double().mean()) < 0.7  # label dropout to the null label
    assert cond[:, 0].min() >= 0 and cond[:, 0].max() < 100 and len(cond[:, 0].unique()) > 20
    assert not torch.equal(a.plan.cond(0), a.plan.cond(2))  # fresh (t, ε) every step


@pytest.mark.parametrize("method", ["pipelined", "al"])
def test_a_stopped_denoiser_run_resumes_exactly(tmp_path, method):
    """K = 3: the pipelined method stops with micro-batches (and their conditioning) in flight."""
    common = ("layerpar.method=" + method, "train.epochs=1", "optim.name=adamw", "optim.lr=0.01",
              "optim.weight_decay=0", "diffusion.ema_decay=0.9")
    whole = LayerParallelTrainer(denoiser_config(tmp_path / "whole", "mlp", *common, stages=3)).fit()
    stop = denoiser_config(tmp_path / "parts", "mlp", *common, "train.stop_at_step=7", "train.run_name=r", stages=3)
    LayerParallelTrainer(stop).fit()
    resumed = LayerParallelTrainer(replace(stop, train={"stop_at_step": None})).fit(resume=True)
    ref, got = (load_checkpoint(s.run_dir / "model.pt") for s in (whole, resumed))
    for part in ("model", "model_ema"):
        assert ref[part].keys() == got[part].keys()
        for key in ref[part]:
            assert torch.equal(ref[part][key], got[part][key]), (part, key)
    assert whole.record["final_eval"] == resumed.record["final_eval"]
