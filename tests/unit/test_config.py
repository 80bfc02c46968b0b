"""Config: frozen dataclasses as schema, YAML as data, ``--set`` overrides, clear errors."""

from __future__ import annotations

import dataclasses

import pytest

from layerpar.config import (
    ModelConfig,
    RunConfig,
    TrainConfig,
    apply_override,
    from_dict,
    load_config,
    load_yaml,
    replace,
)
from layerpar.errors import ConfigError, LayerparError
from layerpar.parallel.methods import check_config, micro_batches, serial_final_epochs, warmup_epochs


def test_defaults():
    c = load_config()
    assert isinstance(c, RunConfig)
    assert c == RunConfig()
    assert c.parallel.stages == 2 and c.train.batch_size == 128
    # The default is the pipelined method, with no serial phases and 2 micro-batches at K = 2;
    # method-dependent defaults stay null in the config and resolve when a run starts.
    assert c.layerpar.method == "pipelined" and micro_batches(c) == 2
    assert c.layerpar.warmup_epochs is None and (warmup_epochs(c), serial_final_epochs(c)) == (0, 0)
    al = load_config(None, ["layerpar.method=al"])
    assert (warmup_epochs(al), serial_final_epochs(al), micro_batches(al)) == (1.0, 0.5, 1)


def test_an_unknown_method_names_the_registry():
    with pytest.raises(ConfigError, match=r"layerpar\.method='admm' is not a method; valid: pipelined, al, penalty"):
        check_config(load_config(None, ["layerpar.method=admm"]))


@pytest.mark.parametrize("order", [("al", "pipelined"), ("pipelined", "al"), ("pipelined", "delayed", "pipelined")])
def test_method_defaults_follow_the_method_in_any_order_of_replace_and_set(order):
    """Switching methods never keeps the previous method's resolved defaults."""
    config = load_config(None, [f"layerpar.method={order[0]}"])
    for method in order[1:]:
        config = replace(config, layerpar={"method": method})
    via_set = load_config(None, [f"layerpar.method={m}" for m in order])
    assert config == via_set
    check_config(config)  # valid: e.g. al -> pipelined no longer carries al's serial phases
    expected = (0.0, 0.0) if order[-1] == "pipelined" else (1.0, 0.5)
    assert (warmup_epochs(config), serial_final_epochs(config)) == expected


def test_config_is_frozen():
    c = load_config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.train.epochs = 5  # type: ignore[misc]


def test_config_error_is_a_value_error_and_layerpar_error():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, LayerparError)


# --------------------------------------------------------------------------------------------
# unknown keys and wrong types


def test_unknown_key_lists_the_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["train.epochz=3"])
    message = str(info.value)
    assert "epochz" in message and "train" in message
    for name in (f.name for f in dataclasses.fields(TrainConfig)):
        assert name in message


def test_unknown_section_lists_the_sections():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["trian.epochs=3"])
    message = str(info.value)
    assert "trian" in message
    for section in ("model", "data", "optim", "aux", "layerpar", "parallel", "train"):
        assert section in message


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  name: resnet20\n  widht: 2\n")
    with pytest.raises(ConfigError, match="widht.*valid keys: name, width, hidden, depth"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "pattern"),
    [
        ("train.epochs=abc", r"train\.epochs must be a number"),
        ("parallel.stages=2.5", r"parallel\.stages must be an integer"),
        ("parallel.stages=true", r"parallel\.stages must be an integer"),
        ("parallel.stages='2'", r"parallel\.stages must be an integer"),
        ("train.progress=maybe", r"train\.progress must be true or false"),
        ("train.progress=1", r"train\.progress must be true or false"),
        ("model.name=20", r"model\.name must be a string"),
        ("parallel.balance=flops", r"parallel\.balance must be one of"),
        ("data.train_limit=lots", r"data\.train_limit must be an integer"),
        ("layerpar.beta_final=big", r"layerpar\.beta_final must be a number"),
        ("layerpar.beta=true", r"layerpar\.beta must be a number"),
    ],
)
def test_wrong_types_fail_with_the_key_and_the_value(override, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, [override])


