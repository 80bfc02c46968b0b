"""Cut a backbone into K contiguous modules ("stages"), balanced by blocks, parameters or time.

The cut minimises the cost of the most expensive stage, because in layer-parallel training
every stage works at once and the step takes as long as the slowest one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from layerpar.errors import PartitionError
from layerpar.models.backbone import Backbone, as_backbone, is_conditioned

Balance = Literal["blocks", "params", "time"]


@dataclass(frozen=True)
class Partition:
    """A backbone cut into stages; ``bounds[k]:bounds[k+1]`` are stage k's block indices."""

    stages: tuple[Backbone, ...]
    bounds: tuple[int, ...]
    block_costs: tuple[float, ...]

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    def stage_costs(self) -> list[float]:
        return [sum(self.block_costs[a:b]) for a, b in zip(self.bounds, self.bounds[1:])]

    def imbalance(self) -> float:
        """Slowest stage over the mean stage cost (1.0 is perfect balance)."""
        costs = self.stage_costs()
        return max(costs) / (sum(costs) / len(costs)) if sum(costs) > 0 else 1.0


def split(
    model: nn.Module,
    stages: int,
    balance: Balance = "blocks",
    sample: torch.Tensor | None = None,
    repeats: int = 3,
    cond: torch.Tensor | None = None,
) -> Partition:
    """Cut ``model`` (a Backbone or an ``nn.Sequential``) into ``stages`` contiguous stages.

    Args:
        model: the backbone; its blocks are never split.
        stages: K, the number of stages.
        balance: ``blocks`` (equal block counts), ``params`` (parameter counts) or ``time``
            (forward+backward time of each block, measured on ``sample``).
        sample: an input batch, required for ``balance="time"``.
        repeats: timed repetitions per block for ``balance="time"`` (the median is used).
        cond: the conditioning of ``sample`` (a denoiser's).

    Raises:
        PartitionError: K < 1, K larger than the number of blocks, or a bad balance mode.
    """
    backbone = as_backbone(model)
    num_blocks = len(backbone)
    if stages < 1 or stages > num_blocks:
        raise PartitionError(
            f"cannot cut {num_blocks} blocks into {stages} stages: choose 1 <= stages <= "
            f"{num_blocks}, or use a deeper model"
        )
    costs = block_costs(backbone, balance, sample, repeats, cond)
    bounds = balanced_bounds(costs, stages)
    parts = tuple(backbone.slice(a, b) for a, b in zip(bounds, bounds[1:]))
    return Partition(stages=parts, bounds=tuple(bounds), block_costs=tuple(costs))


def block_costs(
    backbone: Backbone,
    balance: str,
    sample: torch.Tensor | None,
    repeats: int = 3,
    cond: torch.Tensor | None = None,
) -> list[float]:
    """One cost per block under the chosen balance mode."""
    if balance == "blocks":
        return [1.0] * len(backbone)
    if balance == "params":
        return [float(sum(p.numel() for p in block.parameters())) + 1.0 for block in backbone.blocks]
    if balance == "time":
        if sample is None:
            raise PartitionError('balance="time" needs a sample batch to profile: pass sample=...')
        return profile_blocks(backbone, sample, repeats, cond)
    raise PartitionError(f"unknown balance {balance!r}; valid: blocks, params, time")


def profile_blocks(
    backbone: Backbone, sample: torch.Tensor, repeats: int = 3, cond: torch.Tensor | None = None
) -> list[float]:
    """Median forward+backward seconds of each block on ``sample`` (after one warm-up pass).
    A denoiser's embedder runs on every module alike, so it is not part of any block's cost.

    BatchNorm running statistics are saved and restored, so profiling leaves the model as it was.
    """
    saved = {k: v.clone() for k, v in backbone.state_dict().items()}
    embedding = None
    if backbone.embedder is not None and cond is not None:
        with torch.no_grad():
            embedding = backbone.embedder(cond)
    costs = []
    x = sample
    for block in backbone.blocks:
        timings = []
        for attempt in range(repeats + 1):
            inp = x.detach().requires_grad_(True)
            start = time.perf_counter()
            out = block(inp, embedding) if is_conditioned(block) else block(inp)
            out.backward(torch.ones_like(out))
            if out.is_cuda:
                torch.cuda.synchronize(out.device)
            if attempt > 0:
                timings.append(time.perf_counter() - start)
        backbone.zero_grad(set_to_none=True)
        costs.append(sorted(timings)[len(timings) // 2])
        x = out.detach()
    backbone.load_state_dict(saved)
    return costs


def balanced_bounds(costs: Sequence[float], stages: int) -> list[int]:
    """Contiguous cut of ``costs`` into ``stages`` non-empty parts minimising the largest sum.

    Dynamic programming over (blocks used, stages used); O(n² K), tiny for real backbones.
    Ties prefer earlier, more even cuts, so equal costs give equal block counts.
    """
    n = len(costs)
    if not 1 <= stages <= n:
        raise PartitionError(f"cannot cut {n} blocks into {stages} stages: choose 1 <= stages <= {n}")
    prefix = [0.0]
    for cost in costs:
        prefix.append(prefix[-1] + cost)
    inf = float("inf")
    best = [[inf] * (stages + 1) for _ in range(n + 1)]
    choice = [[0] * (stages + 1) for _ in range(n + 1)]
    best[0][0] = 0.0
    for k in range(1, stages + 1):
        for end in range(k, n - (stages - k) + 1):
            for start in range(k - 1, end):
                value = max(best[start][k - 1], prefix[end] - prefix[start])
                if value < best[end][k] - 1e-12 * max(1.0, abs(value)):
                    best[end][k] = value
                    choice[end][k] = start
    bounds = [n]
    for k in range(stages, 0, -1):
        bounds.append(choice[bounds[-1]][k])
    return bounds[::-1]
