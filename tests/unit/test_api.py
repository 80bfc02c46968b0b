"""The public API: the README's example runs as written, and a user's own model trained
through ``layerpar.fit`` obeys the same exactness properties as the built-in backbones."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

import layerpar
from layerpar.auxnet import OracleAux
from layerpar.errors import ConfigError
from tests.helpers.oracle import FIRST_PHASE, relative_error, run_capturing, serial_gradients
from tests.helpers.user_model import build as build_user_model

ROOT = Path(__file__).resolve().parents[2]


def readme_api_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## API: your own model") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's API section has no python example"
    return match.group(1)


@pytest.mark.slow
def test_readme_api_example_runs_and_the_parallel_methods_learn_what_serial_learns(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(compile(readme_api_example(), "README.md", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "pipelined: test accuracy" in printed and "al: test accuracy" in printed
    serial = namespace["serial"]
    assert serial.final_test_acc > 0.9, "the example task must be learnable, or the comparison says nothing"
    runs = {}
    for summary_path in (tmp_path / "runs").glob("*/summary.json"):
        record = json.loads(summary_path.read_text())
        assert record["model"] == "user" and record["dataset"] == "user"
        runs[record["method"]] = record
    assert set(runs) == {"serial", "pipelined", "al"}
    # The pipelined method learns what serial backprop learns on the user's model (this toy,
    # 4 epochs: within 5 points).
    assert runs["pipelined"]["final_test_acc"] > serial.final_test_acc - 0.05
    # The AL run's first epoch is its serial warm-up: serial backprop exactly, same accuracy.
    assert runs["al"]["epochs_log"][0]["test_acc"] == runs["serial"]["epochs_log"][0]["test_acc"]


def _user_model() -> nn.Sequential:
    """The residual MLP with BatchNorm of tests/helpers/user_model.py, in float64."""
    torch.manual_seed(0)
    return build_user_model(None).double()


def _user_data() -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (256,), generator=g)
    return (x[:192], y[:192]), (x[192:], y[192:])


def _overrides(tmp_path: Path, method: str, *extra: str) -> list[str]:
    return ["parallel.stages=3", "parallel.balance=blocks", "train.dtype=float64", "train.batch_size=32",
            "train.progress=false", f"train.out_dir={tmp_path}", f"layerpar.method={method}",
            "data.crop_pad=0", *extra]


def _trainer(tmp_path: Path, method: str, *extra: str, **kwargs):
    train, test = _user_data()
    config = layerpar.load_config(None, _overrides(tmp_path, method, *extra))
    return layerpar.LayerParallelTrainer(config, model=_user_model(), train_data=train, test_data=test,
                                         loss=F.cross_entropy, **kwargs)


def test_user_model_al_oracle_gradients_equal_serial_backprop(tmp_path):
    """K = 3, the user's residual MLP with BatchNorm: with the oracle AuxNet the AL local
    gradients are serial backprop's (float64)."""
    trainer = _trainer(tmp_path, "al", oracle_factory=lambda s: OracleAux(s.partition.stages, F.cross_entropy))
    x, y = trainer.data.plan.batch(0)
    want = serial_gradients(trainer.model, x, y)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(FIRST_PHASE)
    got = [g for w in trainer.workers for g in w.stage_gradients()]
    assert relative_error(got, want) < 1e-10


def test_user_model_pipelined_updates_are_backprop_through_the_stashed_weights(tmp_path):
    """K = 3, one micro-batch per step: module k's update at step t is serial backprop of batch
    t − k − 2(K−1−k) through every module at the weights it forwarded that batch with."""
    trainer = _trainer(tmp_path, "pipelined", "layerpar.accumulate=1")
    grads, snapshots = run_capturing(trainer, 6)
    bounds = trainer.setup.partition.bounds
    for step, stage in ((4, 0), (4, 1), (5, 0), (5, 2)):
        batch = step - stage - 2 * (2 - stage)
        chain = nn.Sequential(*(snapshots[batch + j].slice(bounds[j], bounds[j + 1]) for j in range(3)))
        x, y = trainer.data.plan.batch(batch)
        full = serial_gradients(chain, x, y)
        before = sum(1 for j in range(stage) for _ in chain[j].parameters())
        want = full[before : before + sum(1 for _ in chain[stage].parameters())]
        assert relative_error(grads[step][stage], want) < 1e-10, (step, stage)


def test_fit_with_a_cluster_refuses_python_objects_with_the_fix():
    train, test = _user_data()
    with pytest.raises(ConfigError, match="model.factory, data.factory"):
        layerpar.fit(_user_model(), train, test, cluster="cluster_configs/local_cpu.yaml")


def test_user_data_that_cannot_be_augmented_says_how_to_fix_it(tmp_path):
    train, test = _user_data()
    config = layerpar.load_config(None, [*_overrides(tmp_path, "al"), "data.crop_pad=2"])
    with pytest.raises(ConfigError, match="set data.crop_pad=0"):
        layerpar.LayerParallelTrainer(config, model=_user_model(), train_data=train, test_data=test)
