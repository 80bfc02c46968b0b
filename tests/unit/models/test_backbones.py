"""Backbones are flat block sequences: ResNets, WideResNets, the residual MLP, users' Sequentials."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from layerpar.errors import ConfigError, PartitionError
from layerpar.models import (
    MODEL_NAMES,
    Backbone,
    as_backbone,
    build_model,
    is_conditioned,
    residual_mlp,
    resnet,
    wide_resnet,
)
from layerpar.parallel.partition import split


@pytest.mark.parametrize("width", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("depth", [20, 32, 44, 56, 110])
def test_resnet_builds_and_runs(depth, channels, width):
    model = resnet(depth, in_channels=channels, num_classes=7, width=width)
    n = (depth - 2) // 6
    assert len(model) == 3 * n + 2  # stem, 3n basic blocks, head
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[0].in_channels == channels
    assert convs[-1].out_channels == 64 * width
    # depth counts the weighted layers: the stem conv, 6n block convs and the fc (not shortcuts)
    main_convs = [c for c in convs if c.kernel_size == (3, 3)]
    assert len(main_convs) + 1 == depth
    with torch.no_grad():
        out = model(torch.randn(2, channels, 8, 8))
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("depth", [21, 19, 2, 0])
def test_resnet_wrong_depth(depth):
    with pytest.raises(ConfigError, match="6n\\+2"):
        resnet(depth)


def test_build_model_by_name():
    model = build_model("resnet32", in_channels=1, image_size=8, num_classes=10)
    assert len(model) == 17
    with pytest.raises(ConfigError, match="6n\\+2"):
        build_model("resnet33", in_channels=1, image_size=8, num_classes=10)


def test_build_model_unknown_name_lists_valid_names():
    with pytest.raises(ConfigError) as info:
        build_model("vgg16", in_channels=1, image_size=8, num_classes=10)
    for name in MODEL_NAMES:
        assert name in str(info.value)


@pytest.mark.parametrize(("name", "blocks", "width"), [("wrn16-4", 8, 256), ("wrn28-2", 14, 128)])
def test_wide_resnets_build_and_run(name, blocks, width):
    model = build_model(name, in_channels=3, image_size=8, num_classes=10)
    assert len(model) == blocks
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs[-1].out_channels == width
    with torch.no_grad():
        assert model(torch.randn(2, 3, 8, 8)).shape == (2, 10)


@pytest.mark.parametrize(("depth", "widen"), [(15, 2), (8, 2), (16, 0)])
def test_wide_resnet_invalid(depth, widen):
    with pytest.raises(ConfigError):
        wide_resnet(depth, widen)


def test_residual_mlp():
    model = build_model("mlp", in_channels=1, image_size=8, num_classes=10, hidden=16, depth=3)
    assert len(model) == 5
    assert model(torch.randn(4, 1, 8, 8)).shape == (4, 10)
    assert residual_mlp(5, 2, hidden=4, depth=0)(torch.randn(3, 5)).shape == (3, 2)


def test_same_seed_same_model():
    torch.manual_seed(7)
    a = resnet(20, in_channels=1)
    torch.manual_seed(7)
    b = resnet(20, in_channels=1)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


# --------------------------------------------------------------------------------------------
# Backbone


def test_slice_shares_parameters():
    model = resnet(20, in_channels=1)
    part = model.slice(2, 5)
    assert isinstance(part, Backbone) and len(part) == 3
    assert all(a is b for a, b in zip(part.blocks, list(model.blocks)[2:5]))
    p_slice = next(part.parameters())
    p_model = next(model.blocks[2].parameters())
    assert p_slice is p_model
    with torch.no_grad():
        p_slice.add_(1.0)
    assert torch.equal(p_model, p_slice)


def test_slices_compose_to_the_model():
    model = resnet(20, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    h = x
    for a, b in [(0, 3), (3, 4), (4, 11)]:
        h = model.slice(a, b)(h)
    torch.testing.assert_close(h, model(x), rtol=0, atol=0)


def test_as_backbone_accepts_backbone_and_sequential():
    model = resnet(20, in_channels=1)
    assert as_backbone(model) is model
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    bb = as_backbone(seq)
    assert isinstance(bb, Backbone) and len(bb) == 3
    assert all(a is b for a, b in zip(bb.blocks, seq))
    x = torch.randn(5, 3)
    torch.testing.assert_close(bb(x), seq(x), rtol=0, atol=0)


@pytest.mark.parametrize("module", [nn.Linear(3, 3), nn.ModuleList([nn.Linear(3, 3)])])
def test_as_backbone_rejects_other_modules(module):
    with pytest.raises(PartitionError) as info:
        as_backbone(module)
    assert type(module).__name__ in str(info.value)
    assert "nn.Sequential" in str(info.value)


# --------------------------------------------------------------------------------------------
# Conditioning


class _Conditioned(nn.Module):
    conditioned = True

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        self.seen.append(cond)
        return x + cond


class _Plain(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # one argument only
        return 2 * x


def test_conditioned_block_receives_cond_plain_block_does_not():
    cond_block = _Conditioned()
    model = Backbone([_Plain(), cond_block, _Plain()])
    assert is_conditioned(cond_block) and not is_conditioned(model.blocks[0])
    x, cond = torch.ones(2, 3), torch.full((2, 3), 0.5)
    out = model(x, cond)
    assert cond_block.seen == [cond]
    torch.testing.assert_close(out, 2 * (2 * x + cond))


def test_conditioning_survives_a_split():
    cond_block = _Conditioned()
    seq = nn.Sequential(_Plain(), _Plain(), cond_block, _Plain())
    part = split(seq, 2)
    x, cond = torch.ones(1, 2), torch.ones(1, 2)
    h = x
    for stage in part.stages:
        h = stage(h, cond)
    torch.testing.assert_close(h, 2 * (4 * x + cond))
    assert len(cond_block.seen) == 1 and cond_block.seen[0] is cond


def test_resnet_blocks_ignore_cond():
    model = resnet(20, in_channels=1).eval()
    x = torch.randn(2, 1, 8, 8)
    torch.testing.assert_close(model(x, torch.randn(2, 5)), model(x), rtol=0, atol=0)


def test_the_parameter_heavy_preset_sends_less_at_its_cut_than_ddp_all_reduces() -> None:
    """configs/fmnist_mlp_wide.yaml is the bench's regime where parameters outweigh activations:
    its one cut carries a (batch, hidden) activation, DDP all-reduces every parameter."""
    from layerpar.config import load_config
    from layerpar.parallel.setup import build_model_for

    config = load_config(Path(__file__).resolve().parents[3] / "configs/fmnist_mlp_wide.yaml")
    model, input_shape, _ = build_model_for(config)
    parameters = sum(p.numel() for p in model.parameters())
    x = torch.zeros(config.train.batch_size, *input_shape)
    cut = model.slice(0, len(model) // 2)(x)
    assert parameters == 17_613_834
    assert cut.shape == (config.train.batch_size, config.model.hidden)
    assert parameters > 50 * cut.numel()
