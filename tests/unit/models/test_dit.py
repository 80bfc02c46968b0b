"""The pixel-space DiT: shapes, adaLN-Zero initialisation, patch layout, presets and errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from layerpar.errors import ConfigError
from layerpar.models import DIT_PRESETS, MODEL_NAMES, build_model, dit, is_conditioned
from layerpar.models.dit import DiTBlock, FinalLayer, PatchEmbed, sincos_pos_embed_2d, unpatchify


def _cond(batch: int, num_classes: int) -> torch.Tensor:
    return torch.stack([torch.rand(batch) * 1000, torch.randint(0, num_classes + 1, (batch,)).float()], dim=1)


def test_dit_tiny_on_mnist_shapes_and_zero_init():
    torch.manual_seed(0)
    model = build_model("dit_tiny", in_channels=1, image_size=28, num_classes=10)
    depth = DIT_PRESETS["dit_tiny"]["depth"]
    assert len(model) == depth + 2
    assert isinstance(model.blocks[0], PatchEmbed) and isinstance(model.blocks[-1], FinalLayer)
    assert not is_conditioned(model.blocks[0]) and all(is_conditioned(b) for b in list(model.blocks)[1:])
    x, cond = torch.randn(4, 1, 28, 28), _cond(4, 10)
    out = model(x, cond)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-initialised final layer
    h, c = model.blocks[0](x), model.embedder(cond)
    assert h.shape == (4, 49, DIT_PRESETS["dit_tiny"]["hidden"])
    for block in list(model.blocks)[1:-1]:
        assert torch.equal(block(h, c), h)  # adaLN-Zero: every block starts as the identity


def test_one_step_moves_the_output_off_zero():
    torch.manual_seed(0)
    model = dit(in_channels=1, image_size=8, num_classes=3, hidden=16, depth=2, heads=2, patch=4)
    x, cond, target = torch.randn(6, 1, 8, 8), _cond(6, 3), torch.randn(6, 1, 8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss0 = (model(x, cond) - target).square().mean()
    loss0.backward()
    opt.step()
    out = model(x, cond)
    assert out.abs().min() > 0
    assert (out - target).square().mean() < loss0


def test_float64_and_labels_matter_after_training():
    torch.manual_seed(0)
    model = dit(in_channels=3, image_size=8, num_classes=4, hidden=16, depth=2, heads=4, patch=2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    time = torch.full((2,), 250.0, dtype=torch.float64)
    outs = [model(x, torch.stack([time, torch.full((2,), y, dtype=torch.float64)], 1)) for y in (0.0, 4.0)]
    assert outs[0].dtype == torch.float64 and outs[0].shape == x.shape
    assert not torch.equal(outs[0], outs[1])  # label 4 is the null label: accepted, different


def test_pos_embed_is_dits_2d_sincos():
    dim, grid = 8, 3
    table = sincos_pos_embed_2d(dim, grid)
    assert table.shape == (grid * grid, dim)
    omega = [1 / 10000 ** (k / 2) for k in range(2)]
    for row in range(grid):
        for col in range(grid):
            expected = [math.sin(col * w) for w in omega] + [math.cos(col * w) for w in omega]
            expected += [math.sin(row * w) for w in omega] + [math.cos(row * w) for w in omega]
            torch.testing.assert_close(table[row * grid + col], torch.tensor(expected), atol=1e-6, rtol=0)
    block = PatchEmbed(1, 12, 4, dim)
    assert "pos_embed" not in block.state_dict()  # fixed: rebuilt, not saved
    assert torch.equal(block.pos_embed, table)


@pytest.mark.parametrize(("channels", "patch"), [(1, 4), (3, 2)])
def test_unpatchify_inverts_the_patch_layout(channels, patch):
    x = torch.randn(2, channels, 4 * patch, 4 * patch)
    conv = nn.Conv2d(channels, patch * patch * channels, patch, stride=patch, bias=False)
    with torch.no_grad():  # output feature (pixel row, pixel col, channel) picks that pixel
        conv.weight.zero_()
        for p in range(patch):
            for q in range(patch):
                for c in range(channels):
                    conv.weight[(p * patch + q) * channels + c, c, p, q] = 1.0
    tokens = conv(x).flatten(2).transpose(1, 2)  # what PatchEmbed does, before the positions
    assert torch.equal(unpatchify(tokens, patch, channels), x)


def test_init_is_dits():
    torch.manual_seed(0)
    model = dit(in_channels=1, image_size=8, num_classes=2, hidden=32, depth=2, heads=4, patch=2)
    block = model.blocks[1]
    assert isinstance(block, DiTBlock)
    bound = math.sqrt(6 / (32 + 96))  # xavier-uniform of qkv (32 -> 96)
    assert block.attn.qkv.weight.abs().max() <= bound and block.attn.qkv.weight.abs().max() > 0.9 * bound
    assert torch.equal(block.attn.qkv.bias, torch.zeros(96))
    assert torch.equal(block.modulation.weight, torch.zeros(192, 32))
    patch_weight = model.blocks[0].proj.weight
    assert patch_weight.abs().max() <= math.sqrt(6 / (4 + 32))  # as a Linear of fan-in C·patch²


def test_presets_and_custom_dit_by_name():
    assert {"dit_tiny", "dit_s", "dit", "mlp_denoiser"} <= set(MODEL_NAMES)
    small = build_model(
        "dit", in_channels=1, image_size=8, num_classes=0, hidden=32, depth=2, heads=2, patch=2
    )
    assert len(small) == 4 and small.embedder.label_table is None
    assert small.blocks[1].attn.heads == 2 and small.blocks[0].pos_embed.shape == (16, 32)
    assert small(torch.randn(2, 1, 8, 8), _cond(2, 0)).shape == (2, 1, 8, 8)
    default = build_model("dit", in_channels=1, image_size=28, num_classes=10)
    assert len(default) == 8 + 2 and default.blocks[1].attn.heads == 4
    assert default.blocks[0].pos_embed.shape == (49, 128)
    s = build_model("dit_s", in_channels=1, image_size=28, num_classes=10)
    assert len(s) == 14 and s.blocks[0].pos_embed.shape == (196, 384) and s.blocks[1].attn.heads == 6


def test_label_table_init_per_preset():
    """dit_tiny's label table starts at std 1 (a class signal a 64-wide model learns in a few
    epochs), dit_s keeps DiT's 0.02; the time MLP is DiT's in both."""
    torch.manual_seed(0)
    tiny = build_model("dit_tiny", in_channels=1, image_size=28, num_classes=10).embedder
    s = build_model("dit_s", in_channels=1, image_size=28, num_classes=10).embedder
    assert tiny.label_table is not None and s.label_table is not None
    assert abs(tiny.label_table.weight.std().item() - 1.0) < 0.1
    assert abs(s.label_table.weight.std().item() - 0.02) < 0.002
    assert abs(tiny.time_in.weight.std().item() - 0.02) < 0.002


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"patch": 3}, "divides it"),
        ({"hidden": 30, "heads": 4}, "heads dividing it"),
        ({"hidden": 18, "heads": 3}, "multiple of 4"),
        ({"depth": -1}, "positive"),
    ],
)
def test_invalid_dit(kwargs, match):
    sizes = {"hidden": 16, "depth": 1, "heads": 2, "patch": 4} | kwargs
    with pytest.raises(ConfigError, match=match):
        dit(in_channels=1, image_size=28, num_classes=10, **sizes)
