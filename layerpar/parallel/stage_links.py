"""Where a stage worker sits and what it says to its neighbours: the topology and messages half
of ``StageWorker`` (``stage.py``), kept apart so that each file holds one concept.

Every message is one tensor sent without waiting (``isend``) in the wire dtype and received into
the master dtype; the sends of a step are waited on when the step ends (or, for a stale method,
a step later), so a module never blocks on its own sends inside a step.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from layerpar.parallel.clock import PhaseClock
from layerpar.parallel.comm import Comm, Handle
from layerpar.parallel.layout import Layout
from layerpar.parallel.methods.base import Method, StepState


class StageLinks(ABC):
    """Topology and messages of a stage worker; ``StageWorker`` sets the attributes below."""

    layout: Layout
    stage: int
    replica: int
    boundary_shapes: list[tuple[int, ...]]
    comm: Comm
    clock: PhaseClock
    method: Method
    device: torch.device
    dtype: torch.dtype
    wire_dtype: torch.dtype
    _inflight: list[Handle]

    @property
    @abstractmethod
    def state(self) -> StepState:
        """This step's state (``StageWorker.state``)."""

    # ---------------------------------------------------------------------------- topology

    @property
    def stages(self) -> int:
        return self.layout.stages

    @property
    def is_first(self) -> bool:
        return self.stage == 0

    @property
    def is_last(self) -> bool:
        return self.stage == self.layout.stages - 1

    @property
    def prev_rank(self) -> int:
        return self.layout.rank(self.stage - 1, self.replica)

    @property
    def next_rank(self) -> int:
        return self.layout.rank(self.stage + 1, self.replica)

    def boundary_shape(self, boundary: int, batch: int) -> tuple[int, ...]:
        return (batch, *self.boundary_shapes[boundary])

    # ---------------------------------------------------------------------------- messages

    def send_forward(self, h: torch.Tensor) -> None:
        with self.clock("send"):
            self.state.sends.append(self._isend(h, self.next_rank))

    def send_backward(self, grad: torch.Tensor) -> None:
        with self.clock("send"):
            self.state.sends.append(self._isend(grad, self.prev_rank))

    def _isend(self, tensor: torch.Tensor, dst: int) -> Handle:
        return self.comm.isend(tensor.detach().to(self.wire_dtype), dst)

    def resend(self) -> None:
        """After a resume: send again what the last step before the checkpoint sent (its
        receivers read it in their next step, which is this run's first)."""
        for direction, tensor in self.method.outgoing():
            self._inflight.append(
                self._isend(tensor, self.next_rank if direction == "forward" else self.prev_rank)
            )

    def recv_forward(self, batch: int) -> torch.Tensor:
        """Module k−1's output for this step: a leaf that requires grad, in the master dtype."""
        shape = self.boundary_shape(self.stage - 1, batch)
        with self.clock("wait: receive"):
            u = self.comm.recv(shape, self.prev_rank, self.wire_dtype, self.device)
        return u.to(self.dtype).requires_grad_(True)

    def recv_backward(self, shape: Sequence[int]) -> torch.Tensor:
        """Module k+1's gradient with respect to this module's output."""
        with self.clock("wait: receive"):
            return self.comm.recv(shape, self.next_rank, self.wire_dtype, self.device).to(self.dtype)
