"""Samplers with exact (analytic) denoisers for a Gaussian, plus CFG, clipping and validation."""

from __future__ import annotations

import pytest
import torch

from layerpar.diffusion import (
    DDPMObjective,
    FlowObjective,
    NoiseSchedule,
    ddim_timesteps,
    guided,
    sample,
)

MEAN = torch.tensor([1.0, -0.5])
STD = 0.5
N = 4000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def exact_eps(schedule: NoiseSchedule):
    """E[ε | x_t] for x₀ ~ N(MEAN, STD²I): √(1−ᾱ)·(x_t − √ᾱ·m)/(ᾱs² + 1 − ᾱ)."""

    def denoise(x_t: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        alpha_bar = schedule.alphas_bar[time.long()].to(x_t.dtype)[:, None]
        residual = x_t - alpha_bar.sqrt() * MEAN.to(x_t.dtype)
        return (1 - alpha_bar).sqrt() * residual / (alpha_bar * STD**2 + 1 - alpha_bar)

    return denoise


def exact_velocity(x_t: torch.Tensor, time: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """E[ε − x₀ | x_t] for x_t = (1−t)x₀ + tε, x₀ ~ N(MEAN, STD²I)."""
    t = (time / 1000.0).to(x_t.dtype)[:, None]
    variance = (1 - t) ** 2 * STD**2 + t**2
    residual = x_t - (1 - t) * MEAN
    expected_eps = t / variance * residual
    expected_x0 = MEAN + (1 - t) * STD**2 / variance * residual
    return expected_eps - expected_x0


def _labels(n: int = N) -> torch.Tensor:
    return torch.zeros(n, dtype=torch.long)


def _check_gaussian(samples: torch.Tensor, mean_tol: float, std_tol: float) -> None:
    assert samples.shape == (N, 2)
    torch.testing.assert_close(samples.mean(0), MEAN, atol=mean_tol, rtol=0)
    torch.testing.assert_close(samples.std(0), torch.full((2,), STD), atol=std_tol, rtol=0)


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_ddim_50_steps_reproduces_the_gaussian(kind):
    schedule = NoiseSchedule(kind, 1000)
    out = sample(
        exact_eps(schedule),
        DDPMObjective(schedule),
        (2,),
        _labels(),
        method="ddim",
        steps=50,
        generator=_gen(0),
    )
    # 50 coarse DDIM steps shrink the spread a little (≈ 6 % on the linear schedule).
    _check_gaussian(out, mean_tol=0.03, std_tol=0.05)


def test_ddim_converges_with_more_steps():
    schedule = NoiseSchedule("linear", 1000)
    out = sample(
        exact_eps(schedule),
        DDPMObjective(schedule),
        (2,),
        _labels(),
        method="ddim",
        steps=1000,
        generator=_gen(0),
    )
    # deterministic sampler: the output is the initial noise mapped onto N(m, s²), so compare with it
    noise = torch.randn(N, 2, generator=_gen(0))
    torch.testing.assert_close(out.mean(0), MEAN + STD * noise.mean(0), atol=0.01, rtol=0)
    torch.testing.assert_close(out.std(0), STD * noise.std(0), atol=0.01, rtol=0)


def test_ddpm_ancestral_reproduces_the_gaussian():
    schedule = NoiseSchedule("linear", 1000)
    out = sample(
        exact_eps(schedule), DDPMObjective(schedule), (2,), _labels(), method="ddpm", generator=_gen(1)
    )
    _check_gaussian(out, mean_tol=0.03, std_tol=0.025)


def test_euler_100_steps_reproduces_the_gaussian():
    out = sample(
        exact_velocity, FlowObjective(), (2,), _labels(), method="euler", steps=100, generator=_gen(2)
    )
    _check_gaussian(out, mean_tol=0.03, std_tol=0.025)


def test_ddpm_accepts_steps_equal_to_timesteps_and_is_seeded():
    schedule = NoiseSchedule("linear", 100)
    objective, denoise = DDPMObjective(schedule), exact_eps(schedule)
    first = sample(denoise, objective, (2,), _labels(64), method="ddpm", generator=_gen(3))
    again = sample(denoise, objective, (2,), _labels(64), method="ddpm", steps=100, generator=_gen(3))
    other = sample(denoise, objective, (2,), _labels(64), method="ddpm", generator=_gen(4))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_time_passed_to_the_network():
    seen: list[torch.Tensor] = []

    def record(x_t, time, labels):
        seen.append(time.clone())
        assert not torch.is_grad_enabled()
        assert time.dtype == torch.float32 and time.shape == (3,)
        return torch.zeros_like(x_t)

    schedule = NoiseSchedule("linear", 100)
    sample(record, DDPMObjective(schedule), (2,), _labels(3), method="ddpm", generator=_gen())
    assert [t[0].item() for t in seen] == [float(step) for step in range(99, -1, -1)]
    seen.clear()
    sample(record, DDPMObjective(schedule), (2,), _labels(3), method="ddim", steps=10, generator=_gen())
    assert [t[0].item() for t in seen] == [float(step) for step in ddim_timesteps(100, 10)]
    seen.clear()
    sample(record, FlowObjective(), (2,), _labels(3), method="euler", steps=4, generator=_gen())
    assert [t[0].item() for t in seen] == [1000.0, 750.0, 500.0, 250.0]


def test_ddim_timesteps_are_evenly_spaced_from_the_end():
    sequence = ddim_timesteps(1000, 50)
    assert len(sequence) == 50 and sequence[0] == 999 and sequence[-1] == 0
    assert all(a > b for a, b in zip(sequence, sequence[1:]))
    gaps = [a - b for a, b in zip(sequence, sequence[1:])]
    assert max(gaps) - min(gaps) <= 1
    assert ddim_timesteps(1000, 1) == [999]
    assert ddim_timesteps(10, 10) == list(range(9, -1, -1))


def _label_denoiser(calls: list[tuple[int, torch.Tensor]]):
    """Predicts the label value everywhere, so guidance arithmetic is visible in the output."""

    def denoise(x_t, time, labels):
        calls.append((x_t.shape[0], labels.clone()))
        return labels.to(x_t.dtype)[:, None].expand_as(x_t).clone()

    return denoise


def test_guidance_one_is_the_plain_conditional_call():
    schedule = NoiseSchedule("linear", 100)
    objective, labels = DDPMObjective(schedule), torch.tensor([0, 1, 2, 3])
    plain_calls: list = []
    guided_calls: list = []
    plain = sample(
        _label_denoiser(plain_calls), objective, (2,), labels, method="ddim", steps=5, generator=_gen(5)
    )
    same = sample(
        _label_denoiser(guided_calls),
        objective,
        (2,),
        labels,
        method="ddim",
        steps=5,
        guidance=1.0,
        null_label=10,
        generator=_gen(5),
    )
    assert torch.equal(plain, same)
    assert all(size == 4 for size, _ in guided_calls)


def test_guidance_combines_one_batched_call():
    calls: list = []
    denoise = guided(_label_denoiser(calls), guidance=3.0, null_label=10)
    labels = torch.tensor([0, 1, 2])
    out = denoise(torch.zeros(3, 2), torch.zeros(3), labels)
    assert len(calls) == 1 and calls[0][0] == 6
    assert torch.equal(calls[0][1], torch.tensor([0, 1, 2, 10, 10, 10]))
    expected = 10 + 3.0 * (labels.float() - 10)  # uncond + g·(cond − uncond)
    torch.testing.assert_close(out, expected[:, None].expand(3, 2))


def test_guidance_needs_a_null_label():
    with pytest.raises(ValueError, match="needs null_label"):
        sample(
            exact_velocity,
            FlowObjective(),
            (2,),
            _labels(2),
            method="euler",
            steps=2,
            guidance=2.0,
            generator=_gen(),
        )


@pytest.mark.parametrize("method", ["ddpm", "ddim"])
def test_clip_bounds_the_predicted_x0(method):
    schedule = NoiseSchedule("linear", 100)

    def zero_eps(x_t, time, labels):  # x̂₀ = x_t/√ᾱ, far outside [−1, 1] early on
        return torch.zeros_like(x_t)

    steps = 10 if method == "ddim" else None
    clipped = sample(
        zero_eps,
        DDPMObjective(schedule),
        (1, 4, 4),
        _labels(32),
        method=method,
        steps=steps,
        clip=1.0,
        generator=_gen(6),
    )
    assert clipped.shape == (32, 1, 4, 4)
    assert clipped.abs().max().item() <= 1.0
    free = sample(
        zero_eps,
        DDPMObjective(schedule),
        (1, 4, 4),
        _labels(32),
        method=method,
        steps=steps,
        generator=_gen(6),
    )
    assert free.abs().max().item() > 1.0


def test_dtype_and_image_shape():
    out = sample(
        exact_velocity,
        FlowObjective(),
        (2,),
        _labels(5),
        method="euler",
        steps=3,
        dtype=torch.float64,
        generator=_gen(),
    )
    assert out.dtype == torch.float64 and out.shape == (5, 2)


@pytest.mark.parametrize(
    ("objective", "method", "steps", "message"),
    [
        (DDPMObjective(NoiseSchedule("linear", 100)), "euler", 10, "does not apply to the ddpm objective"),
        (FlowObjective(), "ddim", 10, "does not apply to the flow objective: use euler"),
        (FlowObjective(), "ddpm", None, "does not apply to the flow objective"),
        (DDPMObjective(NoiseSchedule("linear", 100)), "ddpm", 50, "runs all 100 steps"),
        (DDPMObjective(NoiseSchedule("linear", 100)), "ddim", None, "ddim needs steps >= 1"),
        (DDPMObjective(NoiseSchedule("linear", 100)), "ddim", 101, r"1 <= steps <= timesteps \(100\)"),
        (FlowObjective(), "euler", 0, "euler needs steps >= 1"),
    ],
)
def test_invalid_method_and_steps_raise(objective, method, steps, message):
    with pytest.raises(ValueError, match=message):
        sample(exact_velocity, objective, (2,), _labels(2), method=method, steps=steps, generator=_gen())


def test_labels_must_be_one_dimensional():
    with pytest.raises(ValueError, match="labels must be a 1-D tensor"):
        sample(
            exact_velocity,
            FlowObjective(),
            (2,),
            torch.zeros(2, 1, dtype=torch.long),
            method="euler",
            steps=2,
            generator=_gen(),
        )
