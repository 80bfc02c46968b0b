"""The stale-adjoint variant (``layerpar.method: delayed``, parallel/methods/delayed.py).

Its oracle property: with a_k = the true h_k, module k's update at step t is serial backprop's
gradient of batch t − (K−1−k) at the weights of that step — exactly, to float64 round-off.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from layerpar.auxnet import OracleAux
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import (
    NoisyOracle,
    digits_config,
    relative_error,
    run_capturing,
    serial_gradients,
)

STEPS = 5


def _run_delayed(config, oracle_factory=None, final_at: int | None = None):
    """Run STEPS parallel steps; per step, each worker's gradients and a snapshot of the model
    taken before the step."""
    factory = oracle_factory or (lambda s: OracleAux(s.partition.stages, F.cross_entropy))
    trainer = LayerParallelTrainer(config, oracle_factory=factory)
    return (trainer, *run_capturing(trainer, STEPS, final_at=final_at))


def _serial_slice(trainer, snapshot, batch_step: int, stage: int) -> list[torch.Tensor]:
    x, y = trainer.data.plan.batch(batch_step)
    serial = serial_gradients(snapshot, x, y)
    bounds = trainer.setup.partition.bounds
    before = sum(1 for _ in snapshot.slice(0, bounds[stage]).parameters())
    count = sum(1 for _ in snapshot.slice(bounds[stage], bounds[stage + 1]).parameters())
    return serial[before : before + count]


@pytest.mark.parametrize("stages", [2, 3])
def test_delayed_oracle_update_is_serial_gradient_of_the_delayed_batch(tmp_path, stages):
    config = digits_config(tmp_path, "layerpar.method=delayed", "optim.lr=0.05", stages=stages)
    trainer, grads, snapshots = _run_delayed(config)
    checked = 0
    for step in range(STEPS):
        for worker in trainer.runner.workers:
            delay = stages - 1 - worker.stage
            got = grads[step][worker.stage]
            if step < delay:
                assert all(float(g.abs().max()) == 0.0 for g in got), "update before its adjoint arrived"
                continue
            want = _serial_slice(trainer, snapshots[step - delay], step - delay, worker.stage)
            assert relative_error(got, want) < 1e-10, (step, worker.stage)
            checked += 1
    assert checked == sum(STEPS - (stages - 1 - k) for k in range(stages))


def test_delayed_noisy_oracle_breaks_the_match(tmp_path):
    config = digits_config(tmp_path, "layerpar.method=delayed", stages=2)

    def factory(s):
        return NoisyOracle(OracleAux(s.partition.stages, F.cross_entropy), 0.01)

    trainer, grads, snapshots = _run_delayed(config, oracle_factory=factory)
    want = _serial_slice(trainer, snapshots[1], 1, 0)
    assert relative_error(grads[2][0], want) > 1e-3


def test_final_parallel_step_sends_nothing_and_drops_pending(tmp_path):
    """A run of parallel steps ends cleanly: no message is left in a mailbox (a serial step or an
    evaluation would read it), and the next run starts with empty queues."""
    config = digits_config(tmp_path, "layerpar.method=delayed", stages=3)
    trainer, grads, _ = _run_delayed(config, final_at=2)
    hub = trainer.runner.workers[0].comm.hub
    # Steps 3 and 4 start a fresh run: the modules wait for their delay again.
    assert all(float(g.abs().max()) == 0.0 for g in grads[3][0])
    assert all(float(g.abs().max()) == 0.0 for g in grads[4][0])
    assert any(float(g.abs().max()) > 0.0 for g in grads[4][1])
    assert trainer.runner.workers[0].method.in_flight()  # the second run is still going at step 4
    # Flush the second run and check nothing is left in flight.
    trainer.runner.begin(STEPS, 0.01, final=True)
    trainer.runner.run(trainer.runner.program(serial=False))
    assert not any(len(box) for box in hub.mailboxes.values())
    assert not any(w.method.in_flight() for w in trainer.runner.workers)


@pytest.mark.parametrize(
    ("method", "logged"),
    [(("layerpar.method=delayed",), '"residual/0"'),
     (("layerpar.method=pipelined", "layerpar.accumulate=1"), '"weight_staleness/0"')],
    ids=["delayed", "pipelined"],
)
def test_stale_methods_run_the_whole_schedule_and_leave_nothing_in_flight(tmp_path, method, logged):
    """Warm-up, stale parallel steps cut by a mid-run evaluation, serial hybrid: every run of
    parallel steps ends cleanly (no message left for a serial step to misread, no graph held)."""
    config = digits_config(tmp_path, *method, "train.epochs=2", "train.dtype=float32",
                           "train.eval_every_steps=20", "layerpar.warmup_epochs=0.3",
                           "layerpar.serial_final_epochs=0.3", stages=3)
    trainer = LayerParallelTrainer(config)
    summary = trainer.fit()
    assert 0.0 <= summary.final_test_acc <= 1.0
    workers = trainer.runner.workers
    assert not any(len(box) for box in workers[0].comm.hub.mailboxes.values())
    assert not any(w.method.in_flight() or w._inflight for w in workers)
    lines = (summary.run_dir / "metrics.jsonl").read_text()
    assert logged in lines and '"local_loss/2"' in lines
