"""Thin-ResNet-34 (voxceleb_trainer's ResNetSE34L, "Fast ResNet-34"): waveform -> embedding.

Layout, as ResNetSE34L: log-Mel [B, 1, 40, T] -> 7x7 conv, stride (2, 1) -> four stages of
squeeze-excitation basic blocks [3, 4, 6, 3], widths 16-32-64-128, strides 1, (2, 2), (2, 2), 1
-> mean over the 5 remaining frequency rows -> self-attentive pooling over the T/4 frames ->
linear to ``embedding_dim``. 1,371,030 + 129 x embedding_dim parameters: 1,377,480 at 50-d
(the paper's "1.4 M"; 1,437,078 at 512-d, voxceleb_trainer's ResNetSE34L size).

Option ``band_stats`` (not in voxceleb_trainer): the mean and standard deviation over time of every
log-Mel band, taken before the instance norm, batch-normalised and concatenated to the pooled vector
before the last linear layer. The trunk still sees the normalised spectrogram; the head gets back the
long-term band levels and dynamics that the norm removes (the voice and vocoder colouring that the MFCC
baseline scores). ``band_stats_dropout`` p drops the whole branch of a training clip with probability p
(inverted dropout), so the trunk must also tell systems apart on its own; ``band_stats_dim`` k > 0 projects
the normalised statistics to k numbers first, so they can add only a few directions to the embedding.

One deliberate difference: voxceleb_trainer's SEBasicBlock applies ReLU *before* its first
BatchNorm (conv-relu-bn); we use the standard conv-bn-relu order. Parameter count is unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from sourcetrace.config import FREQUENCY_MODES, FeaturesConfig
from sourcetrace.features import LogMelFbank
from sourcetrace.models.pooling import POOLINGS

if TYPE_CHECKING:
    from sourcetrace.config import Config


class SELayer(nn.Module):
    """Squeeze-and-excitation: channel gates from the spatial mean (reduction 8, as ResNetSE34L)."""

    def __init__(self, channels: int, reduction: int = 8):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc(x.mean(dim=(2, 3)))
        return x * gate[:, :, None, None]


class SEBasicBlock(nn.Module):
    """Two 3x3 convolutions with an SE gate and an identity (or 1x1 projection) shortcut."""

    def __init__(self, in_ch: int, out_ch: int, stride: int | tuple[int, int] = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.se = SELayer(out_ch)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = nn.Identity()
        if stride not in (1, (1, 1)) or in_ch != out_ch:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.se(self.bn2(self.conv2(out)))
        return self.relu(out + self.shortcut(x))


class ThinResNet34(nn.Module):
    """Waveform [B, T] at 16 kHz -> embedding [B, embedding_dim]; works for any crop length.

    >>> m = ThinResNet34(embedding_dim=50).eval()
    >>> tuple(m(torch.randn(2, 16000)).shape), m.embedding_dim
    ((2, 50), 50)
    """

    LAYERS = (3, 4, 6, 3)
    STRIDES = ((1, 1), (2, 2), (2, 2), (1, 1))

    def __init__(
        self,
        embedding_dim: int = 50,
        channels: int = 16,
        features: FeaturesConfig | None = None,
        sample_rate: int = 16000,
        pooling: str = "sap",
        frequency: str = "mean",
        band_stats: bool = False,
        band_stats_dropout: float = 0.0,
        band_stats_dim: int = 0,
        band_eq_db: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
    ):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; valid: {', '.join(sorted(POOLINGS))}")
        if frequency not in FREQUENCY_MODES:
            raise ValueError(f"unknown frequency head {frequency!r}; valid: {', '.join(FREQUENCY_MODES)}")
        self.frequency = frequency
        self.embedding_dim = int(embedding_dim)
        self.fbank = LogMelFbank(
            features or FeaturesConfig(),
            sample_rate=sample_rate,
            band_eq_db=band_eq_db,
            freq_mask=freq_mask,
            time_mask=time_mask,
        )
        widths = [channels * f for f in (1, 2, 4, 8)]
        self.conv1 = nn.Conv2d(1, widths[0], kernel_size=7, stride=(2, 1), padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        stages, in_ch = [], widths[0]
        for width, depth, stride in zip(widths, self.LAYERS, self.STRIDES):
            blocks = [SEBasicBlock(in_ch, width, stride)] + [SEBasicBlock(width, width) for _ in range(depth - 1)]
            stages.append(nn.Sequential(*blocks))
            in_ch = width
        self.stages = nn.Sequential(*stages)
        fbank_cfg = features or FeaturesConfig()
        rows = -(-fbank_cfg.n_mels // 8)  # frequency rows left after the strides (2, 2, 2)
        self.pool = POOLINGS[pooling](widths[-1] * (rows if frequency == "flatten" else 1))
        n_stats = 2 * fbank_cfg.n_mels if band_stats else 0
        self.band_norm: nn.Module | None = None
        if band_stats and band_stats_dim:  # normalised, then projected to band_stats_dim numbers
            self.band_norm = nn.Sequential(nn.BatchNorm1d(n_stats), nn.Linear(n_stats, band_stats_dim))
            n_stats = band_stats_dim
        elif band_stats:
            self.band_norm = nn.BatchNorm1d(n_stats)
        self.band_stats_dropout = float(band_stats_dropout)
        self.fc = nn.Linear(self.pool.out_dim + n_stats, self.embedding_dim)
        self._init_weights()

    @classmethod
    def from_config(cls, cfg: Config) -> ThinResNet34:
        return cls(
            embedding_dim=cfg.model.embedding_dim,
            channels=cfg.model.channels,
            features=cfg.features,
            sample_rate=cfg.data.sample_rate,
            pooling=cfg.model.pooling,
            frequency=cfg.model.frequency,
            band_stats=cfg.model.band_stats,
            band_stats_dropout=cfg.model.band_stats_dropout,
            band_stats_dim=cfg.model.band_stats_dim,
            band_eq_db=cfg.augment.band_eq_db,
            freq_mask=cfg.augment.freq_mask,
            time_mask=cfg.augment.time_mask,
        )

    def _init_weights(self) -> None:
        for mod in self.modules():  # as voxceleb_trainer's ResNetSE
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                nn.init.ones_(mod.weight)
                nn.init.zeros_(mod.bias)

    def frame_features(self, wave: torch.Tensor) -> torch.Tensor:
        """Waveform [B, T] -> frame features [B, C (x frequency rows with frequency=flatten), frames / 4]."""
        return self._trunk(self.fbank(wave))

    def _trunk(self, fbank: torch.Tensor) -> torch.Tensor:
        x = fbank.unsqueeze(1)  # [B, 1, n_mels, frames], fp32
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.stages(x)  # [B, C, n_mels / 8, frames / 4]
        if self.frequency == "flatten":  # ResNetSE34V2: every frequency row keeps its own channels
            return x.flatten(1, 2)
        return x.mean(dim=2)  # ResNetSE34L: average the frequency rows

    def embed_fbank(self, fbank: torch.Tensor, band_stats: torch.Tensor | None = None) -> torch.Tensor:
        """Log-Mel features [B, n_mels, frames] (from ``self.fbank``) -> embeddings [B, D]; a model built with
        ``band_stats`` also needs the fbank's band statistics (``self.fbank.with_band_stats``)."""
        x = self._trunk(fbank)
        # pooling statistics and the last linear layer in fp32 even under autocast (bmm is on its bf16 list)
        with torch.autocast(x.device.type, enabled=False):
            pooled = self.pool(x.float())
            if self.band_norm is not None:
                if band_stats is None:
                    raise ValueError("this model was built with band_stats: pass the fbank's band statistics")
                stats = self.band_norm(band_stats.float())
                if self.training and self.band_stats_dropout > 0:  # whole branch, per clip: 0 or 1 / (1 - p)
                    keep = stats.new_ones(stats.shape[0], 1)
                    stats = stats * nn.functional.dropout(keep, self.band_stats_dropout, training=True)
                pooled = torch.cat([pooled, stats], dim=1)
            return self.fc(pooled)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        if self.band_norm is None:
            return self.embed_fbank(self.fbank(wave))
        return self.embed_fbank(*self.fbank.with_band_stats(wave))
