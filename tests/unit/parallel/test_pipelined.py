"""The pipelined variant (``layerpar.method: pipelined``, parallel/methods/pipelined.py).

Its exactness property (weight stashing): module k forwards batch b at step b + k and updates
with it at step b + 2(K−1) − k; that update is serial backprop's gradient of batch b through the
chain of modules *each at the weights it had when it forwarded b* — exactly, to float64 round-off.
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from layerpar.errors import ConfigError
from layerpar.parallel.methods import Phase, check_config, micro_batches
from layerpar.parallel.pipeline_schedule import pipeline_delay
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import digits_config, relative_error, run_capturing, serial_gradients

STEPS = 6
ONE_PART = ("layerpar.method=pipelined", "layerpar.accumulate=1")
"""Whole batches, one per step (no micro-batches): the plain asynchronous pipeline."""


def _run_pipelined(config, final_at: int | None = None, capture_after: int = 1):
    """Run STEPS parallel steps; per step, each worker's gradients after the first
    ``capture_after`` phases and a snapshot of the model taken before the step."""
    trainer = LayerParallelTrainer(config)
    return (trainer, *run_capturing(trainer, STEPS, capture_after, final_at))


def _slice(trainer, snapshot, stage: int) -> nn.Module:
    bounds = trainer.setup.partition.bounds
    return snapshot.slice(bounds[stage], bounds[stage + 1])


def _stashed_chain_gradient(trainer, snapshots, batch: int, stage: int):
    """Backprop of batch ``batch`` through module j at the weights of step batch + j, for every j;
    the gradient of module ``stage``'s parameters."""
    stages = trainer.setup.partition.stages
    chain = nn.Sequential(*(_slice(trainer, snapshots[batch + j], j) for j in range(len(stages))))
    x, y = trainer.data.plan.batch(batch)
    grads = serial_gradients(chain, x, y)
    before = sum(1 for j in range(stage) for _ in chain[j].parameters())
    return grads[before : before + sum(1 for _ in chain[stage].parameters())]


@pytest.mark.parametrize("stages", [2, 3])
def test_pipelined_update_is_backprop_through_the_stashed_weights(tmp_path, stages):
    config = digits_config(tmp_path, *ONE_PART, "optim.lr=0.05", stages=stages)
    trainer, grads, snapshots = _run_pipelined(config)
    checked = 0
    for step in range(STEPS):
        for worker in trainer.runner.workers:
            batch = step - worker.stage - pipeline_delay(worker.stage, stages)
            got = grads[step][worker.stage]
            if batch < 0:
                assert all(float(g.abs().max()) == 0.0 for g in got), "update before its adjoint arrived"
                continue
            want = _stashed_chain_gradient(trainer, snapshots, batch, worker.stage)
            assert relative_error(got, want) < 1e-10, (step, worker.stage)
            checked += 1
    assert checked == sum(STEPS - (2 * (stages - 1) - k) for k in range(stages))


def test_the_check_sees_staleness(tmp_path):
    """Not vacuous: the same update differs from backprop of that batch at the current weights."""
    config = digits_config(tmp_path, *ONE_PART, "optim.lr=0.05", stages=2)
    trainer, grads, snapshots = _run_pipelined(config)
    step, batch = 4, 2  # module 0 updates with batch t − 2
    x, y = trainer.data.plan.batch(batch)
    current = serial_gradients(snapshots[step], x, y)
    count = sum(1 for _ in _slice(trainer, snapshots[step], 0).parameters())
    assert relative_error(grads[step][0], current[:count]) > 1e-3
    assert relative_error(grads[step][0], _stashed_chain_gradient(trainer, snapshots, batch, 0)) < 1e-10


