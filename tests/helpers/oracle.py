"""Helpers for the oracle-property tests (DESIGN.md §2), in-process and across processes.

* :func:`digits_config` -- a small float64 run on sklearn digits (no network needed).
* :func:`relative_error` -- ||a − b|| / ||b|| over lists of tensors.
* :func:`oracle_gradients` -- layer-parallel gradients after the first phase vs serial backprop.
* :func:`run_capturing` -- parallel steps with each step's gradients and model snapshots.
* :class:`NoisyOracle` -- an oracle whose states carry relative noise (the non-vacuity check).
* :func:`distributed_oracle_rank` -- the body of one spawned gloo rank of the cross-process check.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn import functional as F

from layerpar.auxnet import AuxOutput, OracleAux
from layerpar.config import RunConfig, load_config
from layerpar.parallel.methods import Phase

FIRST_PHASE = (Phase("method", "forward_backward"),)
"""The method's forward and backward only: every module's gradient, before any optimiser step."""

COMM_PHASES = (
    Phase("method", "send_adjoint"),
    Phase("method", "receive_adjoint"),
    Phase("aux", "backward"),
    Phase("aux", "start_sync"),
    Phase("aux", "finish_update"),
)
"""The phases of the AL/penalty step that exchange adjoints and compute the AL targets (no
stage update)."""


def digits_config(out_dir: str | Path, *overrides: str, stages: int = 2) -> RunConfig:
    """resnet20 on sklearn digits in float64, AL method, blocks-balanced (deterministic bounds)."""
    return load_config(
        None,
        [
            "data.dataset=digits",
            "model.name=resnet20",
            f"parallel.stages={stages}",
            "parallel.balance=blocks",
            "layerpar.method=al",
            "train.dtype=float64",
            "train.batch_size=32",
            "train.progress=false",
            f"train.out_dir={out_dir}",
            *overrides,
        ],
    )


def relative_error(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    """||got − want|| / ||want||, both lists flattened into one vector each."""
    assert len(got) == len(want), f"{len(got)} tensors vs {len(want)}"
    for a, b in zip(got, want):
        assert a.shape == b.shape, f"shape {tuple(a.shape)} vs {tuple(b.shape)}"
    num = sum(float((a.double() - b.double()).pow(2).sum()) for a, b in zip(got, want)) ** 0.5
    den = sum(float(b.double().pow(2).sum()) for b in want) ** 0.5
    assert den > 0, "reference is all zeros: the comparison would be vacuous"
    return num / den


def serial_gradients(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    """Plain backprop of the mean cross-entropy through a private copy of ``model``."""
    ref = copy.deepcopy(model)
    ref.train()
    ref.zero_grad(set_to_none=True)
    dtype = next(ref.parameters()).dtype
    F.cross_entropy(ref(x.to(dtype)), y).backward()
    return [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in ref.parameters()]


def oracle_gradients(
    config: RunConfig,
    oracle_factory: Callable[[Any], Callable[..., AuxOutput]] | None = None,
    beta: float = 0.01,
) -> tuple[list[torch.Tensor], list[torch.Tensor], Any]:
    """(layer-parallel gradients, serial gradients, trainer) on the first batch of ``config``.

    The layer-parallel side is the real in-process trainer with ``oracle_factory(setup)`` as
    its AuxNet (``OracleAux`` over the trained modules by default), run for one phase.
    """
    from layerpar.parallel.trainer import LayerParallelTrainer

    factory = oracle_factory or (lambda s: OracleAux(s.partition.stages, F.cross_entropy))
    trainer = LayerParallelTrainer(config, oracle_factory=factory)
    x, y = trainer.data.plan.batch(0)
    want = serial_gradients(trainer.setup.model, x, y)
    trainer.runner.begin(0, beta)
    trainer.runner.run(FIRST_PHASE)
    got = [g for worker in trainer.runner.workers for g in worker.stage_gradients()]
    return got, want, trainer


def run_capturing(trainer: Any, steps: int, capture_after: int = 1,
                  final_at: int | None = None) -> tuple[list[list[list[torch.Tensor]]], list[torch.nn.Module]]:
    """Run ``steps`` parallel steps of ``trainer``; per step, each worker's gradients after the
    first ``capture_after`` phases of the program, and a snapshot of the model before the step."""
    runner = trainer.runner
    grads, snapshots = [], []
    for step in range(steps):
        snapshots.append(copy.deepcopy(trainer.setup.model))
        program = runner.program(serial=False)
        runner.begin(step, 0.01, final=step == final_at)
        runner.run(program[:capture_after])
        grads.append([[g.clone() for g in w.stage_gradients()] for w in runner.workers])
        runner.run(program[capture_after:])
        runner.take_metrics()
    return grads, snapshots


class NoisyOracle:
    """``OracleAux`` whose predicted states carry ``scale`` relative RMS Gaussian noise."""

    def __init__(self, oracle: OracleAux, scale: float = 0.01, seed: int = 1) -> None:
        self.oracle = oracle
        self.scale = scale
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, upto: int | None = None, cond: torch.Tensor | None = None
    ) -> AuxOutput:
        out = self.oracle(x, y, upto, cond)
        noisy = []
        for state in out.states:
            rms = state.pow(2).mean().sqrt()
            noise = torch.randn(state.shape, generator=self.generator, dtype=state.dtype)
            noisy.append(state + self.scale * rms * noise)
        return AuxOutput(noisy, out.multipliers)


# --------------------------------------------------------------------------------------------
# Across processes


def distributed_oracle_rank(rank: int, world_size: int, port: int, overrides: list[str], out_dir: str) -> None:
    """One gloo rank: its module's first-phase gradients under a local full-model oracle.

    Writes ``out_dir/rank{rank}.pt`` with the worker's gradients, the serial gradients of the
    same parameters, and (ranks that own a boundary) the AL targets next to h and the oracle
    multiplier, so the driver can check the adjoint that crossed the process boundary.
    Started by ``torch.multiprocessing.spawn`` (so ``rank`` comes first).
    """
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    from layerpar.parallel.comm import TorchDistComm
    from layerpar.parallel.run import load_run_data
    from layerpar.parallel.runner import DistributedRunner
    from layerpar.parallel.setup import build_setup, make_worker

    dist.init_process_group("gloo", init_method="env://", timeout=timedelta(seconds=60))
    try:
        config = load_config(None, overrides)
        setup = build_setup(config)
        data = load_run_data(config)
        comm = TorchDistComm(setup.layout.groups())
        # The oracle owns a full private copy of the model: nothing is shared with the worker.
        oracle_stages = copy.deepcopy(list(setup.partition.stages))
        oracle = OracleAux(oracle_stages, F.cross_entropy)
        worker = make_worker(setup, rank, comm, data.schedule.total_steps, own_copy=False, oracle=oracle)
        runner = DistributedRunner(worker, data.plan, comm)

        x, y = data.plan.batch(0)
        serial = serial_gradients(setup.model, x, y)
        start, stop = setup.partition.bounds[worker.stage], setup.partition.bounds[worker.stage + 1]
        counts = [sum(1 for _ in setup.model.slice(0, start).parameters()),
                  sum(1 for _ in setup.model.slice(start, stop).parameters())]
        want = serial[counts[0] : counts[0] + counts[1]]

        runner.begin(0, 0.01)
        runner.run(FIRST_PHASE)
        got = worker.stage_gradients()
        result: dict[str, Any] = {"rank": rank, "stage": worker.stage, "got": got, "want": want}
        runner.run(COMM_PHASES)
        state = worker.state
        if not worker.is_last:
            truth = oracle(state.x, state.y)
            result.update(
                h=worker.method._h.clone(),
                state_target=state.aux_targets.state.clone(),
                multiplier_target=state.aux_targets.multiplier.clone(),
                oracle_multiplier=truth.multipliers[worker.stage].clone(),
            )
        torch.save(result, Path(out_dir) / f"rank{rank}.pt")
    finally:
        try:
            dist.barrier()
        finally:
            dist.destroy_process_group()
