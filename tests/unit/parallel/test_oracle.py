"""The oracle property (DESIGN.md §2): with a_k = true h_k and m_k = true per-sample adjoint,
every module's local-loss gradient equals the serial backprop gradient, for every K.

Checked on the real in-process trainer (resnet20 on digits) and, at the StageWorker level, on a
user's ``nn.Sequential``; plus the checks that show the property is not vacuous.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from layerpar.auxnet import OracleAux, boundary_shapes
from layerpar.config import load_config
from layerpar.parallel.comm import LocalHub
from layerpar.parallel.layout import Layout
from layerpar.parallel.local_loss import al_targets, local_loss
from layerpar.parallel.methods import METHODS, Phase
from layerpar.parallel.objective import Objective
from layerpar.parallel.optim import make_optimizer
from layerpar.parallel.partition import split
from layerpar.parallel.runner import InProcessRunner
from layerpar.parallel.stage import StageWorker
from tests.helpers.oracle import (
    FIRST_PHASE,
    NoisyOracle,
    digits_config,
    oracle_gradients,
    relative_error,
    serial_gradients,
)

TOL = 1e-10


# --------------------------------------------------------------------------------------------
# ResNet-20 through the in-process trainer


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_resnet_oracle_gradients_equal_serial(tmp_path, stages):
    config = digits_config(tmp_path, stages=stages)
    got, want, trainer = oracle_gradients(config)
    assert len(trainer.workers) == stages
    assert len(got) == len(want) == len(list(trainer.setup.model.parameters()))
    assert relative_error(got, want) < TOL
    # Every module really received a gradient (no module silently skipped).
    for worker in trainer.workers:
        assert sum(float(g.abs().sum()) for g in worker.stage_gradients()) > 0


def test_resnet_oracle_full_step_equals_serial_sgd_step(tmp_path):
    """After the whole parallel program (updates included) the parameters equal one serial SGD
    step: the per-module optimisers together are the serial optimiser."""
    config = digits_config(tmp_path, stages=3)
    got, want, trainer = oracle_gradients(config)
    ref = copy.deepcopy(trainer.setup.model)
    for p, g in zip(ref.parameters(), want):
        p.grad = g.clone()
    total = trainer.data.schedule.total_steps
    optimizer, scheduler = make_optimizer(ref.parameters(), config.optim, total)
    optimizer.step()
    trainer.runner.run(trainer.runner.program(serial=False)[1:])
    assert trainer.runner.step == 1
    params = [p.detach() for p in trainer.setup.model.parameters()]
    assert relative_error(params, [p.detach() for p in ref.parameters()]) < 1e-13


@pytest.mark.parametrize("stages", [2, 3])
def test_noisy_oracle_breaks_the_match(tmp_path, stages):
    """1 % noise on the predicted states gives a large gradient error: the check has teeth."""
    config = digits_config(tmp_path, stages=stages)
    got, want, _ = oracle_gradients(
        config, oracle_factory=lambda s: NoisyOracle(OracleAux(s.partition.stages, F.cross_entropy), 0.01)
    )
    assert relative_error(got, want) > 1e-3


def test_penalty_method_with_oracle_is_not_serial(tmp_path):
    """m ≡ 0: with a = h exactly every non-last module's gradient vanishes, so the multiplier
    is what carries the downstream gradient."""
    config = digits_config(tmp_path, "layerpar.method=penalty", stages=3)
    got, want, trainer = oracle_gradients(config)
    assert relative_error(got, want) > 1e-2
    for worker in trainer.workers[:-1]:
        assert max(float(g.abs().max()) for g in worker.stage_gradients()) < 1e-12
    last = trainer.workers[-1].stage_gradients()
    assert relative_error(last, want[-len(last):]) < TOL


# --------------------------------------------------------------------------------------------
# A user's nn.Sequential


class _Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.tanh(self.fc1(x)))


def _user_sequential() -> nn.Sequential:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(64, 16),
        nn.BatchNorm1d(16),
        _Residual(16),
        nn.ReLU(),
        _Residual(16),
        _Residual(16),
        nn.Linear(16, 10),
    ).double()


def _batch(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return torch.randn(n, 1, 8, 8, generator=g, dtype=torch.float64), torch.randint(0, 10, (n,), generator=g)


def _sequential_workers(seq: nn.Sequential, stages: int, x: torch.Tensor, method: str = "al"):
    config = load_config(None, [f"parallel.stages={stages}", "train.dtype=float64", f"layerpar.method={method}"])
    part = split(seq, stages, "blocks")
    shapes = boundary_shapes(part.stages, x[:2])
    layout = Layout(stages)
    oracle = OracleAux(part.stages, F.cross_entropy)
    workers = [
        StageWorker(config, layout, k, 0, part.stages[k], shapes, comm, 1, method=METHODS[method],
                    objective=Objective(), device=torch.device("cpu"), dtype=torch.float64, oracle=oracle)
        for k, comm in enumerate(LocalHub(stages).comms())
    ]
    return part, workers, oracle


@pytest.mark.parametrize("stages", [1, 2, 3, 4])
def test_user_sequential_stage_workers_match_serial(stages):
    seq = _user_sequential()
    x, y = _batch()
    want = serial_gradients(seq, x, y)
    _, workers, _ = _sequential_workers(seq, stages, x)
    for worker in workers:
        worker.begin(x, y, beta=0.5)
    InProcessRunner(workers, plan=None).run(FIRST_PHASE)
    got = [g for worker in workers for g in worker.stage_gradients()]
    assert relative_error(got, want) < TOL


def test_user_sequential_adjoints_reach_the_al_fixed_point():
    """Under the oracle the adjoint v_{k+1} a module receives equals m_k, so the AL update is the
    fixed point λ⁺ = h, μ⁺ = m (nothing for the AuxNet to learn)."""
    seq = _user_sequential()
    x, y = _batch()
    _, workers, oracle = _sequential_workers(seq, 3, x)
    truth = oracle(x, y)
    for worker in workers:
        worker.begin(x, y, beta=0.5)
    program = workers[0].program(serial=False)
    upto = program.index(Phase("method", "receive_adjoint")) + 1
    InProcessRunner(workers, plan=None).run(program[:upto])
    for worker in workers[:-1]:
        targets, h = worker.state.aux_targets, worker.method._h
        torch.testing.assert_close(h, truth.states[worker.stage], rtol=0, atol=1e-12)
        torch.testing.assert_close(targets.multiplier, truth.multipliers[worker.stage], rtol=1e-10, atol=1e-14)
        torch.testing.assert_close(targets.state, h, rtol=0, atol=1e-10)


def test_user_sequential_local_losses_by_hand_match_serial():
    """The same property without StageWorker: split, OracleAux and local_loss only."""
    seq = _user_sequential()
    x, y = _batch()
    want = serial_gradients(seq, x, y)
    part = split(seq, 3, "blocks")
    truth = OracleAux(part.stages, F.cross_entropy)(x, y)
    got = []
    for k, stage in enumerate(part.stages):
        u = x if k == 0 else truth.states[k - 1].detach().requires_grad_(True)
        h = stage(u)
        if k == len(part.stages) - 1:
            loss = F.cross_entropy(h, y)
        else:
            loss = local_loss(h, truth.states[k], truth.multipliers[k], beta=2.0)
        params = list(stage.parameters())
        grads = torch.autograd.grad(loss, params + ([u] if k else []))
        got += list(grads[: len(params)])
        if k:
            adjoint = grads[-1] * x.shape[0]
            torch.testing.assert_close(adjoint, truth.multipliers[k - 1], rtol=1e-10, atol=1e-14)
            lam, mu = al_targets(truth.states[k - 1], truth.multipliers[k - 1], adjoint, beta=2.0)
            torch.testing.assert_close(lam, truth.states[k - 1], rtol=0, atol=1e-12)
            assert mu is adjoint
    assert relative_error(got, want) < TOL


def test_user_sequential_noisy_multiplier_breaks_the_match():
    seq = _user_sequential()
    x, y = _batch()
    want = serial_gradients(seq, x, y)
    part = split(seq, 2, "blocks")
    truth = OracleAux(part.stages, F.cross_entropy)(x, y)
    h = part.stages[0](x)
    m = truth.multipliers[0] * 1.01
    got = torch.autograd.grad(local_loss(h, truth.states[0], m, 1.0), list(part.stages[0].parameters()))
    first = want[: len(got)]
    assert relative_error(list(got), first) > 1e-3


def test_oracle_leaves_batchnorm_statistics_untouched():
    seq = _user_sequential()
    x, y = _batch()
    part = split(seq, 3, "blocks")
    before = copy.deepcopy(seq.state_dict())
    OracleAux(part.stages, F.cross_entropy)(x, y)
    after = seq.state_dict()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
