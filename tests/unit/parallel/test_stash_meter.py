"""The stash meter (what a stale method's stash holds) and the cost model's prediction of it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from layerpar.bench.profile_measure import stage_saved_bytes
from layerpar.bench.stash_model import predict_stash
from layerpar.parallel.pipeline_schedule import pipeline_delay
from layerpar.parallel.stash import PendingForward
from layerpar.parallel.stash_meter import SavedBytes, StashMeter
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import digits_config


def test_saved_bytes_counts_each_saved_storage_once_and_leaves_the_weights_out():
    layer = nn.Linear(8, 4, dtype=torch.float64)
    x = torch.randn(5, 8, dtype=torch.float64, requires_grad=True)
    with SavedBytes(exclude=layer.parameters()).count() as saved:
        layer(x).relu().sum()
    # Linear saves its input (and its weight, excluded); relu saves its output.
    assert saved.bytes == x.nbytes + 5 * 4 * 8


def test_the_meter_counts_in_flight_micro_batches_and_distinct_weight_copies():
    meter = StashMeter()
    weights_a, weights_b = [torch.zeros(10)], [torch.zeros(10)]
    outputs = [torch.zeros(3) for _ in range(3)]
    pending = [PendingForward(u=outputs[0], h=outputs[0], weights=weights_a)]
    meter.observe(pending, outputs[1], weights_a, None)
    assert meter.peak.total_bytes == 0  # off: nothing counted
    meter.start()
    with meter.forward(weights_b) as saved:
        assert saved is not None
    meter.observe(pending, outputs[1], weights_b, saved)
    size = meter.stop()
    assert (size.micro_batches, size.weight_versions, size.weight_bytes) == (2, 2, 80)
    assert size.activation_bytes == 2 * 12  # outputs only (the forward above saved nothing)


@pytest.mark.parametrize("stages", [2, 3])
def test_a_pipelined_run_holds_what_the_cost_model_predicts(tmp_path, stages):
    """In-process pipelined run: each module's fullest stash has the predicted count of
    micro-batches and weight versions, and the predicted bytes (activations from the stage's
    saved tensors measured as the profile measures them)."""
    config = digits_config(tmp_path, "layerpar.method=pipelined", "layerpar.warmup_epochs=0",
                           "layerpar.serial_final_epochs=0", stages=stages)
    trainer = LayerParallelTrainer(config)
    runner = trainer.runner
    micro = trainer.workers[0].accumulate
    for worker in trainer.workers:
        worker.stash_meter.start()
    program = runner.program(serial=False)
    for step in range(3 * micro + 2 * stages):
        runner.begin(step, 0.01)
        runner.run(program)
        runner.take_metrics()
    measured = [worker.stash_meter.stop() for worker in trainer.workers]
    x, _ = trainer.data.plan.batch(0)  # a loop step's batch: one micro-batch
    assert x.shape[0] * micro == config.train.batch_size
    parts = trainer.setup.partition.stages
    saved = stage_saved_bytes(parts, x.to(torch.float64))
    for k, size in enumerate(measured):
        delay = pipeline_delay(k, stages)
        if k == stages - 1:
            assert size.total_bytes == 0  # the last module backpropagates at once
            continue
        assert size.micro_batches == delay + 1
        assert size.weight_versions == -(-delay // micro) + 1
        params = sum(p.nbytes for p in parts[k].parameters())
        assert size.weight_bytes == size.weight_versions * params
        assert size.activation_bytes > (delay + 1) * saved[k]  # plus the outputs they hold
    profile_like = _profile_for(trainer, saved, micro)
    predicted = predict_stash(profile_like, stages, micro)
    assert predicted is not None
    for p, m in zip(predicted, measured, strict=True):
        assert (p.micro_batches, p.weight_versions) == (m.micro_batches, m.weight_versions)
        assert p.total_bytes == pytest.approx(m.total_bytes, rel=0.02)


def _profile_for(trainer, saved_micro: tuple[int, ...], micro: int):
    """The fields of a Profile that ``predict_stash`` reads, from the trainer's own modules."""
    import dataclasses

    from layerpar.bench.profile import BlockTimes, Profile, StageSaved

    model = trainer.setup.model
    batch = trainer.config.train.batch_size
    bounds = trainer.setup.partition.bounds
    x, _ = trainer.data.plan.batch(0)  # one micro-batch; the profile holds the full batch's bytes
    with torch.no_grad():
        h, outputs = x.to(torch.float64), []
        for block in model.blocks:
            h = block(h)
            outputs.append(h.nbytes * micro)
    counts = tuple(sum(p.numel() for p in b.parameters()) for b in model.blocks)
    profile = Profile(
        model="", dataset="", input_shape=tuple(x.shape[1:]), batch_size=batch, balance="blocks",
        device="cpu", threads=1, dtype="float64", block_names=tuple("" for _ in counts),
        param_bytes=tuple(8 * c for c in counts), param_counts=counts, activation_bytes=tuple(outputs),
        timings=(BlockTimes(batch, tuple(0.0 for _ in counts), tuple(0.0 for _ in counts)),), aux=(),
        sgd_s_per_byte=0.0, adam_s_per_byte=0.0, boundary_s_per_byte=0.0, batch_s=0.0,
    )
    full = tuple(s * micro for s in saved_micro)
    return dataclasses.replace(profile, stage_saved=(StageSaved(len(bounds) - 1, tuple(bounds), full),))
