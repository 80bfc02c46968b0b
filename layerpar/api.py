"""``layerpar.fit``: train your own model on your own data with your own loss, layer-parallel or
serial, through the same trainers and launchers as ``layerpar train``.

    summary = layerpar.fit(model, (x_train, y_train), (x_test, y_test), loss=my_loss,
                           overrides=["parallel.stages=3", "layerpar.method=pipelined"])

``model`` is an ``nn.Sequential`` whose children are the blocks to cut between (or a layerpar
Backbone), or ``"package.module:function"`` returning one.  Data is an ``(inputs, targets)``
pair of tensors, a map-style torch Dataset of pairs, a layerpar ArrayDataset, or (as
``train_data``) ``"package.module:function"`` returning ``(train, test)``.  Python objects train
in this process (the reference trainer, all K modules through LocalComm); with ``cluster=`` every
worker process must build the run itself, so the model, data and loss are then given as
``package.module:function`` strings (``model.factory``, ``data.factory``, ``train.loss``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from torch import nn

from layerpar.config import RunConfig, load_config, replace
from layerpar.errors import ConfigError
from layerpar.parallel.objective import LossFn
from layerpar.parallel.session import RunSummary


def fit(
    model: nn.Module | str | None = None,
    train_data: Any = None,
    test_data: Any = None,
    *,
    loss: LossFn | str | None = None,
    config: RunConfig | str | Path | None = None,
    overrides: Sequence[str] = (),
    mode: Literal["layerpar", "serial"] = "layerpar",
    cluster: str | Path | None = None,
    resume: bool = False,
) -> RunSummary | dict[str, Any] | None:
    """Train and return the run's summary (``final_test_acc``, ``run_dir``, ``record``); with
    ``cluster=``, rank 0's summary record.  ``config`` is a RunConfig or a YAML preset;
    ``overrides`` are ``section.key=value`` strings applied last, as ``--set`` does."""
    run = _config(config, overrides, mode, model, train_data, loss)
    objects: dict[str, Any] = {
        name: value
        for name, value in (
            ("model", model),
            ("train_data", train_data),
            ("test_data", test_data),
            ("loss", loss),
        )
        if value is not None and not isinstance(value, str)
    }
    if cluster is not None:
        if objects:
            raise ConfigError(
                f"fit(cluster=...) starts worker processes that build the run themselves: give "
                f"{', '.join(objects)} as 'package.module:function' strings (model.factory, data.factory, "
                "train.loss), or drop cluster= to train in this process"
            )
        from layerpar.launchers import launch_training, load_cluster_config

        return launch_training(run, load_cluster_config(cluster), resume=resume)
    from layerpar.parallel.trainer import LayerParallelTrainer, SerialTrainer

    trainer_cls = SerialTrainer if mode == "serial" else LayerParallelTrainer
    trainer = trainer_cls(
        run,
        model=objects.get("model"),
        train_data=objects.get("train_data"),
        test_data=objects.get("test_data"),
        loss=objects.get("loss"),
    )
    return trainer.fit(resume=resume)


def _config(
    config: RunConfig | str | Path | None,
    overrides: Sequence[str],
    mode: str,
    model: Any,
    train_data: Any,
    loss: Any,
) -> RunConfig:
    """The run's config: the preset, then what the arguments imply, then ``overrides``."""
    implied = [f"train.mode={mode}"]
    if isinstance(model, str):
        implied.append(f"model.factory={model}")
    if isinstance(train_data, str):
        implied.append(f"data.factory={train_data}")
    if isinstance(loss, str):
        implied.append(f"train.loss={loss}")
    if model is not None:
        implied.append("model.name=user")
    if train_data is not None:
        # A user's tensors are not images: no crop/flip unless the overrides ask for it.
        implied += ["data.dataset=user", "data.crop_pad=0", "data.flip=false"]
    if isinstance(config, RunConfig):
        base = config
        for assignment in [*implied, *overrides]:
            key, _, value = assignment.partition("=")
            section, _, field = key.partition(".")
            base = replace(base, **{section: {field: _yaml(value)}})
        return base
    return load_config(config, [*implied, *overrides])


def _yaml(raw: str) -> Any:
    import yaml

    return yaml.safe_load(raw) if raw.strip() else None
