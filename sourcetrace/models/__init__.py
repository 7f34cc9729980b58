"""Backbones: ``MODELS[name](cfg) -> nn.Module`` mapping a 16 kHz waveform batch [B, T] to embeddings [B, D].

Each model owns its front end (log-Mel fbank or wav2vec2) so the trainer never needs to know which
one it runs. Builders import their module lazily: a ResNet run never imports transformers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sourcetrace.registry import lookup

if TYPE_CHECKING:
    import torch.nn as nn

    from sourcetrace.config import Config


@dataclass(frozen=True)
class Backbone:
    """A registered backbone: its builder (importing its module only when called) and the config keys it reads
    besides model.name and model.embedding_dim (a section "ssl." or one key)."""

    build: Callable[[Config], nn.Module]
    params: tuple[str, ...]

    def __call__(self, cfg: Config) -> nn.Module:
        return self.build(cfg)


def _thin_resnet34(cfg: Config) -> nn.Module:
    from sourcetrace.models.thin_resnet34 import ThinResNet34

    return ThinResNet34.from_config(cfg)


def _w2v2_aasist(cfg: Config) -> nn.Module:
    from sourcetrace.models.aasist import W2V2AASIST

    return W2V2AASIST.from_config(cfg)


MODELS: dict[str, Backbone] = {
    "thin_resnet34": Backbone(
        _thin_resnet34,
        (
            "model.channels",
            "model.frequency",
            "model.pooling",
            "model.band_stats",
            "model.band_stats_dropout",
            "model.band_stats_dim",
            "augment.band_eq_db",
            "augment.freq_mask",
            "augment.time_mask",
            "features.",
        ),
    ),
    "w2v2_aasist": Backbone(_w2v2_aasist, ("ssl.",)),
}
MODEL_PARAMS: dict[str, tuple[str, ...]] = {name: b.params for name, b in MODELS.items()}


def build_model(cfg: Config) -> nn.Module:
    """Build the configured backbone; an unknown ``model.name`` lists the valid ones."""
    return lookup(MODELS, cfg.model.name, "model")(cfg)
