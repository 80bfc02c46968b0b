"""Which steps are serial backprop and which are layer-parallel, and β along the way.

step: 0 ........ warm-up ........ | ...... layer-parallel ...... | .. serial hybrid .. | end
      serial backprop + AuxNet      all modules at once           ordinary backprop
      distillation                  (every n-th step serial
                                     with serial_every = n)
"""

from __future__ import annotations

from dataclasses import dataclass

from layerpar.config import RunConfig
from layerpar.parallel.local_loss import beta_at
from layerpar.parallel.methods import method_class, serial_final_epochs, warmup_epochs


@dataclass(frozen=True)
class StepSchedule:
    total_steps: int
    warmup_steps: int
    final_serial_steps: int
    beta: float
    beta_final: float | None
    serial_every: int = 0

    @classmethod
    def from_config(cls, config: RunConfig, steps_per_epoch: int) -> StepSchedule:
        total = max(1, round(config.train.epochs * steps_per_epoch))
        if method_class(config).serial_only or config.parallel.stages == 1:
            warmup, final = total, 0
        else:
            warmup = min(total, round(warmup_epochs(config) * steps_per_epoch))
            final = min(total - warmup, round(serial_final_epochs(config) * steps_per_epoch))
        return cls(
            total,
            warmup,
            final,
            config.layerpar.beta,
            config.layerpar.beta_final,
            config.layerpar.serial_every,
        )

    def is_serial(self, step: int) -> bool:
        if step < self.warmup_steps or step >= self.total_steps - self.final_serial_steps:
            return True
        every = self.serial_every
        return every > 0 and (step - self.warmup_steps) % every == every - 1

    @property
    def parallel_steps(self) -> int:
        return self.total_steps - self.warmup_steps - self.final_serial_steps

    def beta_at(self, step: int) -> float:
        progress = (step - self.warmup_steps) / max(self.parallel_steps - 1, 1)
        return beta_at(self.beta, self.beta_final, progress)
