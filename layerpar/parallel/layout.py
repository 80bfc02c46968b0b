"""Which rank holds which module: ``rank = replica × stages + stage``."""

from __future__ import annotations

from dataclasses import dataclass

from layerpar.errors import ConfigError


@dataclass(frozen=True)
class Layout:
    """Layer-parallel stages × data-parallel replicas."""

    stages: int
    replicas: int = 1

    @property
    def world_size(self) -> int:
        return self.stages * self.replicas

    def rank(self, stage: int, replica: int) -> int:
        return replica * self.stages + stage

    def stage_of(self, rank: int) -> int:
        return rank % self.stages

    def replica_of(self, rank: int) -> int:
        return rank // self.stages

    def stage_group(self, stage: int) -> tuple[int, ...]:
        """The replicas of one stage: they all-reduce that stage's gradients."""
        return tuple(self.rank(stage, r) for r in range(self.replicas))

    def world(self) -> tuple[int, ...]:
        return tuple(range(self.world_size))

    def groups(self) -> list[tuple[int, ...]]:
        """Every all-reduce group, in the one order all ranks must create them."""
        return [self.world()] + [self.stage_group(s) for s in range(self.stages)]

    def check_world_size(self, world_size: int) -> None:
        if world_size != self.world_size:
            raise ConfigError(
                f"stages × replicas must equal the world size: stages={self.stages} × "
                f"replicas={self.replicas} = {self.world_size}, but world size = {world_size}. "
                f"Set parallel.stages and parallel.replicas so their product is {world_size}, "
                f"e.g. {_factorisations(world_size)}"
            )


def _factorisations(n: int) -> str:
    return ", ".join(f"{k}×{n // k}" for k in range(1, n + 1) if n % k == 0)