def test_section_that_is_not_a_mapping(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: 5\n")
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(path)


@pytest.mark.parametrize("text", ["train: 0\n", "train: []\n"])
def test_falsy_section_that_is_not_a_mapping(tmp_path, text):
    """Only an empty section (``train:`` → None) means defaults; 0, [], false or '' are typos
    and must fail like ``train: 5`` does, not silently fall back to the defaults."""
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="train: expected a mapping"):
        load_config(path)


def test_types_are_coerced():
    c = load_config(None, ["train.epochs=2", "layerpar.beta_final=null", "data.train_limit=100",
                           "data.cache_dir=/tmp/x"])
    assert c.train.epochs == 2.0 and isinstance(c.train.epochs, float)
    assert c.layerpar.beta_final is None
    assert c.data.train_limit == 100
    assert c.data.cache_dir == "/tmp/x"
    assert load_config(None, ["layerpar.beta_final=0.5"]).layerpar.beta_final == 0.5
    assert load_config(None, ["layerpar.al_step_clip=3"]).layerpar.al_step_clip == 3.0


def test_from_dict_of_a_section():
    assert from_dict(ModelConfig, {"name": "mlp", "hidden": 32}) == ModelConfig(name="mlp", hidden=32)
    with pytest.raises(ConfigError, match="expected a mapping"):
        from_dict(ModelConfig, ["name"])  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# --set parsing


def test_apply_override_builds_nested_sections():
    data: dict = {}
    apply_override(data, "train.epochs=2")
    apply_override(data, "train.seed=7")
    apply_override(data, "model.name=wrn16-4")
    assert data == {"train": {"epochs": 2, "seed": 7}, "model": {"name": "wrn16-4"}}


@pytest.mark.parametrize(
    ("assignment", "value"),
    [
        ("a.b=1", 1),
        ("a.b=1.5", 1.5),
        ("a.b=true", True),
        ("a.b=null", None),
        ("a.b=", None),
        ("a.b=hello", "hello"),
        ("a.b='1'", "1"),
        ("a.b=[1, 2]", [1, 2]),
        ("a.b=x=y", "x=y"),
        ("  a.b =3", 3),
    ],
)
def test_apply_override_values_are_yaml(assignment, value):
    data: dict = {}
    apply_override(data, assignment)
    assert data == {"a": {"b": value}}


def test_apply_override_replaces_an_existing_value():
    data = {"train": {"epochs": 3, "seed": 1}}
    apply_override(data, "train.epochs=1")
    assert data == {"train": {"epochs": 1, "seed": 1}}


@pytest.mark.parametrize("assignment", ["train.epochs", "epochs=3", "train..epochs=3", ".epochs=3", "train.=3"])
def test_apply_override_malformed(assignment):
    with pytest.raises(ConfigError, match="--set"):
        apply_override({}, assignment)


def test_apply_override_into_a_value_is_an_error():
    with pytest.raises(ConfigError, match="'train' is not a section"):
        apply_override({"train": 5}, "train.epochs=3")


def test_apply_override_into_an_empty_yaml_section(tmp_path):
    """A preset whose section has every key commented out parses as ``train: None``; the file
    alone loads (an empty section means defaults), so ``--set train.epochs=1`` must load too."""
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  # epochs: 3\nmodel:\n  name: mlp\n")
    assert load_config(path).train.epochs == 3.0
    c = load_config(path, ["train.epochs=1"])
    assert c.train.epochs == 1.0 and c.model.name == "mlp"


# --------------------------------------------------------------------------------------------
# load_config order and files


def test_load_config_order_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train:\n  epochs: 5\n  batch_size: 64\nparallel:\n  stages: 4\n")
    c = load_config(path, ["train.epochs=2", "parallel.stages=3", "parallel.stages=1"])
    assert c.train.epochs == 2.0  # override beats file
    assert c.train.batch_size == 64  # file beats default
    assert c.parallel.stages == 1  # later override beats earlier
    assert c.train.seed == 0  # default kept
    assert load_config(path).train.epochs == 5.0