def test_a_run_fills_drains_and_leaves_nothing_in_flight(tmp_path):
    config = digits_config(tmp_path, *ONE_PART, stages=3)
    trainer, grads, _ = _run_pipelined(config, final_at=2)
    workers = trainer.runner.workers
    hub = workers[0].comm.hub
    # Step 3 starts a fresh run: modules 1 and 2 wait for the fill again, module 0 for its delay.
    assert all(float(g.abs().max()) == 0.0 for w in range(3) for g in grads[3][w])
    assert any(float(g.abs().max()) > 0.0 for g in grads[5][2])  # last module: batch 3, at step 5
    assert workers[0].method.in_flight() and workers[2].method.in_flight()
    trainer.runner.begin(STEPS, 0.01, final=True)
    trainer.runner.run(trainer.runner.program(serial=False))
    assert not any(len(box) for box in hub.mailboxes.values())
    assert not any(w.method.in_flight() for w in workers)


def test_pipelined_refuses_periodic_serial_steps(tmp_path):
    with pytest.raises(ConfigError, match="serial_every=0"):
        check_config(digits_config(tmp_path, *ONE_PART, "layerpar.serial_every=2"))


def test_accumulation_updates_once_per_window_with_the_sum_of_its_gradients(tmp_path):
    """accumulate=2, K=2: weights change on every second step only, and the gradient applied is
    the sum (then / 2) of the stashed-chain gradients of the batches that landed in the window."""
    config = digits_config(tmp_path, "layerpar.method=pipelined", "optim.lr=0.05",
                           "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0", stages=2)
    assert micro_batches(config) == 2  # the default for K = 2: 2(K−1)
    # Gradients just before each optimiser step, after every phase that adds to them.
    update = LayerParallelTrainer(config).runner.program(serial=False).index(Phase("worker", "finish_stage_update"))
    trainer, grads, snapshots = _run_pipelined(config, capture_after=update)
    for step in (0, 2, 4):  # first tick of a window: no optimiser step
        for now, after in zip(snapshots[step].parameters(), snapshots[step + 1].parameters()):
            assert now.equal(after), f"weights moved at step {step}, inside a window"
    assert any(not a.equal(b) for a, b in zip(snapshots[3].parameters(), snapshots[4].parameters()))
    # Module 0 updates with batch b at step b + 2: window (2, 3) holds batches 0 and 1.
    # Module 1 (last) updates with batch b at step b + 1: window (2, 3) holds batches 1 and 2.
    for stage, batches in ((0, (0, 1)), (1, (1, 2))):
        parts = [_stashed_chain_gradient(trainer, snapshots, b, stage) for b in batches]
        want = [a + b for a, b in zip(*parts)]
        assert relative_error(grads[3][stage], want) < 1e-10, stage


