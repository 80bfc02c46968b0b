"""Predict, then correct (``layerpar.method: corrected``, parallel/methods/corrected.py).

Its exactness properties, in float64 against the pipelined method (itself checked against
backprop through the stashed weights in test_pipelined.py):
- a zero prediction is the pipelined method, step by step;
- with any prediction, each micro-batch's two parts sum to the exact delayed gradient: over a
  run, the applied gradients are the pipelined method's plus the predictions still waiting for
  their correction, and nothing else.
"""

from __future__ import annotations

import pytest
import torch

from layerpar.auxnet.adjoint_head import AdjointHead, Prediction
from layerpar.config import load_config
from layerpar.errors import ConfigError
from layerpar.parallel.methods import check_config
from layerpar.parallel.trainer import LayerParallelTrainer
from tests.helpers.oracle import digits_config, relative_error, run_capturing

STEPS = 7
WHOLE_BATCHES = ("layerpar.accumulate=1", "layerpar.warmup_epochs=0", "layerpar.serial_final_epochs=0")


def _run(tmp_path, name: str, method: str, stages: int, *extra: str):
    config = digits_config(
        tmp_path, f"layerpar.method={method}", *WHOLE_BATCHES, f"train.run_name={name}", *extra, stages=stages
    )
    trainer = LayerParallelTrainer(config)
    grads, _ = run_capturing(trainer, STEPS)
    return trainer, grads


@pytest.mark.parametrize("stages", [2, 3])
def test_a_zero_prediction_is_the_pipelined_method(tmp_path, stages):
    _, pipelined = _run(tmp_path, "p", "pipelined", stages, "optim.lr=0.05")
    _, corrected = _run(tmp_path, "c", "corrected", stages, "optim.lr=0.05", "layerpar.predictor_scale=0")
    checked = 0
    for step in range(STEPS):
        for stage in range(stages):
            want, got = pipelined[step][stage], corrected[step][stage]
            if all(float(g.abs().max()) == 0.0 for g in want):  # the pipeline is still filling
                assert all(float(g.abs().max()) == 0.0 for g in got), (step, stage)
                continue
            assert relative_error(got, want) < 1e-12, (step, stage)
            checked += 1
    assert checked == sum(STEPS - (2 * (stages - 1) - k) for k in range(stages))


def _summed(grads, stage: int) -> list[torch.Tensor]:
    return [sum(step[stage][i] for step in grads) for i in range(len(grads[0][stage]))]


def _outstanding(worker) -> list[torch.Tensor]:
    """Jᵀ m̂ of every micro-batch this worker forwarded and has not corrected yet."""
    total = [torch.zeros_like(p) for p in worker.module.parameters()]
    method = worker.method
    for pending, (raw, applied) in zip(method.pending(), method._predictions, strict=True):
        parts = torch.autograd.grad(
            pending.h, pending.weights, applied * raw.raw, retain_graph=True, allow_unused=True
        )
        total = [t + (p if p is not None else 0.0) for t, p in zip(total, parts, strict=True)]
    return total


def _assert_same_sums_over_the_run(trainer, run, reference, sign: float) -> dict[int, list[torch.Tensor]]:
    """Σ_t run_t + sign · (Jᵀ m̂ of the micro-batches in flight) = Σ_t reference_t for every
    module (exact at the last), while some step of every other module differs; returns the
    in-flight terms by stage."""
    outstanding = {}
    for worker in trainer.runner.workers:
        k = worker.stage
        want = _summed(reference, k)
        if worker.is_last:
            assert relative_error(_summed(run, k), want) < 1e-12
            continue
        outstanding[k] = _outstanding(worker)
        got = [r + sign * o for r, o in zip(_summed(run, k), outstanding[k], strict=True)]
        assert relative_error(got, want) < 1e-10, k
        filled = [t for t in range(STEPS) if any(float(g.abs().max()) > 0 for g in reference[t][k])]
        assert max(relative_error(run[t][k], reference[t][k]) for t in filled) > 1e-3, k
    return outstanding


@pytest.mark.parametrize(("stages", "predictor"), [(2, "linear"), (3, "linear"), (3, "gradient")])
def test_prediction_and_correction_sum_to_the_exact_delayed_gradient(tmp_path, stages, predictor):
    """lr = 1e-300 (0 is refused) keeps every forward on the same weights in float64, so the
    runs can be compared term by term:
    Σ_t corrected_t = Σ_t pipelined_t + Σ_{micro-batches in flight} Jᵀ m̂ (module k's copy of
    the delayed gradient is exact, and module k−1 receives the exact adjoint)."""
    _, pipelined = _run(tmp_path, "p", "pipelined", stages, "optim.lr=1e-300")
    trainer, corrected = _run(tmp_path, "c", "corrected", stages, "optim.lr=1e-300",
                              "layerpar.predictor_scale=1", f"layerpar.predictor={predictor}")  # fmt: skip
    outstanding = _assert_same_sums_over_the_run(trainer, corrected, pipelined, sign=-1.0)
    for k, parts in outstanding.items():
        # Not vacuous: the predictions moved real gradient between steps.
        want = _summed(pipelined, k)
        assert sum(float(o.norm()) for o in parts) > 1e-3 * sum(float(w.norm()) for w in want)


