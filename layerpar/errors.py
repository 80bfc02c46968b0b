"""One error hierarchy for layerpar.

Every message states what was expected, what was found and how to fix it.  Errors raised inside
worker processes must survive pickling (Ray and multiprocessing send them to the driver), so each
class keeps its constructor arguments in ``args`` and defines no extra required parameters.
"""

from __future__ import annotations


class LayerparError(Exception):
    """Base class of every error layerpar raises on purpose."""


class ConfigError(LayerparError, ValueError):
    """A config file, a ``--set`` override or a constructor argument is invalid."""


class PartitionError(LayerparError, ValueError):
    """A model cannot be split the way it was asked to be."""


class DataError(LayerparError):
    """A data set could not be fetched, verified or read."""


class CheckpointError(LayerparError):
    """A checkpoint is missing, corrupt or does not fit the model."""


class LaunchError(LayerparError):
    """Workers could not be started, or a launcher is misconfigured."""


class NonFiniteError(LayerparError):
    """A loss or gradient became NaN or Inf: training cannot go on from here."""


class WorkerError(LayerparError):
    """A worker failed; the message carries its rank and traceback.

    ``retryable``: the failure is one a restart from the last checkpoint can get past (a worker
    process died, its peers lost the connection); an error the worker raised on purpose (a bad
    config, a NaN loss) is not."""

    def __init__(self, message: str, rank: int | None = None, retryable: bool = False) -> None:
        super().__init__(message, rank, retryable)
        self.message = message
        self.rank = rank
        self.retryable = retryable

    def __str__(self) -> str:
        where = f"worker rank {self.rank}" if self.rank is not None else "a worker"
        return f"{where} failed:\n{self.message}"