def test_micro_batches_are_the_serial_batch_in_parts(tmp_path):
    """Micro-batch j of step s holds the samples (and augmented pixels) of serial backprop's
    step s, part j: both arms see the same data per optimiser step."""
    parts = digits_config(tmp_path, "layerpar.method=pipelined", "layerpar.warmup_epochs=0",
                          "layerpar.serial_final_epochs=0", "data.crop_pad=2", "data.flip=true", stages=4)
    assert micro_batches(parts) == 8
    serial = digits_config(tmp_path, "train.mode=serial", "data.crop_pad=2", "data.flip=true")
    plan, whole = LayerParallelTrainer(parts).data.plan, LayerParallelTrainer(serial).data.plan
    assert plan.steps_per_epoch == 8 * whole.steps_per_epoch and plan.step_samples == 4
    for step in (0, 5, whole.steps_per_epoch + 3):
        x, y = whole.batch(step)
        micro = [plan.batch(8 * step + j) for j in range(8)]
        assert torch.equal(torch.cat([m[0] for m in micro]), x) and torch.equal(torch.cat([m[1] for m in micro]), y)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("layerpar.accumulate=2",), "layerpar.accumulate=2 is for a micro-batched method"),
        (("layerpar.method=pipelined", "layerpar.warmup_epochs=1"),
         "set layerpar.warmup_epochs=0 and layerpar.serial_final_epochs=0"),
        (("layerpar.method=pipelined", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0",
          "layerpar.accumulate=3"), "train.batch_size=32 does not split into 3 micro-batches"),
        (("layerpar.method=pipelined", "train.batch_size=16", "parallel.stages=9"),
         "leaves 1 sample per micro-batch"),
    ],
)
def test_bad_accumulation_settings_say_how_to_fix_them(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(digits_config(tmp_path, *overrides))


def test_step_counts_in_the_config_are_batches(tmp_path):
    """train.eval_every_steps and stop_at_step count batches (optimiser steps), whatever the
    number of micro-batches each one goes through in."""
    config = digits_config(tmp_path, "layerpar.method=pipelined", "train.dtype=float32", "train.epochs=1",
                           "train.eval_every_steps=5", "train.stop_at_step=12", stages=2)
    assert micro_batches(config) == 2
    summary = LayerParallelTrainer(config).fit()
    lines = (summary.run_dir / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["step"] for r in records if r["kind"] == "epoch"] == [10, 20]  # every 5 batches = 10 micro
    assert max(r["step"] for r in records if r["kind"] == "step") == 23  # stopped after 12 batches = 24 micro


def test_momentum_compensation_and_weight_prediction_options(tmp_path):
    """The two options that did not help (docs/parity.md) still do what they say."""
    from layerpar.parallel.methods.pipelined import compensated_momentum

    assert compensated_momentum(0.9, 0) == pytest.approx(0.9)
    assert compensated_momentum(0.9, 2) == pytest.approx(0.7)
    assert compensated_momentum(0.9, 20) == 0.0
    config = digits_config(tmp_path, *ONE_PART, "layerpar.compensate_momentum=true",
                           "layerpar.predict_weights=true", "optim.lr=0.05", stages=3)
    trainer, _, _ = _run_pipelined(config)
    first = trainer.runner.workers[0]
    # Module 0 at K=3, one batch per step: 4 optimiser steps late.
    assert first.optimizer.param_groups[0]["momentum"] == pytest.approx(0.5)
    shift = first.method._predicted_shift()
    lr = first.optimizer.param_groups[0]["lr"]
    name, param = next(iter(first.module.named_parameters()))
    buffer = first.optimizer.state[param]["momentum_buffer"]
    assert torch.allclose(shift[name], -4.0 * lr * buffer) and float(buffer.abs().max()) > 0
    with_micro = digits_config(tmp_path, "layerpar.method=pipelined", "layerpar.compensate_momentum=true",
                               stages=3)
    # With the default 4 micro-batches the same 4 loop steps are 1 optimiser step.
    assert LayerParallelTrainer(with_micro).runner.workers[0].optimizer.param_groups[0]["momentum"] == \
        pytest.approx(0.8)


@pytest.mark.parametrize(("stages", "micro"), [(3, 4), (4, 8)])
def test_default_micro_batched_update_is_the_mean_of_stashed_chain_gradients(tmp_path, stages, micro):
    """The default configuration at K = 3 and 4 (M = 4 and 8 micro-batches): module k's
    update at the end of each window of M micro-steps is the sum (then / M) of the gradients of
    the micro-batches whose backward fell in it — micro-batch j at micro-step j + 2(K−1) − k —
    each exact backprop through the weights every module forwarded it with."""
    config = digits_config(tmp_path, "layerpar.method=pipelined", "optim.lr=0.05",
                           "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0", stages=stages)
    assert micro_batches(config) == micro  # the default: the smallest power of two >= 2(K-1)
    trainer = LayerParallelTrainer(config)
    update = trainer.runner.program(serial=False).index(Phase("worker", "finish_stage_update"))
    steps = 3 * micro
    grads, snapshots = run_capturing(trainer, steps, capture_after=update)
    checked = 0
    for window_end in range(2 * micro - 1, steps, micro):
        for stage in range(stages):
            lag = 2 * (stages - 1) - stage
            landed = [r - lag for r in range(window_end - micro + 1, window_end + 1) if r - lag >= 0]
            parts = [_stashed_chain_gradient(trainer, snapshots, j, stage) for j in landed]
            want = [sum(ps) for ps in zip(*parts)]
            assert relative_error(grads[window_end][stage], want) < 1e-10, (window_end, stage)
            checked += 1
    assert checked == 2 * stages
    # The weights move only at the end of a window.
    for step in range(steps - 1):
        moved = any(not a.equal(b) for a, b in zip(snapshots[step].parameters(), snapshots[step + 1].parameters()))
        assert moved == ((step + 1) % micro == 0), step
