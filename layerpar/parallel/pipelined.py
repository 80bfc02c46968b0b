"""The pipelined variant (``layerpar.method: pipelined``): true inputs one step late, true
adjoints a few steps late — no AuxNet prediction in the parallel steps.

The ablations in docs/parity.md locate the accuracy gap of the AuxNet methods in the *forward*
prediction: module k+1 learns on a_k(x), which differs from the true h_k by 10–30 %, so the
updates of the parallel steps add nothing that survives the serial composition.  This variant
keeps what makes the method parallel — every module works at the same time on its own device
and nothing inside a step waits for another module — and replaces the prediction by the real
thing, one step late.  Module k (0-based) works on batch t − k at step t:

    step t, module k:
        receive h_{k−1} of batch t−k (module k−1 sent it in its step t−1)
        forward it, on a stashed copy of θ_k                     (module 0: the raw batch t)
        last module: loss of batch t−(K−1), backward at once
        other modules: backward of the batch forwarded D_k = 2(K−1−k) steps ago, with the
            adjoint ∂ℓ/∂h_k that module k+1 sent in its step t−1
        optimiser step; send h_k forward and ∂ℓ/∂u_k backward (both read in step t+1)

Here a "step" is a step of the training loop.  With micro-batches (``layerpar.accumulate``, the
default M = the smallest power of two ≥ 2(K−1)) each batch is M loop steps, the gradients of a
batch's M steps are summed, and the optimiser steps once per batch (the stage worker's
``finish_stage_update``): a delay of D_k loop steps is then at most ⌈D_k/M⌉ weight versions,
one with the default M (the double-buffered weights of PipeDream-2BW, Narayanan et al., 2021).

This is asynchronous pipeline parallelism with weight stashing (PipeDream, Narayanan et al.,
2019; the delayed gradients of Huo et al., 2018): the gradient module k applies is exact
backprop of one batch through the weights every module used for it, D_k steps stale.  Per
boundary and step it sends two activation-sized messages (one forward, one backward); GPipe
sends the same per micro-batch and idles for its bubble, the AuxNet methods send one.

A run of parallel steps starts empty (module k idles for its first k steps: the fill) and ends
(before a serial step, an evaluation or a stop) with a step that sends nothing: the batches still
in flight are dropped, K−1 partial batches per run.  Runs span whole epochs by default, so this
costs a few steps per epoch.  The method builds no AuxNet; each update logs the module's weight
staleness (``weight_staleness``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from layerpar.parallel.delayed import PendingForward, move_gradients, stashed_forward

if TYPE_CHECKING:
    from layerpar.parallel.stage import StageWorker


def pipeline_delay(stage: int, stages: int) -> int:
    """Steps between module ``stage``'s forward of a batch and its update with that batch."""
    return 2 * (stages - 1 - stage)


def compensated_momentum(momentum: float, delay: float) -> float:
    """Explicit momentum for a module whose gradients arrive ``delay`` steps late.

    Delay acts as implicit momentum (Mitliagkas et al., 2016, "Asynchrony begets momentum"):
    roughly, a delay of D optimiser steps multiplies the momentum's time constant 1/(1−μ) by D+1.
    This keeps the total at the serial value by shrinking the explicit part: 1 − (1−μ)(1+D),
    floored at 0."""
    return max(0.0, 1.0 - (1.0 - momentum) * (1 + delay))


def pipelined_forward_backward(worker: StageWorker) -> None:
    """One pipelined step of ``worker`` (the phase ``local_forward_backward``)."""
    s = worker.state
    adjoint_next = None
    if not worker.is_last and len(worker._pending) == worker.delay:
        oldest = worker._pending[0]
        adjoint_next = worker.comm.recv(oldest.h.shape, worker.next_rank, worker.dtype, worker.device)
    u = _pipelined_input(worker)
    if worker._window == 0:  # first micro-batch of an optimiser step: start accumulating
        worker.optimizer.zero_grad(set_to_none=True)
    if worker.is_last:
        worker._labels.append(s.y)
        if u is None:
            return
        loss = worker._task_loss(worker.module(u), worker._labels.popleft())
        loss.backward()
        s.metrics[f"local_loss/{worker.stage}"] = float(loss.detach())
        s.adjoint_out = u.grad
        return
    if u is not None:
        shift = predicted_shift(worker) if worker.config.layerpar.predict_weights else None
        h, weights = stashed_forward(worker.module, u, shift)
        worker._pending.append(PendingForward(u=u, h=h, state=None, weights=weights))
        s.forward_out = h.detach()
    if adjoint_next is None:
        return
    oldest = worker._pending.popleft()
    oldest.h.backward(adjoint_next)
    move_gradients(worker.module, oldest.weights)
    s.metrics[f"weight_staleness/{worker.stage}"] = weight_staleness(worker.module, oldest.weights)
    if not worker.is_first:
        s.adjoint_out = oldest.u.grad


def weight_staleness(module: torch.nn.Module, stashed: list[torch.Tensor]) -> float:
    """||θ_now − θ_forward|| / ||θ_now||: how far the weights moved between the forward of the
    batch and the update with its gradient (0 for serial backprop)."""
    with torch.no_grad():
        moved = sum(float((p - w).pow(2).sum()) for p, w in zip(module.parameters(), stashed, strict=True))
        size = sum(float(p.pow(2).sum()) for p in module.parameters())
    return (moved / size) ** 0.5 if size > 0 else 0.0


def predicted_shift(worker: StageWorker) -> dict[str, torch.Tensor]:
    """−D·lr·b per parameter: where SGD's momentum b carries θ_k in the D steps before this
    batch's gradient is applied (the weight prediction of SpecTrain, Chen et al., 2018).  The
    gradient is then taken near the weights it updates, rather than D steps behind them."""
    optimizer = worker.optimizer
    lr = optimizer.param_groups[0]["lr"]
    shift = {}
    for name, param in worker.module.named_parameters():
        buffer = optimizer.state.get(param, {}).get("momentum_buffer")
        if buffer is not None:
            # The delay in optimiser steps: loop steps / micro-batches per optimiser step.
            shift[name] = -(worker.delay / worker.accumulate) * lr * buffer
    return shift


def _pipelined_input(worker: StageWorker):
    """The raw batch (module 0), h_{k−1} of batch t−k once the pipeline has filled, or None."""
    s = worker.state
    if worker.is_first:
        return s.x
    if worker._run_step < worker.stage:
        return None
    shape = worker._shape(worker.stage - 1, s.x.shape[0])
    return worker.comm.recv(shape, worker.prev_rank, worker.dtype, worker.device).requires_grad_(True)
