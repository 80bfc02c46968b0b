"""The FiLM residual-MLP denoiser for 2-D data (and flattened images)."""

from __future__ import annotations

import pytest
import torch

from layerpar.errors import ConfigError
from layerpar.models import build_model, denoiser_mlp, is_conditioned
from layerpar.models.denoiser_mlp import FiLMResidualBlock, InputProjection, OutputHead


def _cond(time: list[float], labels: list[float]) -> torch.Tensor:
    return torch.tensor([time, labels]).T.contiguous()


def test_2d_denoiser_by_name_shapes_and_identity_blocks():
    torch.manual_seed(0)
    model = build_model("mlp_denoiser", in_channels=2, image_size=1, num_classes=0, hidden=32, depth=3)
    assert len(model) == 5 and model.embedder.label_table is None
    assert isinstance(model.blocks[0], InputProjection) and isinstance(model.blocks[-1], OutputHead)
    assert [is_conditioned(b) for b in model.blocks] == [False, True, True, True, False]
    x, cond = torch.randn(7, 2), _cond([float(t) for t in range(0, 700, 100)], [0.0] * 7)
    out = model(x, cond)
    assert out.shape == x.shape
    h, c = model.blocks[0](x), model.embedder(cond)
    for block in list(model.blocks)[1:-1]:
        assert torch.equal(block(h, c), h)  # zero FiLM and zero W2: the identity at init


def test_training_makes_the_output_depend_on_time_and_label():
    torch.manual_seed(0)
    model = denoiser_mlp(features=2, hidden=16, depth=2, num_classes=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(64, 2)
    cond = torch.stack([torch.rand(64) * 1000, torch.randint(0, 4, (64,)).float()], dim=1)
    target = torch.randn(64, 2)
    for _ in range(3):
        opt.zero_grad()
        (model(x, cond) - target).square().mean().backward()
        opt.step()
    block = model.blocks[1]
    assert isinstance(block, FiLMResidualBlock)
    assert block.film.weight.abs().sum() > 0 and block.fc2.weight.abs().sum() > 0
    probe = torch.zeros(2, 2)
    by_time = model(probe, _cond([10.0, 900.0], [1.0, 1.0]))
    by_label = model(probe, _cond([10.0, 10.0], [1.0, 3.0]))  # 3 is the null label
    assert not torch.equal(by_time[0], by_time[1]) and not torch.equal(by_label[0], by_label[1])


def test_image_denoiser_keeps_the_image_shape():
    model = build_model("mlp_denoiser", in_channels=1, image_size=8, num_classes=10, hidden=16, depth=1)
    x = torch.randn(3, 1, 8, 8)
    assert model(x, _cond([1.0, 2.0, 3.0], [0.0, 5.0, 10.0])).shape == x.shape


def test_float64():
    model = denoiser_mlp(features=2, hidden=8, depth=2, num_classes=None).double()
    out = model(torch.randn(4, 2, dtype=torch.float64), torch.zeros(4, 2, dtype=torch.float64))
    assert out.dtype == torch.float64 and out.shape == (4, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"features": 0}, "positive"),
        ({"depth": -1}, "positive"),
        ({"data_shape": (3,)}, "product is features"),
    ],
)
def test_invalid_denoiser_mlp(kwargs, match):
    sizes = {"features": 2, "hidden": 8, "depth": 1, "num_classes": None} | kwargs
    with pytest.raises(ConfigError, match=match):
        denoiser_mlp(**sizes)
