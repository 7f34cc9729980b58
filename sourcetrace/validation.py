"""A config checked against the registries it names: model, loss and sampler, and how they pair.

``sourcetrace.config`` knows the schema, types and ranges only; the rules that need the registries
(which names exist, a metric loss's balanced batches) live here, beside the registries they read.

>>> validate(Config.from_dict({"loss.name": "ge2e", "sampler.name": "random"}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sourcetrace.errors.ConfigError: loss.name='ge2e' is a metric loss that needs >= 2 clips per class in every batch; ...
"""

from __future__ import annotations

from typing import Any

from sourcetrace.config import Config
from sourcetrace.data.samplers import SAMPLERS
from sourcetrace.degrade import renderings_of
from sourcetrace.errors import ConfigError
from sourcetrace.losses import LOSSES
from sourcetrace.models import MODEL_PARAMS, MODELS
from sourcetrace.registry import lookup


def validate(cfg: Config, n_classes: int | None = None) -> Config:
    """Check names, ranges and pairings; with ``n_classes`` (from the protocol) also batch filling."""
    lookup(MODELS, cfg.model.name, "model")
    loss_cls = lookup(LOSSES, cfg.loss.name, "loss")
    lookup(SAMPLERS, cfg.sampler.name, "sampler")
    cfg.check_ranges()
    if cfg.data.dev_degrade:
        renderings_of(cfg.data.dev_degrade, "data.dev_degrade")
    for key, value in cfg.augment.log_mel().items():
        if f"augment.{key}" not in MODEL_PARAMS.get(cfg.model.name, ()):
            raise ConfigError(
                f"augment.{key}={value} acts on log-Mel bands, which model.name={cfg.model.name!r} does not "
                "have; set it to 0 or use model.name=thin_resnet34"
            )
    if cfg.augment.freq_mask >= cfg.features.n_mels:
        raise ConfigError(
            f"augment.freq_mask={cfg.augment.freq_mask} would mask every one of "
            f"features.n_mels={cfg.features.n_mels} bins"
        )
    need = loss_cls.min_per_class
    if need > 1:
        if cfg.sampler.name != "balanced":
            raise ConfigError(
                f"loss.name={cfg.loss.name!r} is a metric loss that needs >= {need} clips per class in "
                f"every batch; set sampler.name=balanced (got sampler.name={cfg.sampler.name!r})"
            )
        if cfg.sampler.per_class < need:
            raise ConfigError(
                f"sampler.per_class={cfg.sampler.per_class} is too small for loss.name={cfg.loss.name!r}, "
                f"which needs >= {need} clips per class"
            )
    if cfg.sampler.name == "balanced":
        _check_balanced_batch(cfg, n_classes)
    return cfg


def _check_balanced_batch(cfg: Config, n_classes: int | None) -> None:
    k, batch = cfg.sampler.per_class, cfg.train.batch_size
    if batch % k:
        raise ConfigError(
            f"train.batch_size={batch} is not a multiple of sampler.per_class={k}: "
            "a balanced batch is (batch_size / per_class) classes x per_class clips"
        )
    if batch // k < 2:
        raise ConfigError(f"train.batch_size={batch} with sampler.per_class={k} gives fewer than 2 classes per batch")
    if n_classes is not None and batch // k > n_classes:
        raise ConfigError(
            f"a balanced batch of train.batch_size={batch} / sampler.per_class={k} = "
            f"{batch // k} classes cannot be filled from the {n_classes} training classes"
        )


# Parts every trial uses whatever its model, loss and sampler.
_ALWAYS = ("data.", "train.", "model.name", "model.embedding_dim", "loss.name", "sampler.name")


def used_params(cfg: Config) -> dict[str, Any]:
    """The flat settings the trial's parts read: an AAM ResNet run has no ``ssl.*`` or ``loss.init_w``, and a
    run without augmentation no ``augment.*``.

    >>> sorted(k for k in used_params(Config()) if k.startswith(("loss.", "ssl.", "sampler.")))
    ['loss.margin', 'loss.name', 'loss.scale', 'sampler.name']
    """
    augmenting = cfg.augment.active or bool(cfg.augment.log_mel())
    used = (
        *_ALWAYS,
        *(("augment.",) if augmenting else ()),
        *MODEL_PARAMS.get(cfg.model.name, ()),
        *(f"loss.{k}" for k in lookup(LOSSES, cfg.loss.name, "loss").params),
        *(f"sampler.{k}" for k in lookup(SAMPLERS, cfg.sampler.name, "sampler").params),
    )
    return {
        k: v for k, v in cfg.to_flat().items() if k in used or k.startswith(tuple(u for u in used if u.endswith(".")))
    }
