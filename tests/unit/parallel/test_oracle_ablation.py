"""The oracle ablations of ``layerpar.oracle`` (issue 11's diagnosis): each replaces one half of
what the AuxNet gives the modules with the truth of a serial pass, while the AuxNet keeps
training on its own prediction.  ``both`` must be serial backprop (the oracle property)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from layerpar.auxnet import AuxOutput, OracleAux
from layerpar.auxnet.ablation import SharedOracle, substitute
from layerpar.errors import ConfigError
from layerpar.launchers import launch_training
from layerpar.launchers.cluster import ClusterConfig
from layerpar.parallel.loop import diagnose
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import FIRST_PHASE, digits_config, relative_error, serial_gradients


def _first_step(trainer: LayerParallelTrainer) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(layer-parallel gradients of the first phase, serial backprop's) on batch 0."""
    x, y = trainer.data.plan.batch(0)
    want = serial_gradients(trainer.setup.model, x, y)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(FIRST_PHASE)
    got = [g for worker in trainer.runner.workers for g in worker.stage_gradients()]
    return got, want


def _truth(trainer: LayerParallelTrainer) -> AuxOutput:
    x, y = trainer.data.plan.batch(0)
    return OracleAux(trainer.setup.partition.stages, F.cross_entropy)(x.to(torch.float64), y)


@pytest.mark.parametrize("stages", [2, 4])
def test_oracle_both_from_the_config_is_serial_backprop(tmp_path, stages):
    trainer = LayerParallelTrainer(digits_config(tmp_path, "layerpar.oracle=both", stages=stages))
    got, want = _first_step(trainer)
    assert relative_error(got, want) < 1e-10
    scores = diagnose(trainer.runner, trainer.data.schedule)
    assert all(abs(scores[f"update_cosine/{k}"] - 1.0) < 1e-10 for k in range(stages))


@pytest.mark.parametrize("part", ["multipliers", "states"])
def test_a_partial_oracle_survives_the_serial_diagnostic_at_k4(tmp_path, part):
    """The serial pass of the diagnostic asks the oracle between modules' forwards: it must not
    touch the weights under their graphs (it restores only the buffers)."""
    trainer = LayerParallelTrainer(digits_config(tmp_path, f"layerpar.oracle={part}", stages=4))
    scores = diagnose(trainer.runner, trainer.data.schedule)
    assert all(abs(scores[f"update_cosine/{k}"]) <= 1 + 1e-9 for k in range(4))


def test_oracle_multipliers_gives_true_adjoints_at_the_auxnets_states(tmp_path):
    trainer = LayerParallelTrainer(digits_config(tmp_path, "layerpar.oracle=multipliers", stages=3))
    truth = _truth(trainer)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(FIRST_PHASE)
    for worker in trainer.runner.workers[:-1]:
        k = worker.stage
        given = worker.state.aux_out
        assert given is not None and worker.aux is not None and worker.aux._own is not None
        assert torch.allclose(given.multipliers[k], truth.multipliers[k], rtol=1e-10, atol=1e-12)
        assert given.states[k] is worker.aux._own.states[k]  # the AuxNet's own prediction
        assert relative_error([given.states[k].detach()], [truth.states[k]]) > 0.05  # not the truth


def test_oracle_states_gives_true_inputs_and_the_auxnet_still_trains(tmp_path):
    config = digits_config(tmp_path, "layerpar.oracle=states", "train.epochs=1", "train.eval_every=1",
                           "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0", stages=2)
    trainer = LayerParallelTrainer(config)
    truth = _truth(trainer)
    aux = trainer.workers[0].aux
    assert aux is not None and aux.net is not None and aux.trains
    before = [p.detach().clone() for p in aux.net.parameters()]
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(trainer.runner.program(serial=False))
    given = trainer.workers[1].state.aux_out
    assert given is not None
    assert torch.allclose(given.states[0], truth.states[0], rtol=1e-10, atol=1e-12)
    assert any(not torch.equal(a, b) for a, b in zip(before, aux.net.parameters(), strict=True))
    # The AuxNet is scored on its own prediction, not on the truth it was replaced by.
    scores = diagnose(trainer.runner, trainer.data.schedule)
    assert scores["aux_state_error/0"] > 0.05


def test_substitute_takes_only_the_named_part():
    own = AuxOutput([torch.zeros(2)], [torch.zeros(2)])
    truth = AuxOutput([torch.ones(2), torch.ones(3)], [torch.full((2,), 2.0), torch.ones(3)])
    mixed = substitute(own, truth, frozenset({"multipliers"}))
    assert mixed.states[0] is own.states[0] and len(mixed.multipliers) == 1
    assert torch.equal(mixed.multipliers[0], torch.full((2,), 2.0))


def test_the_shared_oracle_runs_one_serial_pass_per_batch_and_weights(tmp_path):
    trainer = LayerParallelTrainer(digits_config(tmp_path, stages=3))
    stages = trainer.setup.partition.stages
    shared = SharedOracle(stages, F.cross_entropy)
    calls = []
    inner = shared.oracle
    shared.oracle = lambda *args: calls.append(1) or inner(*args)  # type: ignore[assignment]
    x, y = trainer.data.plan.batch(0)
    x = x.to(torch.float64)
    first = shared(x, y, 0)
    assert shared(x, y, 1) is first and len(calls) == 1  # the next worker reuses it
    assert shared(x.clone(), y, 0) is not first and len(calls) == 2  # another batch
    with torch.no_grad():
        next(stages[0].parameters()).add_(1e-3)  # an optimiser step (in place)
    assert shared(x.clone(), y, 0) is not first and len(calls) == 3


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["layerpar.oracle=adjoint"], "not an ablation"),
        (["layerpar.method=pipelined", "layerpar.oracle=states"], "uses none"),
        (["layerpar.method=penalty", "layerpar.oracle=multipliers"], "takes none"),
    ],
)
def test_bad_oracle_settings_are_refused_with_the_fix(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        LayerParallelTrainer(digits_config(tmp_path, *overrides))


def test_worker_processes_refuse_the_oracle_before_starting(tmp_path):
    config = digits_config(tmp_path, "layerpar.oracle=states")
    with pytest.raises(ConfigError, match="in-process trainer"):
        launch_training(config, ClusterConfig(launcher="local"))
    assert not any(tmp_path.iterdir())  # no run folder was left behind
