"""The conditioning of a diffusion denoiser: raw ``(time, label)`` pairs to one embedding vector.

Every denoiser receives ``cond`` of shape ``(B, 2)``: column 0 is the model time on a
``[0, 1000)`` scale (a DDPM step index as a float, or flow-matching ``t · 1000``), column 1 the
class index as a float, where the value ``num_classes`` is the null label that classifier-free
guidance drops labels to.  :class:`ConditionEmbedder` turns it into ``c = t_emb + y_emb`` as DiT
does (Peebles & Xie, arXiv 2212.09748: ``TimestepEmbedder`` + ``LabelEmbedder``); it is the
``embedder`` of a denoiser's :class:`~layerpar.models.backbone.Backbone`, so every module of a
split denoiser holds a replica (see ``backbone.py``).  Label dropout is the caller's job (set
column 1 to ``num_classes``), so the embedder is deterministic and its replicas agree.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

#: DiT's sinusoid width; it sets how finely time is resolved, not the model width, so it stays
#: 256 however narrow the model is (the Linear after it maps it to the model width).
FREQUENCY_DIM = 256


def timestep_embedding(time: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B,) -> (B, dim)``: ``[cos(t·f_i), sin(t·f_i)]`` with frequencies
    ``f_i = max_period^(-i / (dim // 2))``, as DiT's ``TimestepEmbedder.timestep_embedding``.

    Computed in ``time``'s dtype (the default float dtype for integer steps), so a float64 model
    gets a float64 embedding; an odd ``dim`` gets a zero last column."""
    dtype = time.dtype if time.is_floating_point() else torch.get_default_dtype()
    half = dim // 2
    steps = torch.arange(half, dtype=dtype, device=time.device)
    freqs = torch.exp(-math.log(max_period) * steps / half)
    args = time.to(dtype)[:, None] * freqs[None]
    embedding = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        embedding = torch.cat([embedding, torch.zeros_like(embedding[:, :1])], dim=-1)
    return embedding


class ConditionEmbedder(nn.Module):
    """``cond (B, 2) -> (B, dim)``: MLP(sinusoid(t)) plus, for a class-conditional model, a label
    table with one extra row for the null label.

    ``num_classes`` None or 0 makes the model unconditional: column 1 is then ignored.  Labels
    arrive as floats and are rounded; an index outside ``[0, num_classes]`` is an error of the
    embedding lookup (not checked here: a check would synchronise a GPU every step).

    ``label_std`` is the label table's initial standard deviation: DiT's 0.02 by default (see
    :data:`~layerpar.models.dit.DIT_PRESETS` for why a small model wants more)."""

    def __init__(
        self, dim: int, num_classes: int | None, frequency_dim: int = FREQUENCY_DIM, label_std: float = 0.02
    ) -> None:
        super().__init__()
        self.frequency_dim = frequency_dim
        self.label_std = label_std
        self.num_classes = num_classes or None
        self.time_in = nn.Linear(frequency_dim, dim)
        self.time_out = nn.Linear(dim, dim)
        self.label_table = nn.Embedding(self.num_classes + 1, dim) if self.num_classes else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """DiT's initialisation of its embedders: weights normal(0, 0.02), biases zero; the label
        table normal(0, ``label_std``)."""
        for layer in (self.time_in, self.time_out):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)
        if self.label_table is not None:
            nn.init.normal_(self.label_table.weight, std=self.label_std)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        if cond.dim() != 2 or cond.shape[1] != 2:
            raise ValueError(
                f"a denoiser's conditioning is (batch, 2) = (model time, class index), got shape "
                f"{tuple(cond.shape)}: stack them with torch.stack([time, label.float()], dim=1)"
            )
        # the raw conditioning may come in another float dtype than the model (float32 data,
        # float64 model): embed in the model's dtype
        cond = cond.to(self.time_in.weight.dtype)
        c = self.time_out(F.silu(self.time_in(timestep_embedding(cond[:, 0], self.frequency_dim))))
        if self.label_table is not None:
            c = c + self.label_table(cond[:, 1].round().long())
        return c
