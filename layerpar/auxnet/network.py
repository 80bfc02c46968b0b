"""The AuxNet: a low-capacity network that predicts every boundary's state and multiplier.

``A(x) -> (a_1..a_{K-1}, m_1..m_{K-1})``.  The trunk mirrors the backbone's stem and its
down-sampling schedule with a few narrow blocks per module; a 1×1 adapter maps the trunk to each
boundary's shape and a zero-initialised head predicts the multiplier, so training starts as the
penalty method (DESIGN.md §2).  It is built from the boundary shapes a probe forward pass reports,
so any backbone whose boundaries are images (N, C, H, W) or vectors (N, D) gets one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from layerpar.models.resnet import BasicBlock, Stem


@dataclass(frozen=True)
class AuxOutput:
    """Predicted states ``a_k`` and multipliers ``m_k`` (None without multiplier heads)."""

    states: list[torch.Tensor]
    multipliers: list[torch.Tensor | None]


class ConvAdapter(nn.Module):
    """Trunk features -> one boundary's shape: 1×1 conv (image) or pool + linear (vector)."""

    def __init__(self, channels: int, shape: tuple[int, ...], zero_init: bool = False) -> None:
        super().__init__()
        self.shape = shape
        if len(shape) == 3:
            self.proj: nn.Conv2d | nn.Linear = nn.Conv2d(channels, shape[0], 1)
        else:
            self.proj = nn.Linear(channels, shape[0])
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            assert self.proj.bias is not None  # both layers are built with a bias
            nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if len(self.shape) == 3:
            size = (self.shape[1], self.shape[2])
            if features.shape[-2] > size[0]:
                features = F.adaptive_avg_pool2d(features, size)
            out = self.proj(features)
            # A trunk coarser than the boundary (aux stem stride 2): project, then upsample.
            return (
                out
                if out.shape[-2:] == size
                else F.interpolate(out, size=size, mode="bilinear", align_corners=False)
            )
        return self.proj(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))


