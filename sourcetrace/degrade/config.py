"""The ``augment.*`` config section: training-time degradations, off by default.

Each degradation key is the probability that a training clip is drawn from its rendering under that
degradation (rendered once per clip and cached, see ``render``); at most one applies to a clip, so the
probabilities sum to at most 1 and a clip stays clean with the rest. The keys are the single degradations
(``DEGRADATIONS``: the codecs, ``replay``, ``gain``, ``band_8k``); chains and evaluation windows
(``amr_nb+replay``, ``short_1s``) are evaluation conditions only. ``augment.noise`` is the
probability of additive white noise at an SNR drawn from [noise_snr_min, noise_snr_max] dB, applied on
the fly on top. ``augment.band_eq_db`` is a random equaliser on the log-Mel bands of every training clip
(a gain and a spectral tilt, each drawn from [-a, a] dB): it keeps a model from telling its training
systems apart by their exact recording level and colouring, which new systems do not share.
``augment.freq_mask`` / ``augment.time_mask`` are SpecAugment's masks on the network's log-Mel input
(torchaudio's ``mask_along_axis_iid``: per clip, one band of up to that many Mel bins / frames is set to
the clip's mean). The log-Mel keys (``LOG_MEL_KEYS``) need a log-Mel model (Thin-ResNet-34). A sweep
searches these keys like any other.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from sourcetrace.degrade import DEGRADATIONS
from sourcetrace.errors import ConfigError

LOG_MEL_KEYS = ("band_eq_db", "freq_mask", "time_mask")


@dataclass(frozen=True)
class AugmentConfig:
    """Per-transform probabilities of training-time augmentation (all 0: off)."""

    mp3_32: float = 0.0
    mp3_64: float = 0.0
    opus_16: float = 0.0
    amr_nb: float = 0.0
    gsm: float = 0.0
    g711: float = 0.0
    replay: float = 0.0
    gain: float = 0.0  # a random level in [-30, 0] dB per clip (rendered like the others)
    band_8k: float = 0.0  # telephone band without a codec (8 kHz and back)
    noise: float = 0.0  # additive white noise, on the fly
    noise_snr_min: float = 5.0
    noise_snr_max: float = 30.0
    seed: int = 0  # rendering seed (rooms and noise of the replayed copies, levels of the gain ones)
    band_eq_db: float = 0.0  # random log-Mel gain and tilt, each in [-a, a] dB, per training clip (0: off)
    freq_mask: int = 0  # SpecAugment: mask up to this many Mel bins of each training clip (0: off)
    time_mask: int = 0  # SpecAugment: mask up to this many frames of each training clip (0: off)

    def log_mel(self) -> dict[str, float]:
        """{key: value} of the log-Mel augmentations in use (they act inside the model's front end)."""
        return {k: getattr(self, k) for k in LOG_MEL_KEYS if getattr(self, k) > 0}

    def rendered(self) -> dict[str, float]:
        """{degradation: probability} of the degradations in use."""
        return {n: getattr(self, n) for n in DEGRADATIONS if getattr(self, n) > 0}

    @property
    def active(self) -> bool:
        return bool(self.rendered()) or self.noise > 0


def check_augment(aug: AugmentConfig) -> None:
    """Probabilities in [0, 1] summing to at most 1, an ordered SNR range, encoders present."""
    probs = [f.name for f in fields(aug) if f.name in DEGRADATIONS or f.name == "noise"]
    for name in probs:
        if not 0.0 <= getattr(aug, name) <= 1.0:
            raise ConfigError(f"augment.{name}={getattr(aug, name)!r} is not a probability in [0, 1]")
    used = aug.rendered()
    if sum(used.values()) > 1.0 + 1e-9:
        listed = ", ".join(f"augment.{n}={p}" for n, p in used.items())
        raise ConfigError(f"at most one degradation applies to a clip, so {listed} must sum to <= 1")
    for name in LOG_MEL_KEYS:  # largest EQ in dB, largest mask widths
        if getattr(aug, name) < 0:
            raise ConfigError(f"augment.{name}={getattr(aug, name)!r} is negative; 0 turns it off")
    if aug.noise_snr_min > aug.noise_snr_max:
        raise ConfigError(
            f"augment.noise_snr_min={aug.noise_snr_min} is above augment.noise_snr_max={aug.noise_snr_max}"
        )
    if used:
        from sourcetrace.degrade.codecs import require

        require(list(used))
