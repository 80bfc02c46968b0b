"""The conditioning embedder, and the split properties of the denoisers that carry it.

A split denoiser's modules each hold a replica of the embedder; the layer-parallel runtime sums
the replicas' gradients and relies on that sum being serial backprop's embedder gradient.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import functional_call

from layerpar.models import Backbone, ConditionEmbedder, denoiser_mlp, dit, timestep_embedding


def _cond(batch: int, num_classes: int | None, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    time = torch.rand(batch, dtype=dtype) * 1000
    labels = torch.randint(0, (num_classes or 0) + 1, (batch,)).to(dtype)  # num_classes: null label
    return torch.stack([time, labels], dim=1)


# --------------------------------------------------------------------------------------------
# timestep_embedding, ConditionEmbedder


def test_timestep_embedding_is_dits_sinusoid():
    time = torch.tensor([0.0, 1.0, 500.0], dtype=torch.float64)
    out = timestep_embedding(time, 6)
    assert out.shape == (3, 6) and out.dtype == torch.float64
    freqs = [math.exp(-math.log(10000) * i / 3) for i in range(3)]
    for row, t in enumerate(time.tolist()):
        expected = [math.cos(t * f) for f in freqs] + [math.sin(t * f) for f in freqs]
        torch.testing.assert_close(out[row], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-12)


def test_timestep_embedding_odd_dim_and_dtypes():
    out = timestep_embedding(torch.tensor([3.0, 7.0]), 7)
    assert out.shape == (2, 7) and out.dtype == torch.float32
    assert torch.equal(out[:, -1], torch.zeros(2))
    assert timestep_embedding(torch.tensor([3, 7]), 8).dtype == torch.get_default_dtype()


def test_embedder_shapes_labels_and_null_label():
    torch.manual_seed(0)
    emb = ConditionEmbedder(16, num_classes=10).double()
    assert emb.label_table is not None and emb.label_table.num_embeddings == 11
    cond = torch.tensor([[10.0, 0.0], [10.0, 10.0], [10.0, 3.0000001], [10.0, 3.0]], dtype=torch.float64)
    out = emb(cond)
    assert out.shape == (4, 16) and out.dtype == torch.float64
    assert not torch.equal(out[0], out[1])  # the null label has its own row
    assert torch.equal(out[2], out[3])  # float labels are rounded
    # the time embedding is a function of time only
    expected = emb.time_out(torch.nn.functional.silu(emb.time_in(timestep_embedding(cond[:, 0], 256))))
    torch.testing.assert_close(out - emb.label_table(torch.tensor([0, 10, 3, 3])), expected)


@pytest.mark.parametrize("num_classes", [None, 0])
def test_unconditional_embedder_ignores_labels(num_classes):
    emb = ConditionEmbedder(8, num_classes)
    assert emb.label_table is None
    a = emb(torch.tensor([[5.0, 0.0], [900.0, 0.0]]))
    b = emb(torch.tensor([[5.0, 7.0], [900.0, 123.0]]))
    assert torch.equal(a, b)
    assert not torch.equal(a[0], a[1])  # time matters


def test_embedder_casts_cond_to_its_dtype():
    emb = ConditionEmbedder(8, 3).double()
    assert emb(_cond(4, 3, torch.float32)).dtype == torch.float64


@pytest.mark.parametrize("shape", [(4,), (4, 1), (4, 3)])
def test_embedder_rejects_wrong_cond_shape(shape):
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        ConditionEmbedder(8, 3)(torch.zeros(shape))


def test_embedder_init_is_dits():
    torch.manual_seed(0)
    emb = ConditionEmbedder(256, 100)
    for weight in (emb.time_in.weight, emb.time_out.weight, emb.label_table.weight):
        assert abs(weight.std().item() - 0.02) < 0.002
    for bias in (emb.time_in.bias, emb.time_out.bias):
        assert torch.equal(bias, torch.zeros(256))


# --------------------------------------------------------------------------------------------
# Split properties of both denoisers


def _small_dit() -> tuple[Backbone, torch.Tensor, int | None]:
    model = dit(in_channels=2, image_size=8, num_classes=5, hidden=16, depth=3, heads=2, patch=2)
    return model, torch.randn(3, 2, 8, 8, dtype=torch.float64), 5


def _small_mlp() -> tuple[Backbone, torch.Tensor, int | None]:
    model = denoiser_mlp(features=2, hidden=16, depth=4, num_classes=None)
    return model, torch.randn(5, 2, dtype=torch.float64), None


BUILDERS = pytest.mark.parametrize("build", [_small_dit, _small_mlp], ids=["dit", "mlp"])


def _built(build) -> tuple[Backbone, torch.Tensor, torch.Tensor]:
    """A float64 model whose zero-initialised weights are perturbed, so every parameter (the
    embedder's too) gets a gradient, with an input and its conditioning."""
    torch.manual_seed(0)
    model, x, num_classes = build()
    model = model.double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model, x, _cond(x.shape[0], num_classes)


@BUILDERS
def test_slices_compose_to_the_model_exactly(build):
    model, x, cond = _built(build)
    n = len(model)
    whole = model(x, cond)
    for j in range(n + 1):
        out = model.slice(j, n)(model.slice(0, j)(x, cond), cond)
        assert torch.equal(out, whole), j


def _grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Each parameter's gradient; zero where it got none (a module without conditioned blocks
    leaves its embedder replica's gradient None)."""
    return {
        k: torch.zeros_like(p) if p.grad is None else p.grad.clone() for k, p in module.named_parameters()
    }


@BUILDERS
def test_embedder_gradient_is_the_sum_over_the_modules_replicas(build):
    model, x, cond = _built(build)
    n = len(model)
    weight = torch.randn_like(model(x, cond))
    model.zero_grad()
    (model(x, cond) * weight).sum().backward()
    serial = _grads(model)
    serial_embedder = _grads(model.embedder)
    assert all(g.abs().sum() > 0 for g in serial_embedder.values())
    for j in range(1, n):
        model.zero_grad()
        first, second = model.slice(0, j).with_own_embedder(), model.slice(j, n).with_own_embedder()
        assert first.embedder is not model.embedder and second.embedder is not first.embedder
        h = first(x, cond)
        h_in = h.detach().requires_grad_()
        (second(h_in, cond) * weight).sum().backward()
        h.backward(h_in.grad)  # the adjoint of the first module's output, from the second's backward
        a, b = _grads(first.embedder), _grads(second.embedder)
        for name, g in serial_embedder.items():
            torch.testing.assert_close(a[name] + b[name], g, rtol=0, atol=1e-12, msg=f"cut {j}: {name}")
        blocks = _grads(model.blocks)
        for name, g in blocks.items():
            torch.testing.assert_close(g, serial[f"blocks.{name}"], rtol=0, atol=1e-12)


@BUILDERS
def test_functional_call_on_a_slice(build):
    model, x, cond = _built(build)
    part = model.slice(1, len(model))
    h = model.slice(0, 1)(x, cond).detach()
    params = {k: p.detach().clone().requires_grad_() for k, p in part.named_parameters()}
    out = functional_call(part, params, (h, cond))
    assert torch.equal(out, part(h, cond))
    out.square().sum().backward()
    assert all(p.grad is not None for k, p in params.items() if k.startswith("embedder."))
    doubled = {k: 2 * p.detach() for k, p in params.items()}
    assert not torch.equal(functional_call(part, doubled, (h, cond)), out)
