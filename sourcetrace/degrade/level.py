"""Everyday level and band changes without a codec: ``gain`` and ``band_8k``.

``gain``: the clip scaled by a level drawn per clip, uniform in [-30, 0] dB relative to the clip as it
is (quiet recordings, automatic gain control, a far microphone); never above 0 dB, so the 16-bit
rendering cannot clip (the quieter clip keeps 16-bit steps, so its quantisation noise rises with the cut).

``band_8k``: the telephone band without a codec: resampled to 8 kHz and back to the project rate with a
Kaiser-windowed sinc (torchaudio; the long "kaiser_best" filter, so nothing above ~3.8 kHz survives),
trimmed or zero-padded to the input length. The filter's ringing can overshoot a full-scale clip: an
output peak above 16-bit full scale is scaled back to it (so the rendering never clips; other clips keep
their level exactly). At a project rate of 8 kHz or less it changes nothing.
"""

from __future__ import annotations

import numpy as np

GAIN_DB = (-30.0, 0.0)
FULL_SCALE = 32767 / 32768  # the largest positive 16-bit sample
BAND_RATE = 8000
# the "kaiser_best" filter of librosa/resampy, as torchaudio documents it: > 80 dB stop-band attenuation
_KAISER_BEST = {
    "lowpass_filter_width": 64,
    "rolloff": 0.9475937167399596,
    "resampling_method": "sinc_interp_kaiser",
    "beta": 14.769656459379492,
}


def gain_db(rng: np.random.Generator) -> float:
    """The clip's level change in dB (one draw of its generator)."""
    return float(rng.uniform(*GAIN_DB))


def gain(wave: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``wave`` scaled by ``gain_db(rng)`` dB (float32, same length)."""
    return (np.asarray(wave, dtype=np.float32) * np.float32(10 ** (gain_db(rng) / 20))).astype(np.float32)


def band_8k(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """``wave`` through an 8 kHz channel: resampled to 8 kHz and back (float32, same length)."""
    if sample_rate <= BAND_RATE:
        return np.asarray(wave, dtype=np.float32).copy()
    import torch
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    y = AF.resample(AF.resample(x, sample_rate, BAND_RATE, **_KAISER_BEST), BAND_RATE, sample_rate, **_KAISER_BEST)
    out = np.pad(y.numpy()[: len(wave)], (0, max(0, len(wave) - len(y))))
    peak = float(np.abs(out).max()) if len(out) else 0.0
    return (out * (FULL_SCALE / peak) if peak > FULL_SCALE else out).astype(np.float32)
