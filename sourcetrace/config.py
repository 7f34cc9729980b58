"""Strict, frozen configuration with flat dotted keys.

Every setting of a trial lives in one ``Config`` of frozen dataclass sections. The same flat keys
(``loss.margin``) are Tune search keys, CLI ``--set`` overrides and MLflow param names. Unknown keys
and out-of-range values are ``ConfigError``s that name the key, raised before any data is read
(``sourcetrace.validation`` checks the registry names and pairings). The class count is never
configured: it comes from the data.

>>> cfg = Config.from_dict({"loss.name": "ge2e", "sampler.name": "balanced"})
>>> cfg.loss.name, cfg.sampler.per_class
('ge2e', 2)
>>> Config.from_dict({"loss.nmae": "ge2e"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sourcetrace.errors.ConfigError: unknown config key 'loss.nmae'; keys of section 'loss': init_b, ...
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from sourcetrace.degrade.config import AugmentConfig, check_augment
from sourcetrace.errors import ConfigError


@dataclass(frozen=True)
class DataConfig:
    """Where the clips are and how they are cropped."""

    root: str = ""  # data root: protocol paths are relative to it
    protocol: str = ""  # protocol folder; "" means <root>/protocol
    sample_rate: int = 16000
    crop_seconds: float = 2.0  # random training crop (paper: 2 s)
    eval_seconds: float = 6.0  # evaluation: one centred crop of at most this length (0 = full clip)
    short_clips: str = "error"  # clips shorter than the crop: error | pad (wrap, as voxceleb_trainer) | drop
    max_clips_per_class: int = 0  # cap per system and split, 0 = all (for quick runs)
    train_split: str = "train"
    dev_split: str = "dev"
    test_split: str = "eval"
    # dev under field conditions: "" = the clean clips; else degradations (names, chains or sets as
    # `evaluate --degrade` takes them, renderings only) whose renderings of every dev clip join the clean
    # ones, so dev EER, halving and the model handed over are chosen on the conditions too
    dev_degrade: str = ""


@dataclass(frozen=True)
class FeaturesConfig:
    """Log-Mel filterbank front end of the ResNet (paper: 40 mels, instance norm)."""

    n_mels: int = 40
    n_fft: int = 512
    win_length: int = 400  # 25 ms at 16 kHz
    hop_length: int = 160  # 10 ms
    f_min: float = 20.0
    f_max: float = 7600.0
    instance_norm: bool = True
    # input level: "rms" scales every input waveform (each crop) to LEVEL_RMS_DBFS before the log-Mel, in the
    # model itself, so training, evaluation, bundles and the ONNX graph treat any recording level alike; "none"
    # feeds it as it comes (what stored models from before this key did)
    level: str = "rms"


@dataclass(frozen=True)
class ModelConfig:
    """Backbone (a key of sourcetrace.models.MODELS) and the embedding size."""

    name: str = "thin_resnet34"
    embedding_dim: int = 50
    channels: int = 16  # first-stage width: a quarter of ResNet-34's 64 (stages 16-32-64-128)
    # ResNet head. "mean"+"sap" is voxceleb_trainer's ResNetSE34L (frequency rows averaged, attentive mean);
    # "flatten"+"asp" its ResNetSE34V2 (rows stacked into channels, attentive mean and std).
    frequency: str = "mean"  # mean | flatten
    pooling: str = "sap"  # sap | asp
    band_stats: bool = False  # also feed each log-Mel band's mean and std over time (pre-norm) to the last layer
    band_stats_dropout: float = 0.0  # probability of dropping that branch for a training clip
    band_stats_dim: int = 0  # 0: all 2 x n_mels statistics; k > 0: a linear projection of them to k numbers


@dataclass(frozen=True)
class SSLConfig:
    """wav2vec2 front end of the SSL backbone (used by MODELS['w2v2_aasist'])."""

    source: str = "facebook/wav2vec2-xls-r-300m"  # hub id or local folder (save_pretrained)
    layer: int = -1  # hidden state to use; -1 = last
    weighted_layers: bool = False  # learned softmax-weighted sum of all hidden states instead
    finetune: str = "full"  # full | frozen | top
    top_layers: int = 0  # with finetune=top: how many top transformer layers train
    grad_checkpointing: bool = False


@dataclass(frozen=True)
class LossConfig:
    """Loss (a key of sourcetrace.losses.LOSSES) and its hyper-parameters."""

    name: str = "aamsoftmax"
    margin: float = 0.3  # AM / AAM
    scale: float = 30.0  # AM / AAM
    init_w: float = 10.0  # GE2E / Angular Prototypical
    init_b: float = -5.0


@dataclass(frozen=True)
class SamplerConfig:
    """Batch sampler: ``random`` or ``balanced`` (train.batch_size / per_class classes x per_class)."""

    name: str = "random"
    per_class: int = 2  # clips per class in a balanced batch (k)


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, schedule, evaluation cadence and hardware."""

    epochs: int = 300
    batch_size: int = 128  # clips per batch, for every sampler
    lr: float = 1e-4
    min_lr: float = 1e-6
    warmup_epochs: int = 10
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam | adamw
    eval_every: int = 25  # dev EER every k epochs (and at the last epoch)
    eval_test: bool = True  # also score the test split at each evaluation
    checkpoint_every: int = 0  # also a resume-only checkpoint every k epochs (spot nodes); 0 = at evaluations only
    steps_per_epoch: int = 0  # 0 = as epoch_steps says; >0 caps it (quick runs, or a fixed steps budget)
    # What one epoch is. "sampler": one full pass of the sampler (balanced: until the largest class is used
    # up, 1.35-5x voxceleb_trainer's steps on MLAAD-like counts). "clips": len(train) // batch_size steps.
    # "voxceleb": the steps of voxceleb_trainer's balanced sampler (<= 500 clips per class, conflicting
    # groups dropped), the paper's epoch; with the random sampler it equals "clips".
    epoch_steps: str = "sampler"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16 | fp16
    num_threads: int = 0  # torch CPU threads; 0 = leave torch's default
    grad_clip: float = 0.0  # 0 = off
    language_adversary: float = 0.0  # weight of a gradient-reversed language classifier (losses/adversary.py); 0 = off
    compile: bool = False  # torch.compile the model for the training steps
    # torch.compile's mode: default | reduce-overhead (CUDA graphs: fewest launches; fixed shapes, which the
    # trainer's crops have) | max-autotune | max-autotune-no-cudagraphs
    compile_mode: str = "default"


