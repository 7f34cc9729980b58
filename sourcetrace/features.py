"""Front ends that turn a 16 kHz waveform batch into model input.

``LogMelFbank`` is the ResNet's: 40 log-Mel filterbanks with per-utterance instance normalisation,
the voxceleb_trainer ResNetSE34L recipe (pre-emphasis 0.97, Hamming window, log(x + 1e-6),
InstanceNorm1d). With ``features.level=rms`` (the default) each input waveform is first brought to one
RMS level (``set_level``), inside the model: training crops, evaluation, bundles and the ONNX graph all
go through it, so a clip's recording level does not reach the embedding. The SSL (wav2vec2) front end
lives with its model in ``models/``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchaudio

from sourcetrace.config import FeaturesConfig


class PreEmphasis(nn.Module):
    """``y[t] = x[t] - coef * x[t-1]`` with a reflected first sample, as voxceleb_trainer."""

    def __init__(self, coef: float = 0.97):
        super().__init__()
        self.coef = float(coef)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        padded = F.pad(wave.unsqueeze(1), (1, 0), mode="reflect").squeeze(1)
        return padded[:, 1:] - self.coef * padded[:, :-1]


LEVEL_RMS_DBFS = -20.0  # the input level of features.level=rms: speech peak-normalised to -1 dBFS sits near it
_SILENT_RMS = 1e-5  # -100 dBFS: a row quieter than this is left as it is (not blown up to the target level)


def set_level(wave: torch.Tensor) -> torch.Tensor:
    """Each row of a waveform batch [B, T] scaled to an RMS of ``LEVEL_RMS_DBFS`` (in fp32): the same
    clip at any gain gives the same rows, up to rounding.

    >>> x = torch.randn(2, 16000)
    >>> bool(torch.allclose(set_level(x), set_level(0.01 * x), atol=1e-6))
    True
    """
    x = wave.float()
    rms = x.pow(2).mean(dim=-1, keepdim=True).sqrt()
    target = 10.0 ** (LEVEL_RMS_DBFS / 20.0)
    return x * torch.where(rms > _SILENT_RMS, target / rms.clamp_min(_SILENT_RMS), torch.ones_like(rms))


class LogMelFbank(nn.Module):
    """Waveform [B, T] -> log-Mel [B, n_mels, frames]; frames = T // hop_length + 1 (centred STFT).

    Always computed in fp32, also inside an autocast region, on the input's device. No parameters
    are learned, and no graph is kept for a waveform that does not require grad.

    >>> fb = LogMelFbank(FeaturesConfig())
    >>> tuple(fb(torch.randn(3, 32000)).shape)
    (3, 40, 201)
    """

    def __init__(
        self,
        cfg: FeaturesConfig,
        sample_rate: int = 16000,
        pre_emphasis: float = 0.97,
        band_eq_db: float = 0.0,
        freq_mask: int = 0,
        time_mask: int = 0,
    ):
        super().__init__()
        self.n_mels, self.hop_length, self.instance_norm = cfg.n_mels, cfg.hop_length, cfg.instance_norm
        self.level = cfg.level == "rms"
        self.band_eq = float(band_eq_db) * math.log(10) / 10  # dB of power -> natural-log units of the log-Mel
        self.freq_mask, self.time_mask = int(freq_mask), int(time_mask)
        self.pre_emphasis = PreEmphasis(pre_emphasis) if pre_emphasis else nn.Identity()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=sample_rate,
            n_fft=cfg.n_fft,
            win_length=cfg.win_length,
            hop_length=cfg.hop_length,
            f_min=cfg.f_min,
            f_max=cfg.f_max,
            n_mels=cfg.n_mels,
            window_fn=torch.hamming_window,
        )

    def _power(self, wave: torch.Tensor) -> torch.Tensor:
        """|STFT|^2 as torchaudio's Spectrogram(power=2), from the real and imaginary parts: on CPU the
        complex ``abs().pow(2)`` it uses costs as much as the STFT itself (benchmarks/README.md)."""
        spec = self.mel.spectrogram
        stft = torch.stft(
            wave,
            spec.n_fft,
            spec.hop_length,
            spec.win_length,
            spec.window,
            center=spec.center,
            pad_mode=spec.pad_mode,
            onesided=True,
            return_complex=True,
        )
        return torch.view_as_real(stft).pow(2).sum(-1)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return self._mask(self._normalise(self._equalise(self._log_mel(wave))))

    def with_band_stats(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(log-Mel [B, n_mels, frames] as ``forward``, band statistics [B, 2 n_mels]): the mean and the
        standard deviation over frames of every log-Mel band, taken before the instance norm removes them.

        >>> x, stats = LogMelFbank(FeaturesConfig()).with_band_stats(torch.randn(3, 32000))
        >>> tuple(stats.shape), bool(x.mean(-1).abs().max() < 1e-4)
        ((3, 80), True)
        """
        x = self._equalise(self._log_mel(wave))
        with torch.autocast(device_type=x.device.type, enabled=False):
            std, mean = torch.std_mean(x, dim=-1)
        return self._mask(self._normalise(x)), torch.cat([mean, std], dim=1)

    def _log_mel(self, wave: torch.Tensor) -> torch.Tensor:
        if wave.dim() != 2:
            raise ValueError(f"LogMelFbank expects a waveform batch [B, T], got shape {tuple(wave.shape)}")
        with torch.autocast(device_type=wave.device.type, enabled=False):
            wave = set_level(wave) if self.level else wave.float()
            return torch.log(self.mel.mel_scale(self._power(self.pre_emphasis(wave))) + 1e-6)

    def _equalise(self, x: torch.Tensor) -> torch.Tensor:
        """While training with ``band_eq_db`` a: add to each clip's log-Mel a gain g and a tilt t (low bands
        -t/2, high bands +t/2), both uniform in [-a, a] dB, drawn from torch's generator (seeded per epoch)."""
        if not (self.training and self.band_eq > 0):
            return x
        gain, tilt = (torch.rand(2, x.shape[0], 1, 1, device=x.device) * 2 - 1) * self.band_eq
        ramp = torch.linspace(-0.5, 0.5, x.shape[1], device=x.device)[:, None]
        return x + gain + tilt * ramp

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        """While training with ``freq_mask`` / ``time_mask``: SpecAugment, one band of up to that many Mel bins /
        frames per clip (torchaudio's iid masks, torch's generator) set to the clip's mean; the band statistics
        are taken before, from the whole clip."""
        if not (self.training and (self.freq_mask or self.time_mask)):
            return x
        with torch.autocast(device_type=x.device.type, enabled=False):
            keep = torch.ones_like(x[:, None])  # [B, 1, n_mels, frames]: the masks' (..., freq, time)
            if self.freq_mask:
                keep = torchaudio.functional.mask_along_axis_iid(keep, self.freq_mask, 0.0, axis=2)
            if self.time_mask:
                keep = torchaudio.functional.mask_along_axis_iid(keep, self.time_mask, 0.0, axis=3)
            keep = keep[:, 0]
            return x * keep + x.mean(dim=(1, 2), keepdim=True) * (1 - keep)

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        if not self.instance_norm:
            return x
        with torch.autocast(device_type=x.device.type, enabled=False):  # per utterance and mel bin over time
            return F.instance_norm(x, eps=1e-5)  # like nn.InstanceNorm1d