def test_the_local_method_is_corrected_with_its_local_term_kept(tmp_path):
    """``layerpar.method: local`` = corrected with the gradient predictor, α = 1, no correction:
    the same gradients at every step; and the kept term changes them (it is not the pipelined
    method)."""
    _, local = _run(tmp_path, "l", "local", 3, "optim.lr=0.05")
    _, spelt = _run(tmp_path, "c", "corrected", 3, "optim.lr=0.05", "layerpar.predictor=gradient",
                    "layerpar.predictor_scale=1", "layerpar.correct=false")  # fmt: skip
    _, pipelined = _run(tmp_path, "p", "pipelined", 3, "optim.lr=0.05")
    for step in range(STEPS):
        for stage in range(3):
            if any(float(g.abs().max()) > 0 for g in spelt[step][stage]):
                assert relative_error(local[step][stage], spelt[step][stage]) < 1e-12, (step, stage)
    assert relative_error(local[STEPS - 1][0], pipelined[STEPS - 1][0]) > 1e-2


def test_a_delayed_head_term_is_the_forward_one_applied_with_the_adjoint(tmp_path):
    """``head_term: delayed`` applies Jᵀ(v + α m̂) in one backward when v arrives.  At fixed
    weights (lr = 1e-300) the heads see and learn the same things in both runs, so over a run
    Σ_t delayed_t + Σ_{micro-batches in flight} Jᵀ(α m̂) = Σ_t forward_t, module by module (the
    adjoints sent upstream are the same in both); step by step they differ."""
    _, forward = _run(tmp_path, "f", "local", 3, "optim.lr=1e-300")
    trainer, delayed = _run(tmp_path, "d", "local", 3, "optim.lr=1e-300", "layerpar.head_term=delayed")
    _assert_same_sums_over_the_run(trainer, delayed, forward, sign=1.0)


def test_the_calibration_fits_the_prediction_to_the_adjoint():
    head = AdjointHead((4,), 3, 1e-3, torch.device("cpu"), torch.float64)
    assert float(head.scale()) == 0.0  # nothing observed: predict nothing
    v, error = torch.randn(8, 4, dtype=torch.float64), torch.randn(8, 3, dtype=torch.float64)
    cosine = head.observe(Prediction(2 * v, error), v)
    assert float(cosine) == pytest.approx(1.0)
    assert float(head.scale()) == pytest.approx(0.5)  # c·m = v
    opposite = AdjointHead((4,), 3, 1e-3, torch.device("cpu"), torch.float64)
    opposite.observe(Prediction(-v, error), v)
    assert float(opposite.scale()) == 0.0  # floored: a harmful predictor is switched off


def test_the_gradient_predictor_depends_on_the_label_and_the_head_learns():
    torch.manual_seed(0)
    head = AdjointHead((2, 6, 6), 3, 1e-2, torch.device("cpu"), torch.float64, predictor="gradient")
    h, y = torch.randn(16, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
    first, first_loss = head.predict_and_learn(h, y)
    assert first.raw.shape == h.shape and float(first.raw.abs().max()) > 0
    other, _ = head.predict_and_learn(h, (y + 1) % 3)
    assert relative_error([other.raw], [first.raw]) > 0.1
    for _ in range(30):
        _, loss = head.predict_and_learn(h, y)
    assert float(loss) < float(first_loss)


def test_the_linear_predictor_recovers_a_mean_jacobian_from_the_arriving_adjoints():
    """Adjoints made by a fixed Jacobian G* from the head's own label errors: after a few
    arrivals the prediction is G*ᵀ(p̂ − y) per sample (the mean-loss scale included)."""
    torch.manual_seed(0)
    head = AdjointHead((2, 6, 6), 3, 1e-2, torch.device("cpu"), torch.float64)
    jacobian = torch.randn(3, 72, dtype=torch.float64)
    for step in range(6):
        h, y = torch.randn(16, 2, 6, 6, dtype=torch.float64), torch.randint(0, 3, (16,))
        prediction, _ = head.predict_and_learn(h, y)
        truth = (prediction.label_error @ jacobian).view(16, 2, 6, 6) / 16
        if step == 0:
            assert float(prediction.raw.abs().max()) == 0.0  # nothing fitted yet
        else:
            assert relative_error([prediction.raw], [truth]) < 1e-4, step
        head.observe(prediction, truth)
    assert float(head.scale()) == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (("diffusion.objective=ddpm", "model.name=mlp_denoiser", "data.dataset=checkerboard", "data.crop_pad=0"),
         "denoiser"),
        (("train.loss=torch.nn.functional:mse_loss",), "your own loss"),
        (("layerpar.predictor_scale=-1",), "must be ≥ 0"),
        (("layerpar.predictor=oracle",), "not a predictor"),
        (("layerpar.head_term=delayed",), "correct=false"),
        (("layerpar.head_term=later",), "valid: forward, delayed"),
    ],
)
def test_settings_it_cannot_run_are_refused_with_the_fix(overrides, message):
    config = load_config(None, ["layerpar.method=corrected", "layerpar.accumulate=1", *overrides])
    with pytest.raises(ConfigError, match=message):
        check_config(config)


def test_a_run_logs_the_predictors_cosine_and_scale_and_ends_clean(tmp_path):
    config = digits_config(tmp_path, "layerpar.method=corrected", "train.epochs=2", "train.dtype=float32",
                           "train.eval_every_steps=20", "train.run_name=r", stages=3)  # fmt: skip
    trainer = LayerParallelTrainer(config)
    summary = trainer.fit()
    assert 0.0 <= summary.final_test_acc <= 1.0
    assert not any(w.method.in_flight() for w in trainer.runner.workers)
    lines = (summary.run_dir / "metrics.jsonl").read_text()
    for key in ("predictor_cosine/0", "predictor_scale/1", "prediction_update_cosine/1", "head_loss/0", "local_loss/2"):
        assert f'"{key}"' in lines
    assert '"predictor_cosine/2"' not in lines  # the last module has the true loss, no head
