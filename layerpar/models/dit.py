"""A pixel-space Diffusion Transformer (DiT; Peebles & Xie, arXiv 2212.09748) as a flat block run.

Blocks: patch embedding, ``depth`` adaLN-Zero transformer blocks, the final adaLN layer with the
unpatchify.  There are no long skips, so a cut between any two blocks leaves exactly one tensor
in flight (the token sequence ``(B, T, D)``), as for a ResNet.  The conditioning
``c = t_emb + y_emb`` comes from the backbone's :class:`ConditionEmbedder` and enters every
transformer block and the final layer through their own modulation (adaLN-Zero).  Because the
modulation and the output projection start at zero, every transformer block starts as the
identity and the model's output starts at zero; a layer-parallel AuxNet can use the former
(at step 0 every module's input is the patch embedding).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.errors import ConfigError
from layerpar.models.backbone import Backbone
from layerpar.models.conditioning import ConditionEmbedder

#: Presets for :func:`dit`.  ``dit_tiny`` (330 k parameters, 49 tokens on 28×28) is sized for a
#: few CPU minutes on MNIST: forward + backward of a float32 batch of 128 took 0.18 s on one
#: thread and 0.10 s on two (measured when it was written); depth 4 gives K = 2 and K = 4 splits
#: a transformer block per module.  Its label table starts at std 1 (nn.Embedding's default), not
#: DiT's 0.02: with 0.02 the class signal reaching the zero-initialised modulation is so weak
#: that after 3 MNIST epochs the flow loss with a wrong label was within 3 % of the true label's
#: at t = 0.7 and the samples ignored their class; with std 1 it was 21 % worse and the columns
#: of the grid became their digits (same seed and steps; README, diffusion results).  ``dit_s``
#: (32.5 M) is DiT-S's width, depth and heads with patch 2, i.e. 196 tokens on 28×28 (DiT-S/2
#: sees 256 latent tokens at ImageNet 256): patch 4 would leave 49 tokens of 16 pixels each, too
#: coarse for a GPU model to use its width; it keeps DiT's initialisation.
DIT_PRESETS: dict[str, dict[str, Any]] = {
    "dit_tiny": {"hidden": 64, "depth": 4, "heads": 4, "patch": 4, "label_std": 1.0},
    "dit_s": {"hidden": 384, "depth": 12, "heads": 6, "patch": 2},
}


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``x · (1 + scale) + shift`` per sample, broadcast over the tokens."""
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def sincos_pos_embed_2d(dim: int, grid: int) -> torch.Tensor:
    """Fixed ``(grid², dim)`` positional embedding of a square token grid, row-major, as DiT's
    ``get_2d_sincos_pos_embed``: half the channels encode the column, half the row."""

    def one_axis(positions: torch.Tensor) -> torch.Tensor:
        omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64) / (dim / 4))
        angles = positions[:, None] * omega[None]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)

    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")
    embedding = torch.cat([one_axis(cols.reshape(-1)), one_axis(rows.reshape(-1))], dim=1)
    return embedding.to(torch.get_default_dtype())


