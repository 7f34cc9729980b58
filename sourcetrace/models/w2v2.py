"""wav2vec 2.0 / XLS-R front end (transformers): 16 kHz waveform [B, T] -> SSL features [B, frames, hidden].

``ssl.source`` is a hub id or a local folder made with ``save_pretrained``; the HF cache (``HF_HOME``)
is tried first with no network, the hub only when ``HF_HUB_OFFLINE`` is not set. Hidden state ``k``
(``ssl.layer``; -1 = last) is the output of transformer layer ``k`` (0 = the projected CNN features
with positional convolution; the last one carries the final encoder LayerNorm of stable-LN models,
as fairseq's ``features_only`` output that Tak et al. fed to AASIST). Layers above ``k`` are not built
at all. ``ssl.weighted_layers`` uses a learned softmax-weighted sum of all hidden states instead.
SpecAugment masking and LayerDrop are switched off: the paper trains without augmentation, and the
network trained is then the one evaluated.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from sourcetrace.config import SSLConfig
from sourcetrace.errors import ConfigError

T = TypeVar("T")

#: facebook/wav2vec2-xls-r-300m's architecture (its hub config.json), constructible offline.
XLSR_300M_CONFIG = Wav2Vec2Config(
    hidden_size=1024,
    num_hidden_layers=24,
    num_attention_heads=16,
    intermediate_size=4096,
    hidden_act="gelu",
    hidden_dropout=0.1,
    activation_dropout=0.0,
    attention_dropout=0.1,
    feat_proj_dropout=0.1,
    layerdrop=0.1,
    layer_norm_eps=1e-5,
    feat_extract_norm="layer",
    feat_extract_activation="gelu",
    conv_dim=(512,) * 7,
    conv_kernel=(10, 3, 3, 3, 3, 2, 2),
    conv_stride=(5, 2, 2, 2, 2, 2, 2),
    conv_bias=True,
    num_conv_pos_embeddings=128,
    num_conv_pos_embedding_groups=16,
    do_stable_layer_norm=True,
    mask_time_prob=0.075,
    mask_time_length=10,
    vocab_size=32,
)


def _offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE, read now (huggingface_hub reads them once, at import)."""
    from huggingface_hub import constants

    env = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return env.strip().lower() in ("1", "true", "yes", "on") or bool(constants.HF_HUB_OFFLINE)


