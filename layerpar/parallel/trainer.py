"""In-process trainers: serial backprop (the baseline and oracle) and the layer-parallel
reference that runs all K modules in one process through ``LocalComm``.

The distributed runtime (``worker.py``) runs the very same step programs and the same run
(``session.py``), one worker per process.  Both trainers take the config's model and data, or
a user's own ``model`` (an ``nn.Sequential`` of blocks or a Backbone), ``train_data`` /
``test_data`` (tensors, a Dataset or an ArrayDataset) and ``loss`` (``fn(output, target)``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from layerpar.auxnet.ablation import ORACLE_PARTS, SharedOracle
from layerpar.config import RunConfig, replace
from layerpar.parallel.aux_trainer import Oracle
from layerpar.parallel.comm import LocalHub
from layerpar.parallel.objective import LossFn, objective_from
from layerpar.parallel.run import RunData, load_run_data, pin_run_dir
from layerpar.parallel.runner import InProcessRunner
from layerpar.parallel.session import RunSession, RunSummary
from layerpar.parallel.setup import Setup, build_setup, make_worker, resolve_device
from layerpar.parallel.stage import StageWorker


class InProcessTrainer:
    """Trains K × R workers in this process, phase by phase (see ``runner.py``)."""

    def __init__(
        self,
        config: RunConfig,
        *,
        model: nn.Module | None = None,
        train_data: Any = None,
        test_data: Any = None,
        loss: str | LossFn | None = None,
        oracle_factory: Callable[[Setup], Oracle] | None = None,
        data: RunData | None = None,
    ) -> None:
        # One folder for the whole run: an unnamed run's timestamp is taken once, here, not
        # again by each part that needs the folder (a second later it would be another one).
        config = pin_run_dir(config)
        self.config = config
        self.data = data or load_run_data(config, train_data, test_data)
        objective = objective_from(
            loss if loss is not None else config.train.loss, denoiser=config.is_diffusion
        )
        input_shape = self.data.input_shape if (model is not None or config.model.factory) else None
        self.setup = build_setup(
            config, resolve_device(config), model=model, input_shape=input_shape, objective=objective
        )
        self.hub = LocalHub(self.setup.layout.world_size)
        oracle, parts = self._oracle(oracle_factory)
        self.workers: list[StageWorker] = [
            make_worker(
                self.setup,
                rank,
                comm,
                self.data.schedule.total_steps,
                own_copy=True,
                oracle=oracle,
                oracle_parts=parts,
            )
            for rank, comm in enumerate(self.hub.comms())
        ]
        self.runner = InProcessRunner(self.workers, self.data.plan)
        self.session = RunSession(config, self.runner, self.setup, self.data)
        self.run_dir = self.session.run_dir

    def _oracle(self, factory: Callable[[Setup], Oracle] | None) -> tuple[Oracle | None, frozenset[str]]:
        """A test's oracle (it replaces the whole prediction), or the ablation of
        ``layerpar.oracle`` (one serial pass per step, shared by the K workers)."""
        if factory is not None:
            return factory(self.setup), ORACLE_PARTS["both"]
        ablation = self.config.layerpar.oracle
        if ablation is None or self.config.train.mode == "serial":
            return None, ORACLE_PARTS["both"]
        stages = self.setup.partition.stages
        return SharedOracle(stages, self.setup.objective.loss), ORACLE_PARTS[ablation]

    @property
    def model(self) -> nn.Module:
        """The whole backbone (replica 0's modules, trained in place)."""
        return self.setup.model

    def evaluate(self) -> dict[str, float]:
        return self.runner.evaluate(self.data.test, self.data.bn_images)

    def fit(self, resume: bool | str = False) -> RunSummary:
        summary = self.session.fit(resume)
        assert summary is not None  # one process: this is rank 0
        return summary


def serial_config(config: RunConfig) -> RunConfig:
    """The serial-backprop twin of ``config``: same everything, one module, one device."""
    return replace(config, train={"mode": "serial"}, parallel={"stages": 1, "replicas": 1})


class SerialTrainer(InProcessTrainer):
    """Ordinary backprop on the whole backbone: the baseline every parallel path is tested against."""

    def __init__(self, config: RunConfig, **kwargs: Any) -> None:
        super().__init__(serial_config(config), **kwargs)


class LayerParallelTrainer(InProcessTrainer):
    """All K modules in one process through LocalComm: the numerical reference."""