class LinearAdapter(nn.Module):
    """Trunk vector -> a vector boundary."""

    def __init__(self, width: int, shape: tuple[int, ...], zero_init: bool = False) -> None:
        super().__init__()
        self.proj = nn.Linear(width, shape[0])
        if zero_init:
            nn.init.zeros_(self.proj.weight)
            nn.init.zeros_(self.proj.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.proj(features)


class AuxNet(nn.Module):
    """Trunk segments (one per boundary), a state adapter and a multiplier head per boundary.

    ``forward(x, upto=k)`` runs only the trunk prefix needed for boundaries ``0..k``: a worker
    needs the boundary before and after its module, never the whole AuxNet.
    """

    def __init__(
        self,
        stem: nn.Module,
        segments: Sequence[nn.Module],
        adapters: Sequence[nn.Module],
        heads: Sequence[nn.Module] | None,
        label_film: Sequence[nn.Embedding] | None = None,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.segments = nn.ModuleList(segments)
        self.adapters = nn.ModuleList(adapters)
        self.heads = nn.ModuleList(heads) if heads is not None else None
        # The true multiplier (the per-sample adjoint) depends on the label; every worker draws
        # the labels too, so the multiplier heads may see them (FiLM, zero-initialised).
        self.label_film = nn.ModuleList(label_film) if label_film is not None else None

    @property
    def num_boundaries(self) -> int:
        return len(self.adapters)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor | None = None,
        upto: int | None = None,
        labels: torch.Tensor | None = None,
    ) -> AuxOutput:
        last = self.num_boundaries - 1 if upto is None else min(upto, self.num_boundaries - 1)
        features = self.stem(x)
        states: list[torch.Tensor] = []
        multipliers: list[torch.Tensor | None] = []
        for k in range(last + 1):
            features = self.segments[k](features)
            states.append(self.adapters[k](features))
            multipliers.append(self._multiplier(k, features, labels) if self.heads is not None else None)
        return AuxOutput(states, multipliers)

    def _multiplier(self, k: int, features: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        assert self.heads is not None
        if self.label_film is not None and labels is not None:
            scale, shift = self.label_film[k](labels).chunk(2, dim=1)
            view = (-1, scale.shape[1]) + (1,) * (features.dim() - 2)
            features = features * (1 + scale.view(view)) + shift.view(view)
        return self.heads[k](features)


def _label_film(width: int, num_classes: int | None, boundaries: int) -> list[nn.Embedding] | None:
    if not num_classes:
        return None
    films = [nn.Embedding(num_classes, 2 * width) for _ in range(boundaries)]
    for film in films:
        nn.init.zeros_(film.weight)
    return films


def build_auxnet(
    input_shape: tuple[int, ...],
    boundary_shapes: list[tuple[int, ...]],
    *,
    width: int = 8,
    blocks_per_stage: int = 1,
    multiplier_heads: bool = True,
    label_classes: int | None = None,
    stem_stride: int = 1,
) -> AuxNet:
    """An AuxNet for inputs of ``input_shape`` predicting boundaries of ``boundary_shapes``.

    Shapes exclude the batch dimension.  Image inputs get a convolutional trunk that follows
    the boundaries' down-sampling; if every boundary is a vector the trunk is an MLP.
    ``label_classes`` lets the multiplier heads see the labels (FiLM).
    """
    if len(input_shape) == 3 and any(len(s) == 3 for s in boundary_shapes):
        aux = _conv_auxnet(
            input_shape, boundary_shapes, width, blocks_per_stage, multiplier_heads, stem_stride
        )
    else:
        aux = _mlp_auxnet(input_shape, boundary_shapes, width, blocks_per_stage, multiplier_heads)
    films = _label_film(width, label_classes, len(boundary_shapes)) if multiplier_heads else None
    if films is not None:
        aux.label_film = nn.ModuleList(films)
    return aux


def _conv_auxnet(
    input_shape: tuple[int, ...],
    boundary_shapes: list[tuple[int, ...]],
    width: int,
    blocks_per_stage: int,
    multiplier_heads: bool,
    stem_stride: int = 1,
) -> AuxNet:
    stem = Stem(input_shape[0], width, stride=stem_stride)
    size = -(-input_shape[1] // stem_stride)
    segments: list[nn.Module] = []
    for shape in boundary_shapes:
        target = shape[1] if len(shape) == 3 else size
        layers: list[nn.Module] = []
        for index in range(blocks_per_stage):
            # Down-sample by 2 while the trunk is larger than the boundary, like the backbone.
            stride = 2 if size >= 2 * target and index < blocks_per_stage else 1
            size = (size + 1) // 2 if stride == 2 else size
            layers.append(BasicBlock(width, width, stride))
        while size >= 2 * target:
            layers.append(BasicBlock(width, width, 2))
            size = (size + 1) // 2
        segments.append(nn.Sequential(*layers))
    adapters = [ConvAdapter(width, shape) for shape in boundary_shapes]
    heads = [ConvAdapter(width, s, zero_init=True) for s in boundary_shapes] if multiplier_heads else None
    return AuxNet(stem, segments, adapters, heads)


def _mlp_auxnet(
    input_shape: tuple[int, ...],
    boundary_shapes: list[tuple[int, ...]],
    width: int,
    blocks_per_stage: int,
    multiplier_heads: bool,
) -> AuxNet:
    features = 1
    for dim in input_shape:
        features *= dim
    stem = nn.Sequential(nn.Flatten(), nn.Linear(features, width), nn.ReLU())
    segments = [
        nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.ReLU()) for _ in range(blocks_per_stage)])
        for _ in boundary_shapes
    ]
    flat = [(int(torch.Size(s).numel()),) for s in boundary_shapes]
    adapters = [_Reshape(LinearAdapter(width, f), s) for f, s in zip(flat, boundary_shapes)]
    heads = (
        [_Reshape(LinearAdapter(width, f, zero_init=True), s) for f, s in zip(flat, boundary_shapes)]
        if multiplier_heads
        else None
    )
    return AuxNet(stem, segments, adapters, heads)


class _Reshape(nn.Module):
    def __init__(self, inner: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner = inner
        self.shape = shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).reshape(x.shape[0], *self.shape)