def from_source(load: Callable[..., T], source: str, what: str = "wav2vec2 model") -> T:
    """``load(source, ...)`` from a local folder, else the HF cache, else the hub (unless offline).

    Every failure is a ConfigError naming ``ssl.source`` and both ways to make the model available.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        try:
            return load(str(path), local_files_only=True)
        except (OSError, ValueError) as err:
            raise ConfigError(
                f"ssl.source={source!r} is a folder but holds no loadable {what} ({err}); make it with "
                "Wav2Vec2Model.from_pretrained(hub_id).save_pretrained(folder)"
            ) from None
    if source.startswith(("/", ".", "~")) or source.count("/") > 1:
        raise ConfigError(f"ssl.source={source!r}: no such folder (a hub id looks like 'facebook/wav2vec2-xls-r-300m')")
    help_ = (
        f"set ssl.source to a local folder made with save_pretrained (e.g. on a machine with hub access: "
        f"Wav2Vec2Model.from_pretrained({source!r}).save_pretrained(DIR), plus the feature extractor), "
        "or make the hub reachable / pre-download it into the HF cache (HF_HOME) and unset HF_HUB_OFFLINE"
    )
    try:
        return load(source, local_files_only=True)  # the cache first: no network, no timeouts
    except (OSError, ValueError) as err:
        if _offline():
            raise ConfigError(
                f"ssl.source={source!r}: not in the HF cache and HF_HUB_OFFLINE is set ({err}); {help_}"
            ) from None
    try:
        return load(source)
    except (OSError, ValueError) as err:
        raise ConfigError(f"ssl.source={source!r}: cannot load the {what} from the hub ({err}); {help_}") from None


def load_config(source: str | Wav2Vec2Config) -> Wav2Vec2Config:
    """The Wav2Vec2Config of ``source`` (a config passes through; a hub id or folder is read, no weights)."""
    if isinstance(source, Wav2Vec2Config):
        return source
    return from_source(Wav2Vec2Config.from_pretrained, source, "wav2vec2 config")


def ssl_param_count(source_or_config: str | Wav2Vec2Config) -> int:
    """Parameters of the full ``Wav2Vec2Model``, built on the meta device from the config (no weights)."""
    with torch.device("meta"):
        model = Wav2Vec2Model(copy.deepcopy(load_config(source_or_config)))
    return sum(p.numel() for p in model.parameters())


def resolve_layer(layer: int, n_layers: int) -> int:
    """``ssl.layer`` as a hidden-state index in 0..n_layers (-1 = n_layers, the last)."""
    k = layer if layer >= 0 else n_layers + 1 + layer
    if not 0 <= k <= n_layers:
        raise ConfigError(
            f"ssl.layer={layer} is out of range for a model with {n_layers} transformer layers: "
            f"use 0..{n_layers} or -{n_layers + 1}..-1 (-1 = last)"
        )
    return k


def wants_normalization(source: str | Wav2Vec2Config) -> bool:
    """The feature extractor's ``do_normalize``; without one, what HF's docs state: "layer" models
    (large / XLS-R) were trained on zero-mean unit-variance input, "group" models (base) were not."""
    if not isinstance(source, Wav2Vec2Config):
        try:
            return bool(from_source(Wav2Vec2FeatureExtractor.from_pretrained, source, "feature extractor").do_normalize)
        except ConfigError:
            pass
    return load_config(source).feat_extract_norm == "layer"


class SSLFrontEnd(nn.Module):
    """wav2vec2 hidden states with per-utterance normalisation, layer choice and fine-tuning mode."""

    def __init__(self, ssl: SSLConfig, w2v2_config: Wav2Vec2Config | None = None):
        """Load ``ssl.source`` (pretrained); with ``w2v2_config``, build that architecture randomly initialised."""
        super().__init__()
        base = load_config(w2v2_config if w2v2_config is not None else ssl.source)
        n_layers = base.num_hidden_layers
        keep = n_layers if ssl.weighted_layers else resolve_layer(ssl.layer, n_layers)
        if ssl.finetune not in ("full", "frozen", "top"):
            raise ConfigError(f"ssl.finetune={ssl.finetune!r} is not one of full, frozen, top")
        if ssl.finetune == "top" and not 1 <= ssl.top_layers <= keep:
            raise ConfigError(
                f"ssl.top_layers={ssl.top_layers} with ssl.finetune=top must be in 1..{keep} "
                f"(the transformer layers up to ssl.layer={ssl.layer})"
            )
        config = copy.deepcopy(base)
        config.num_hidden_layers = keep
        config.apply_spec_augment = False
        config.layerdrop = 0.0
        if w2v2_config is not None:
            self.model = Wav2Vec2Model(config)
        else:

            def load(src, **kw):
                return Wav2Vec2Model.from_pretrained(src, config=config, dtype=torch.float32, **kw)

            self.model = from_source(load, ssl.source)
        if keep < n_layers and config.do_stable_layer_norm:
            self.model.encoder.layer_norm = nn.Identity()  # the final LayerNorm belongs to the last layer
        self.normalize = wants_normalization(w2v2_config if w2v2_config is not None else ssl.source)
        self.weights = nn.Parameter(torch.zeros(keep + 1)) if ssl.weighted_layers else None
        self.finetune, self.out_dim, self.n_layers = ssl.finetune, config.hidden_size, keep
        self._frozen = self._freeze(ssl.finetune, ssl.top_layers)
        if ssl.grad_checkpointing:
            self.model.activation_checkpointing_enable({"use_reentrant": False})

    def _freeze(self, mode: str, top: int) -> list[nn.Module]:
        """Set requires_grad for the mode; return the frozen submodules (kept in eval mode)."""
        m = self.model
        if hasattr(m, "masked_spec_embed"):  # SpecAugment is off: the mask vector is unused
            m.masked_spec_embed.requires_grad_(False)
        if mode == "full":
            return []
        if mode == "frozen":
            m.requires_grad_(False)
            m.freeze_feature_encoder()
            return [m]
        m.freeze_feature_encoder()
        enc = m.encoder
        frozen = [m.feature_extractor, m.feature_projection, enc.pos_conv_embed, enc.dropout]
        frozen += list(enc.layers[: len(enc.layers) - top])
        if not m.config.do_stable_layer_norm:
            frozen.append(enc.layer_norm)  # post-LN encoders normalise before the first layer
        for module in frozen:
            module.requires_grad_(False)
        return frozen

    def train(self, mode: bool = True) -> SSLFrontEnd:
        super().train(mode)
        for module in self._frozen:
            module.eval()  # frozen parts run deterministically (no dropout)
        return self

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"SSLFrontEnd: expected a waveform batch [batch, samples], got {list(wave.shape)}")
        wave = wave.float()
        if self.normalize:  # Wav2Vec2FeatureExtractor's zero-mean unit-variance, per utterance
            wave = (wave - wave.mean(1, keepdim=True)) / torch.sqrt(wave.var(1, keepdim=True, unbiased=False) + 1e-7)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.finetune != "frozen"):
            out = self.model(wave, output_hidden_states=self.weights is not None)
        if self.weights is None:
            return out.last_hidden_state
        states = torch.stack(list(out.hidden_states[: self.n_layers]) + [out.last_hidden_state])
        w = F.softmax(self.weights, 0).to(states.dtype)
        return (w[:, None, None, None] * states).sum(0)
