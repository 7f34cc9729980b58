"""A config checked against the registries it names: model, loss and sampler, and how they pair.

``sourcetrace.config`` knows the schema, types and ranges only; the rules that need the registries
(which names exist, a metric loss's balanced batches) live here, beside the registries they read.

>>> validate(Config.from_dict({"loss.name": "ge2e", "sampler.name": "random"}))  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
sourcetrace.errors.ConfigError: loss.name='ge2e' is a metric loss that needs >= 2 clips per class in every batch; ...
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from sourcetrace.config import Config
from sourcetrace.data.samplers import SAMPLERS
from sourcetrace.degrade import renderings_of
from sourcetrace.errors import ConfigError
from sourcetrace.losses import LOSSES
from sourcetrace.models import MODEL_PARAMS, MODELS
from sourcetrace.registry import lookup

# what building one model (a fusion: all members) may take: its tensors, 1e9 float32 parameters (wav2vec2
# XLS-R 300M is 1.3 GB); a bundle's weights file is held to the same cap (``bundle/files.py``)
MAX_MODEL_BYTES = 4 << 30


def validate(cfg: Config, n_classes: int | None = None) -> Config:
    """Check names, ranges and pairings; with ``n_classes`` (from the protocol) also batch filling."""
    lookup(MODELS, cfg.model.name, "model")
    loss_cls = lookup(LOSSES, cfg.loss.name, "loss")
    lookup(SAMPLERS, cfg.sampler.name, "sampler")
    cfg.check_ranges()
    check_sizes(cfg)  # what training may set, a model file may set: the same caps
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


# The sizes a config sets, capped (inclusive ranges) before a model is built from it: a model file (a bundle's or
# a checkpoint's config.json, a fusion member's config) is not trusted to ask for sane sizes. Generous for
# training (the paper's model uses 16 channels, 40 mels, 50-512 dimensions); the total the sizes multiply to
# is capped as well, by ``build_within_cap`` before the model is built.
SIZE_CAPS: dict[str, tuple[int, int]] = {
    "model.embedding_dim": (2, 4096),
    "model.channels": (1, 256),
    "model.band_stats_dim": (0, 4096),
    "features.n_mels": (1, 512),
    "features.n_fft": (16, 16384),
    "features.win_length": (16, 16384),
    "features.hop_length": (16, 16384),
    "data.sample_rate": (1000, 192000),
    "ssl.top_layers": (0, 1024),
    "ssl.layer": (-1025, 1024),
}


def check_sizes(cfg: Config) -> Config:
    """Every size in ``SIZE_CAPS`` within its range, else one ``ConfigError`` naming the key.

    >>> check_sizes(Config.from_dict({"model.channels": 100000}))
    Traceback (most recent call last):
    ...
    sourcetrace.errors.ConfigError: model.channels=100000 is above the cap of 256
    """
    flat = cfg.to_flat()
    for key, (low, high) in SIZE_CAPS.items():
        value = flat[key]
        if value > high:
            raise ConfigError(f"{key}={value} is above the cap of {high}")
        if value < low:
            raise ConfigError(f"{key}={value} is below the minimum of {low}")
    return cfg


class ModelTooLarge(ConfigError):
    """Building a model would allocate more than its cap."""


T = TypeVar("T")


def build_within_cap(build: Callable[[], T], what: str, limit: int = MAX_MODEL_BYTES) -> T:
    """``build()`` (a model), once a dry run of it has shown that its tensors fit in ``limit`` bytes, else
    ``ModelTooLarge`` naming ``what``: nothing is allocated for a model that asks for too much.

    The dry run makes every tensor-creating call (``torch.empty``, ``zeros``, ``randn``, ``Tensor.new_*`` ...)
    on the meta device, which allocates nothing, and adds up their sizes; a value read back from a meta tensor
    during construction (a sanity check such as torchaudio's empty-filterbank warning) reads as zero. Should the
    dry run fail, the real build runs under a live budget that refuses the call passing ``limit`` before it
    allocates.

    >>> import torch
    >>> build_within_cap(lambda: torch.nn.Linear(100, 100), "a layer", 1 << 20).weight.shape
    torch.Size([100, 100])
    >>> build_within_cap(lambda: torch.nn.Linear(100_000, 100_000), "config.json's model", 1 << 20)
    Traceback (most recent call last):
    ...
    sourcetrace.validation.ModelTooLarge: config.json's model asks for 40,000,400,000 bytes (37.3 GiB) of weights ...
    """
    modes = _modes()
    try:
        with modes.Dry() as dry:
            build()
        needed = dry.total
    except ModelTooLarge:
        raise
    except Exception:  # the dry run is an estimate: the real build below is still capped
        needed = None
    if needed is not None and needed > limit:
        raise ModelTooLarge(
            f"{what} asks for {needed:,} bytes ({_human(needed)}) of weights and buffers, more than the cap of "
            f"{limit:,} ({_human(limit)}): refused before it is built"
        )
    with modes.Budget(limit, what):
        return build()


def _factories() -> frozenset:
    import torch

    names = (
        "empty",
        "empty_strided",
        "zeros",
        "ones",
        "full",
        "rand",
        "randn",
        "randint",
        "randperm",
        "arange",
        "linspace",
        "logspace",
        "eye",
        "tensor",
        "hamming_window",
        "hann_window",
        "blackman_window",
        "bartlett_window",
        "kaiser_window",
    )
    methods = ("new_empty", "new_zeros", "new_ones", "new_full", "new_tensor")
    return frozenset([getattr(torch, n) for n in names] + [getattr(torch.Tensor, n) for n in methods])


@functools.cache
def _modes():
    """The two torch function modes of ``build_within_cap`` (made on first use: torch is imported lazily)."""
    import types

    import torch
    from torch.overrides import TorchFunctionMode

    factories = _factories()
    readers = {torch.Tensor.item: 0, torch.Tensor.__bool__: False, torch.Tensor.__int__: 0, torch.Tensor.__float__: 0.0}

    class Dry(TorchFunctionMode):
        def __init__(self):
            super().__init__()
            self.total = 0

        def __torch_function__(self, func, types_, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in factories:
                out = func(*args, **{**kwargs, "device": "meta"})
                self.total += out.numel() * out.element_size()
                return out
            if func in readers and args and getattr(args[0], "is_meta", False):
                return readers[func]
            return func(*args, **kwargs)

    class Budget(TorchFunctionMode):
        def __init__(self, limit: int, what: str):
            super().__init__()
            self.left, self.limit, self.what = limit, limit, what

        def __torch_function__(self, func, types_, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in factories:
                try:
                    probe = func(*args, **{**kwargs, "device": "meta"})
                except (TypeError, RuntimeError):  # a call that cannot be made on meta: as it comes
                    return func(*args, **kwargs)
                self.left -= probe.numel() * probe.element_size()
                if self.left < 0:
                    raise ModelTooLarge(
                        f"{self.what} asks for more than {self.limit:,} bytes ({_human(self.limit)}) of weights and "
                        f"buffers: refused before it is built"
                    )
            return func(*args, **kwargs)

    return types.SimpleNamespace(Dry=Dry, Budget=Budget)


def _human(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1024
    return f"{n} bytes"