def test_load_config_accepts_str_path(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  width: 2\n")
    assert load_config(str(path)).model.width == 2


def test_empty_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_missing_file_says_where_presets_live(tmp_path):
    with pytest.raises(ConfigError, match="does not exist.*configs/"):
        load_config(tmp_path / "nope.yaml")


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(path)


def test_top_level_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_yaml(path)


def test_shipped_preset_loads():
    from pathlib import Path

    preset = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    assert preset.is_file(), "configs/demo.yaml must ship with the repository"
    assert isinstance(load_config(preset), RunConfig)


# --------------------------------------------------------------------------------------------
# invalid values


@pytest.mark.parametrize(
    ("overrides", "pattern"),
    [
        (["parallel.stages=0"], r"parallel\.stages must be >= 1, got 0"),
        (["parallel.stages=-2"], r"parallel\.stages must be >= 1"),
        (["parallel.replicas=0"], r"parallel\.replicas must be >= 1"),
        (["train.batch_size=0"], r"train\.batch_size must be >= 1"),
        (["layerpar.beta=0"], r"layerpar\.beta must be > 0"),
        (["layerpar.beta=-1"], r"layerpar\.beta must be > 0"),
        (["train.batch_size=30", "parallel.replicas=4"], r"batch_size=30 is not divisible by .*replicas=4"),
    ],
)
def test_invalid_values(overrides, pattern):
    with pytest.raises(ConfigError, match=pattern):
        load_config(None, overrides)


def test_divisible_batch_is_fine():
    c = load_config(None, ["train.batch_size=32", "parallel.replicas=4"])
    assert c.parallel.replicas == 4


@pytest.mark.parametrize("value", ["0", "-0.5"])
def test_beta_final_must_be_positive(value):
    """β grows geometrically towards beta_final, (beta_final/β)**progress: a zero final β divides
    the AL step (m − v)/β by zero and a negative one makes β complex.  Like layerpar.beta it
    must be rejected when the config is built."""
    with pytest.raises(ConfigError, match="beta_final"):
        load_config(None, [f"layerpar.beta_final={value}"])


# --------------------------------------------------------------------------------------------
# replace / to_dict


def test_replace_changes_only_named_fields():
    c = load_config(None, ["train.seed=3"])
    d = replace(c, train={"epochs": 1}, parallel={"stages": 3})
    assert d.train.epochs == 1.0 and d.parallel.stages == 3 and d.train.seed == 3
    assert c.train.epochs == 3.0  # original untouched


def test_replace_validates():
    c = load_config()
    with pytest.raises(ConfigError, match="unknown section"):
        replace(c, nosuch={"a": 1})
    with pytest.raises(ConfigError, match="valid keys"):
        replace(c, train={"nosuch": 1})
    with pytest.raises(ConfigError, match="parallel.stages must be >= 1"):
        replace(c, parallel={"stages": 0})


def test_to_dict_round_trips():
    c = load_config(None, ["model.name=mlp", "layerpar.beta_final=0.1", "data.train_limit=50"])
    assert from_dict(RunConfig, c.to_dict()) == c


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lr=-1", r"optim\.lr must be > 0, got -1"),
        ("optim.lr=.inf", r"optim\.lr must be a finite number"),
        ("optim.momentum=1.5", r"optim\.momentum must be < 1"),
        ("model.width=0", r"model\.width must be >= 1, got 0"),
        ("train.eval_every=0", r"train\.eval_every must be >= 1"),
        ("train.eval_every_steps=0", r"train\.eval_every_steps must be >= 1"),
        ("train.epochs=0", r"train\.epochs must be > 0, got 0"),
        ("train.epochs=-1", r"train\.epochs must be > 0"),
        ("train.stop_at_step=-3", r"train\.stop_at_step must be >= 1"),
        ("parallel.timeout_s=0", r"parallel\.timeout_s must be > 0"),
    ],
)
def test_out_of_range_values_fail_at_load_with_the_rule(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_exponent_floats_are_numbers_in_set_and_in_yaml(tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string; the config reads it as the number it is."""
    assert load_config(None, ["optim.lr=1e-3"]).optim.lr == pytest.approx(1e-3)
    path = tmp_path / "c.yaml"
    path.write_text("optim:\n  lr: 2e-2\n")
    assert load_config(path).optim.lr == pytest.approx(2e-2)
    with pytest.raises(ConfigError, match="optim.lr must be a number"):
        load_config(None, ["optim.lr=fast"])
