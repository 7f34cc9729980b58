"""Config: flat keys, strict unknown-key errors, type coercion, pairing validation before any data."""

import subprocess
import sys

import pytest

from sourcetrace.config import SECTIONS, Config
from sourcetrace.errors import ConfigError
from sourcetrace.validation import validate


def test_defaults_are_the_papers():
    cfg = Config()
    assert (cfg.data.crop_seconds, cfg.features.n_mels) == (2.0, 40)
    assert (cfg.loss.margin, cfg.loss.scale) == (0.3, 30.0)
    assert (cfg.train.lr, cfg.train.warmup_epochs, cfg.train.epochs, cfg.train.eval_every) == (1e-4, 10, 300, 25)


def test_flat_round_trip_covers_every_field():
    cfg = Config.from_dict({"loss.margin": 0.2, "model.embedding_dim": 512})
    flat = cfg.to_flat()
    assert flat["loss.margin"] == 0.2 and flat["model.embedding_dim"] == 512
    assert {k.split(".")[0] for k in flat} == set(SECTIONS)
    assert Config.from_dict(flat) == cfg
    assert Config.from_json(cfg.to_json()) == cfg


def test_nested_and_flat_are_equivalent():
    assert Config.from_dict({"loss": {"name": "ge2e"}}) == Config.from_dict({"loss.name": "ge2e"})


@pytest.mark.parametrize(
    "key, message",
    [
        ("loss.nClasses", "unknown config key 'loss.nClasses'; keys of section 'loss'"),
        ("optim.lr", "unknown config key 'optim.lr'; sections:"),
        ("lr", "unknown config key 'lr'"),
        ("loss.margin.x", "unknown config key 'loss.margin.x'"),
    ],
)
def test_unknown_keys_are_named(key, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Config.from_dict({key: 1})


def test_cli_strings_are_coerced_to_field_types():
    cfg = Config().with_overrides(
        ["train.epochs=3", "loss.margin=0.25", "features.instance_norm=false", "loss.name=ge2e"]
    )
    assert cfg.train.epochs == 3 and cfg.loss.margin == 0.25 and cfg.features.instance_norm is False
    with pytest.raises(ConfigError, match="'train.epochs' expects int, got 'three'"):
        Config().with_overrides(["train.epochs=three"])
    with pytest.raises(ConfigError, match="not of the form key=value"):
        Config().with_overrides(["train.epochs"])
    with pytest.raises(ConfigError, match="expects int, got 2.5"):
        Config.from_dict({"train.epochs": 2.5})


def test_class_count_is_not_configurable():
    with pytest.raises(ConfigError, match="unknown config key 'loss.n_classes'"):
        Config.from_dict({"loss.n_classes": 24})


@pytest.mark.parametrize("loss", ["ge2e", "angleproto"])
def test_metric_loss_with_random_sampler_is_rejected(loss):
    with pytest.raises(ConfigError, match=f"loss.name='{loss}' is a metric loss .* sampler.name=balanced"):
        validate(Config.from_dict({"loss.name": loss, "sampler.name": "random"}))


def test_metric_loss_needs_two_clips_per_class():
    cfg = Config.from_dict(
        {"loss.name": "ge2e", "sampler.name": "balanced", "sampler.per_class": 1, "train.batch_size": 12}
    )
    with pytest.raises(ConfigError, match="sampler.per_class=1 is too small"):
        validate(cfg)


def test_balanced_batch_shape_is_checked():
    cfg = Config.from_dict({"sampler.name": "balanced", "sampler.per_class": 2, "train.batch_size": 25})
    with pytest.raises(ConfigError, match="not a multiple of sampler.per_class=2"):
        validate(cfg)
    cfg = Config.from_dict({"sampler.name": "balanced", "sampler.per_class": 2, "train.batch_size": 60})
    validate(cfg)  # 30 classes per batch: fine until the class count is known
    with pytest.raises(ConfigError, match="30 classes cannot be filled from the 24 training classes"):
        validate(cfg, n_classes=24)


@pytest.mark.parametrize(
    "key, value, kind",
    [("model.name", "resnet", "model"), ("loss.name", "arcface", "loss"), ("sampler.name", "uniform", "sampler")],
)
def test_unknown_registry_names_list_valid_ones(key, value, kind):
    with pytest.raises(ConfigError, match=f"unknown {kind} '{value}'; valid {kind}s: "):
        validate(Config.from_dict({key: value}))


def test_out_of_range_and_choices():
    with pytest.raises(ConfigError, match="train.lr=0.0 is out of range"):
        validate(Config.from_dict({"train.lr": 0.0}))
    with pytest.raises(ConfigError, match="train.precision='half' is not one of"):
        validate(Config.from_dict({"train.precision": "half"}))


def test_config_is_a_leaf():
    """Reading a config imports no registry: no loss, model or sampler module (a fresh interpreter)."""
    code = (
        "import sys, sourcetrace.config; "
        "print(sorted(m for m in sys.modules if m.startswith(('sourcetrace.losses', 'sourcetrace.models', "
        "'sourcetrace.data', 'torch'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_names_config_accepts_are_the_names_the_model_and_the_steps_build():
    """One list of pooling / frequency-head / optimiser names (config.py) and the builders keyed by them agree."""
    import torch

    from sourcetrace.config import OPTIMIZERS, POOLINGS
    from sourcetrace.models.pooling import POOLINGS as BUILT
    from sourcetrace.training.steps import optimizer_for

    assert set(BUILT) == set(POOLINGS)
    for name in OPTIMIZERS:
        cfg = Config().with_values({"train.optimizer": name})
        assert optimizer_for(cfg, [torch.nn.Parameter(torch.zeros(1))], torch.device("cpu")) is not None
