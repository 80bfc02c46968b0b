"""What ``--train`` tracks for a denoiser (the held-out loss, lower is better) and which arms the
registry lets run one."""

from __future__ import annotations

from pathlib import Path

import pytest

from layerpar.bench import registry
from layerpar.bench.accuracy import ACCURACY, HELD_OUT_LOSS, final_value, metric_for, time_to_target
from layerpar.config import load_config
from layerpar.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
LOG = [{"train_time_s": 1.0, "test_loss": 0.9}, {"train_time_s": 2.0, "test_loss": 0.5}]


def test_a_denoiser_tracks_its_held_out_loss_and_a_classifier_its_accuracy() -> None:
    assert metric_for(load_config(ROOT / "configs/diffusion_toy.yaml")) is HELD_OUT_LOSS
    assert metric_for(load_config(ROOT / "configs/digits_tiny.yaml")) is ACCURACY
    assert "lower is better" in HELD_OUT_LOSS.label
    assert HELD_OUT_LOSS.default_target(0.5) == pytest.approx(0.51)
    assert ACCURACY.default_target(0.9) == pytest.approx(0.895)


def test_time_to_target_loss_is_the_first_evaluation_at_or_below_it() -> None:
    assert time_to_target(LOG, 0.6, HELD_OUT_LOSS) == 2.0
    assert time_to_target(LOG, 0.95, HELD_OUT_LOSS) == 1.0
    assert time_to_target(LOG, 0.4, HELD_OUT_LOSS) is None
    assert time_to_target([{"train_time_s": 3.0, "test_acc": 0.8}], 0.75) == 3.0  # classifiers unchanged


def test_final_held_out_loss_comes_from_the_final_evaluation() -> None:
    assert final_value({"final_eval": {"test_loss": 0.4}, "epochs_log": LOG}, HELD_OUT_LOSS) == 0.4
    assert final_value({"final_eval": None, "epochs_log": LOG}, HELD_OUT_LOSS) == 0.5
    assert final_value({"final_test_acc": 0.7}, ACCURACY) == 0.7


def test_only_arms_without_denoiser_support_are_refused() -> None:
    toy = load_config(ROOT / "configs/diffusion_toy.yaml")
    registry.check_denoiser(["serial", "layerpar", "layerpar-minimal", "ddp", "gpipe", "1f1b", "interleaved1f1b", "serial-threads"], toy)
    with pytest.raises(ConfigError, match=r"arms 'zbv', 'deepspeed' do not run diffusion denoisers yet"):
        registry.check_denoiser(["serial", "zbv", "deepspeed"], toy)
    registry.check_denoiser(list(registry.ARMS), load_config(ROOT / "configs/digits_tiny.yaml"))