class PatchEmbed(nn.Module):
    """``(B, C, H, W) -> (B, T, D)``: non-overlapping ``patch × patch`` patches, a linear map of
    each (a strided convolution), plus the fixed sin-cos position of the patch."""

    def __init__(self, in_channels: int, image_size: int, patch: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_channels, hidden, kernel_size=patch, stride=patch)
        # not a parameter and not saved: it is a function of the shape, rebuilt with the model
        self.register_buffer("pos_embed", sincos_pos_embed_2d(hidden, image_size // patch), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2) + self.pos_embed


class Attention(nn.Module):
    """Multi-head self-attention with one qkv projection (timm's ``Attention``, as DiT uses).

    ``scaled_dot_product_attention`` runs in any float dtype and under ``torch.func``."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, hidden = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, hidden // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, hidden))


class FeedForward(nn.Module):
    """Linear, tanh-approximated GELU, Linear (ratio ``mlp_ratio``), as DiT's ``Mlp``."""

    def __init__(self, hidden: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, mlp_ratio * hidden)
        self.fc2 = nn.Linear(mlp_ratio * hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class DiTBlock(nn.Module):
    """Transformer block with adaLN-Zero: ``c`` gives the shift, scale and gate of both sublayers.

    The gates start at zero (the modulation is zero-initialised), so the block starts as the
    identity, exactly."""

    conditioned = True

    def __init__(self, hidden: int, heads: int, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.attn = Attention(hidden, heads)
        self.norm2 = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.mlp = FeedForward(hidden, mlp_ratio)
        self.modulation = nn.Linear(hidden, 6 * hidden)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        modulation = self.modulation(F.silu(c)).chunk(6, dim=1)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = modulation
        x = x + gate_msa.unsqueeze(1) * self.attn(modulate(self.norm1(x), shift_msa, scale_msa))
        return x + gate_mlp.unsqueeze(1) * self.mlp(modulate(self.norm2(x), shift_mlp, scale_mlp))


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, a linear map of each token to its patch's pixels, unpatchify
    ``(B, T, patch²·C) -> (B, C, H, W)``.  Zero-initialised, so the model's output starts at 0."""

    conditioned = True

    def __init__(self, hidden: int, patch: int, out_channels: int) -> None:
        super().__init__()
        self.patch = patch
        self.out_channels = out_channels
        self.norm = nn.LayerNorm(hidden, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(hidden, 2 * hidden)
        self.linear = nn.Linear(hidden, patch * patch * out_channels)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.modulation(F.silu(c)).chunk(2, dim=1)
        return unpatchify(self.linear(modulate(self.norm(x), shift, scale)), self.patch, self.out_channels)


def unpatchify(tokens: torch.Tensor, patch: int, channels: int) -> torch.Tensor:
    """``(B, T, patch²·C) -> (B, C, H, W)`` for a square row-major grid of ``T`` tokens, each
    token's features ordered (pixel row, pixel column, channel), as DiT's ``unpatchify``."""
    batch, count, _ = tokens.shape
    grid = round(count**0.5)
    x = tokens.reshape(batch, grid, grid, patch, patch, channels)
    return torch.einsum("nhwpqc->nchpwq", x).reshape(batch, channels, grid * patch, grid * patch)


def initialize_weights(blocks: list[nn.Module]) -> None:
    """DiT's ``initialize_weights``: xavier-uniform Linears with zero biases, the patch embedding
    like a Linear, then zero every modulation and the output projection (adaLN-Zero).  The
    embedder initialises itself (:meth:`ConditionEmbedder.reset_parameters`)."""
    for block in blocks:
        for module in block.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if isinstance(block, PatchEmbed):
            _init_patch_embed(block)
        if isinstance(block, DiTBlock | FinalLayer):
            nn.init.zeros_(block.modulation.weight)
            nn.init.zeros_(block.modulation.bias)
        if isinstance(block, FinalLayer):
            nn.init.zeros_(block.linear.weight)
            nn.init.zeros_(block.linear.bias)


def _init_patch_embed(block: PatchEmbed) -> None:
    weight = block.proj.weight
    nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))  # fan-in = C·patch², as a Linear
    assert block.proj.bias is not None
    nn.init.zeros_(block.proj.bias)


def dit(
    *,
    in_channels: int,
    image_size: int,
    num_classes: int | None,
    hidden: int,
    depth: int,
    heads: int,
    patch: int,
    label_std: float = 0.02,
) -> Backbone:
    """DiT for ``(in_channels, image_size, image_size)`` images: ``depth + 2`` blocks and a
    :class:`ConditionEmbedder`; call it as ``model(x_t, cond)`` with ``cond`` of shape ``(B, 2)``.

    The output has the input's shape (ε or velocity prediction; no learned variance).
    ``label_std``: the label table's initial std (:class:`ConditionEmbedder`)."""
    if min(in_channels, image_size, hidden, heads, patch) < 1 or depth < 0:
        raise ConfigError(
            f"DiT sizes must be positive (depth >= 0), got in_channels={in_channels}, image_size="
            f"{image_size}, hidden={hidden}, depth={depth}, heads={heads}, patch={patch}"
        )
    if image_size % patch:
        raise ConfigError(
            f"DiT patch={patch} does not tile image_size={image_size}: pick a patch that divides it "
            f"(e.g. {', '.join(str(p) for p in range(1, image_size + 1) if image_size % p == 0)})"
        )
    if hidden % heads:
        raise ConfigError(f"DiT hidden={hidden} is not divisible by heads={heads}: pick heads dividing it")
    if hidden % 4:
        raise ConfigError(
            f"DiT hidden={hidden} must be a multiple of 4 (the 2-D sin-cos positions split it into "
            f"4 parts): use e.g. hidden={4 * (hidden // 4 + 1)}"
        )
    blocks: list[nn.Module] = [PatchEmbed(in_channels, image_size, patch, hidden)]
    blocks += [DiTBlock(hidden, heads) for _ in range(depth)]
    blocks.append(FinalLayer(hidden, patch, in_channels))
    initialize_weights(blocks)
    return Backbone(blocks, embedder=ConditionEmbedder(hidden, num_classes, label_std=label_std))
