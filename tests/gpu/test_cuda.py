"""CUDA / NCCL paths.  They need a GPU (two for NCCL between ranks) and skip cleanly without."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from layerpar.auxnet import OracleAux
from layerpar.config import load_config
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import FIRST_PHASE

ROOT = Path(__file__).resolve().parents[2]
GPUS = torch.cuda.device_count() if torch.cuda.is_available() else 0
needs_gpu = pytest.mark.skipif(GPUS < 1, reason="needs a CUDA GPU (CI has none)")
needs_two_gpus = pytest.mark.skipif(GPUS < 2, reason="NCCL between ranks needs 2 CUDA GPUs (one GPU per rank)")
pytestmark = pytest.mark.gpu


def _config(tmp_path: Path, *extra: str):
    return load_config(ROOT / "configs" / "digits_tiny.yaml", [
        "parallel.device=cuda", "train.dtype=float64", "train.batch_size=32", "data.train_limit=320",
        "train.epochs=1", "train.progress=false", f"train.out_dir={tmp_path}", "layerpar.method=al", *extra])


@needs_gpu
@pytest.mark.parametrize("stages", [2, 4])
def test_oracle_property_on_cuda(tmp_path: Path, stages: int) -> None:
    torch.backends.cudnn.deterministic = True
    trainer = LayerParallelTrainer(
        _config(tmp_path, f"parallel.stages={stages}"),
        oracle_factory=lambda s: OracleAux(s.partition.stages, F.cross_entropy),
    )
    reference = copy.deepcopy(trainer.setup.model)
    trainer.runner.begin(0, 0.01)
    trainer.runner.run(FIRST_PHASE)
    x, y = trainer.data.plan.batch(0)
    F.cross_entropy(reference(x.cuda().double()), y.cuda()).backward()
    parallel = [g for w in trainer.workers for g in w.stage_gradients()]
    serial = [p.grad for p in reference.parameters()]
    error = sum(((a - b) ** 2).sum() for a, b in zip(parallel, serial)) ** 0.5
    norm = sum((b**2).sum() for b in serial) ** 0.5
    assert float(error / norm) < 1e-10


@needs_gpu
@pytest.mark.timeout(300)
def test_nccl_worker_trains_on_one_gpu(tmp_path: Path) -> None:
    """One NCCL rank: group set-up, broadcast/gather of objects and evaluation on the GPU."""
    from layerpar.launchers.local import launch_local

    record = launch_local(_config(tmp_path, "parallel.stages=1", "train.run_name=nccl1", "train.dtype=float32"))
    assert record is not None and 0.0 <= record["final_test_acc"] <= 1.0


@needs_two_gpus
@pytest.mark.timeout(300)
def test_nccl_two_stages_match_in_process_reference(tmp_path: Path) -> None:
    from layerpar.launchers.local import launch_local

    record = launch_local(_config(tmp_path, "parallel.stages=2", "train.run_name=nccl2"))
    reference = LayerParallelTrainer(_config(tmp_path, "parallel.stages=2", "train.run_name=ref")).fit()
    assert record is not None
    ours = torch.load(tmp_path / "nccl2" / "model.pt", weights_only=True)["model"]
    theirs = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["model"]
    for key in ours:
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-9, atol=1e-9)
    assert abs(record["final_test_acc"] - reference.final_test_acc) < 1e-9