SECTIONS: dict[str, type] = {
    "data": DataConfig,
    "features": FeaturesConfig,
    "model": ModelConfig,
    "ssl": SSLConfig,
    "loss": LossConfig,
    "sampler": SamplerConfig,
    "train": TrainConfig,
    "augment": AugmentConfig,
}


# key -> its value for a stored config written before the key existed
STORED_BEFORE: dict[str, Any] = {"features.level": "none"}
LEVELS = ("rms", "none")
# the names the model and the optimiser steps accept (models/pooling.py, models/thin_resnet34.py, training/steps.py)
OPTIMIZERS = ("adam", "adamw")
POOLINGS = ("sap", "asp")
FREQUENCY_MODES = ("mean", "flatten")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


@dataclass(frozen=True)
class Config:
    """A whole trial. Build it with ``from_dict`` / ``with_overrides``; read it as ``cfg.loss.margin``."""

    data: DataConfig = field(default_factory=DataConfig)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    ssl: SSLConfig = field(default_factory=SSLConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None = None) -> Config:
        """Build from flat dotted keys and/or nested section dicts; unknown keys are errors."""
        return cls().with_values(values or {})

    def with_values(self, values: Mapping[str, Any]) -> Config:
        """Return a copy with the given (flat or nested) values replaced, coerced to field types."""
        flat = _flatten(values)
        per_section: dict[str, dict[str, Any]] = {}
        for key, value in flat.items():
            section, name = _split_key(key)
            per_section.setdefault(section, {})[name] = _coerce(key, _field_type(section, name), value)
        replaced = {s: dataclasses.replace(getattr(self, s), **kv) for s, kv in per_section.items()}
        return dataclasses.replace(self, **replaced)

    def with_overrides(self, assignments: list[str]) -> Config:
        """Apply CLI-style ``key=value`` strings (``--set loss.margin=0.2``)."""
        return self.with_values(parse_assignments(assignments))

    # -- reading --------------------------------------------------------------------------
    def to_flat(self) -> dict[str, Any]:
        """All settings as flat dotted keys (MLflow params, Tune keys, config.json)."""
        return {f"{s}.{f.name}": getattr(getattr(self, s), f.name) for s in SECTIONS for f in fields(SECTIONS[s])}

    def to_json(self) -> str:
        return json.dumps(self.to_flat(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Config:
        return cls.stored(json.loads(text))

    @classmethod
    def stored(cls, values: Mapping[str, Any]) -> Config:
        """A config read back from a model's files (checkpoint, bundle, fusion member). Keys added since it
        was written take the value that reproduces the stored model, not today's default."""
        flat = _flatten(values)
        legacy = {k: v for k, v in STORED_BEFORE.items() if k not in flat}
        return cls.from_dict(flat | legacy)

    # -- checking -------------------------------------------------------------------------
    def check_ranges(self) -> Config:
        """Finite numbers, ranges and choices of this config alone (``sourcetrace.validation`` adds the
        registry names and the loss/sampler pairing)."""
        _check_ranges(self)
        check_augment(self.augment)
        return self


def parse_assignments(assignments: list[str], flag: str = "--set") -> dict[str, str]:
    """``["loss.margin=0.2"]`` -> ``{"loss.margin": "0.2"}``; an item without ``=`` is a ConfigError.

    >>> parse_assignments(["loss.margin = 0.2"])
    {'loss.margin': '0.2'}
    """
    values: dict[str, str] = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r} is not of the form key=value")
        key, value = item.split("=", 1)
        values[key.strip()] = value.strip()
    return values


def _check_ranges(cfg: Config) -> None:
    for key, value in cfg.to_flat().items():  # inf/nan pass every comparison below or fail far later
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key}={value!r} is not a finite number")
    checks = [
        ("model.embedding_dim", cfg.model.embedding_dim >= 2),
        ("data.crop_seconds", cfg.data.crop_seconds > 0),
        ("data.eval_seconds", cfg.data.eval_seconds >= 0),
        ("train.epochs", cfg.train.epochs >= 1),
        ("train.batch_size", cfg.train.batch_size >= 2),
        ("train.lr", cfg.train.lr > 0),
        ("train.eval_every", cfg.train.eval_every >= 1),
        ("train.checkpoint_every", cfg.train.checkpoint_every >= 0),
        ("train.warmup_epochs", 0 <= cfg.train.warmup_epochs),
        ("sampler.per_class", cfg.sampler.per_class >= 1),
        ("loss.scale", cfg.loss.scale > 0),
        ("loss.margin", cfg.loss.margin >= 0),
        ("model.band_stats_dropout", 0 <= cfg.model.band_stats_dropout < 1),
        ("model.band_stats_dim", cfg.model.band_stats_dim >= 0),
        ("train.language_adversary", cfg.train.language_adversary >= 0),
    ]
    for key, ok in checks:
        if not ok:
            section, name = key.split(".")
            raise ConfigError(f"{key}={getattr(getattr(cfg, section), name)!r} is out of range")
    choices = {
        "train.optimizer": OPTIMIZERS,
        "train.precision": ("auto", "fp32", "bf16", "fp16"),
        "ssl.finetune": ("full", "frozen", "top"),
        "model.frequency": FREQUENCY_MODES,
        "model.pooling": POOLINGS,
        "features.level": LEVELS,
        "train.compile_mode": COMPILE_MODES,
        "data.short_clips": ("error", "pad", "drop"),
        "train.epoch_steps": ("sampler", "clips", "voxceleb"),
    }
    for key, allowed in choices.items():
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {', '.join(allowed)}")


