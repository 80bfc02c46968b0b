"""Real gloo processes train a denoiser exactly as the in-process reference does: the same
per-step losses, the same final weights and EMA weights, the same held-out denoising loss.

Every rank draws the same (t, ε, label dropout) from the step seed and holds a replica of the
conditioning embedder whose gradients are summed over all ranks; a wrong draw or a missed
all-reduce would show here as diverging losses or embedders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from layerpar.checkpoint import load_checkpoint
from layerpar.config import replace
from layerpar.launchers.local import launch_local
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.denoisers import denoiser_config
from tests.helpers.oracle import relative_error


def _steps(run_dir: Path) -> list[dict]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in records if r["kind"] == "step"]


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize(
    ("backbone", "stages", "replicas", "dtype", "extra"),
    [
        pytest.param("dit", 2, 1, "float64", ("layerpar.method=pipelined",), id="dit-K2-pipelined"),
        pytest.param("mlp", 3, 1, "float64", ("layerpar.method=al", "layerpar.warmup_epochs=0.25",
                                              "layerpar.serial_final_epochs=0.25"), id="mlp-K3-al-hybrid"),
        pytest.param("mlp", 2, 2, "float32", ("layerpar.method=pipelined",), id="mlp-K2xR2-pipelined"),
    ],
)
def test_processes_reproduce_the_in_process_denoiser(tmp_path, backbone, stages, replicas, dtype, extra):
    config = denoiser_config(tmp_path, backbone, *extra, "train.epochs=1", "optim.name=adamw", "optim.lr=0.003",
                             "optim.weight_decay=0", "diffusion.ema_decay=0.9", stages=stages)
    config = replace(config, train={"dtype": dtype, "run_name": "ref"}, parallel={"replicas": replicas})
    ref = LayerParallelTrainer(config).fit()
    summary = launch_local(replace(config, train={"run_name": "dist"}), timeout_s=200)
    assert summary is not None and summary["replicas"] == replicas
    rel = 1e-12 if dtype == "float64" else 1e-5
    got, want = _steps(tmp_path / "dist"), _steps(ref.run_dir)
    assert [r["step"] for r in got] == [r["step"] for r in want] and len(want) >= 16
    timing = {"step_time_s", "train_time_s", "samples_per_s", "kind"}
    assert sum("loss" in r for r in want) >= 10
    for g, w in zip(got, want):
        assert set(g) == set(w), set(g) ^ set(w)
        for key in set(w) - timing:
            if w[key] is not None:
                assert abs(g[key] - w[key]) <= rel * max(1.0, abs(w[key])), (w["step"], key, g[key], w[key])
    got_model, ref_model = load_checkpoint(tmp_path / "dist" / "model.pt"), load_checkpoint(ref.run_dir / "model.pt")
    for part in ("model", "model_ema"):
        assert got_model[part].keys() == ref_model[part].keys()
        keys = sorted(ref_model[part])
        assert relative_error([got_model[part][k] for k in keys], [ref_model[part][k] for k in keys]) <= rel
        assert any(k.startswith("embedder.") for k in keys)
    live, ema = (ref_model[part]["embedder.time_out.weight"] for part in ("model", "model_ema"))
    assert not torch.equal(live, ema)
    assert abs(summary["final_eval"]["test_loss"] - ref.record["final_eval"]["test_loss"]) <= 10 * rel