def _flatten(values: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        full = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, full + "."))
        else:
            flat[full] = value
    return flat


def _split_key(key: str) -> tuple[str, str]:
    section, _, name = key.partition(".")
    if section not in SECTIONS or not name or "." in name:
        raise ConfigError(f"unknown config key {key!r}; sections: {', '.join(SECTIONS)} (keys look like loss.margin)")
    names = [f.name for f in fields(SECTIONS[section])]
    if name not in names:
        raise ConfigError(f"unknown config key {key!r}; keys of section {section!r}: {', '.join(sorted(names))}")
    return section, name


def _field_type(section: str, name: str) -> type:
    hints = typing.get_type_hints(SECTIONS[section])
    return hints[name]


def _coerce(key: str, typ: Any, value: Any) -> Any:
    """Coerce strings from the CLI (and ints for floats) to the declared field type."""
    if isinstance(typ, types.UnionType):  # not used today; keep strict
        raise ConfigError(f"config key {key!r} has an unsupported type {typ}")
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
                return value.lower() in ("true", "1", "yes", "on")
            if isinstance(value, int) and value in (0, 1):
                return bool(value)
            raise ValueError
        if typ is int:
            if isinstance(value, bool):
                raise ValueError
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if typ is str:
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise ConfigError(f"config key {key!r} expects {typ.__name__}, got {value!r}") from None
    raise ConfigError(f"config key {key!r} has an unsupported type {typ}")
