"""The canonical copy of a clip: 16 kHz mono, high-passed at 50 Hz, silence trimmed, peak-normalised.

Engines differ in native rate (8-bit 22.05 kHz to 32 kHz) and loudness; uniform audio keeps those
from being free cues of the source.

>>> sr = 22050
>>> t = np.arange(sr) / sr
>>> x = np.concatenate([np.zeros(sr // 2), 0.3 * np.sin(2 * np.pi * 220 * t), np.zeros(sr // 2)])
>>> y = canonicalise(x, sr)
>>> 1.0 < len(y) / RATE < 1.1, round(float(np.abs(y).max()), 2)  # 1 s tone kept, 1 s of silence cut
(True, 0.99)
"""

from __future__ import annotations

from math import gcd

import numpy as np
from scipy.signal import butter, resample_poly, sosfiltfilt

from sourcetrace.data.audio import CANONICAL_PEAK as PEAK  # below full scale so 16-bit storage never clips

RATE = 16000
TRIM_DB = 35.0  # frames this far below the loudest frame count as silence
FRAME = 160  # 10 ms at 16 kHz
PAD_FRAMES = 2  # keep 20 ms around the speech
HIGHPASS_HZ = 50.0  # removes DC offsets and rumble that some engines leave


def canonicalise(audio: np.ndarray, sr: int) -> np.ndarray:
    """Return float32 audio at ``RATE``, mono, trimmed and peak-normalised; ValueError if silent."""
    x = np.asarray(audio, dtype=np.float64)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise ValueError("engine returned empty or non-finite audio")
    if sr != RATE:
        g = gcd(int(sr), RATE)
        x = resample_poly(x, RATE // g, int(sr) // g)
    x = x - x.mean()
    if len(x) > 64:
        x = sosfiltfilt(butter(4, HIGHPASS_HZ, "highpass", fs=RATE, output="sos"), x)
    x = trim(x)
    peak = float(np.abs(x).max()) if x.size else 0.0
    if peak < 1e-4:
        raise ValueError("engine returned silence")
    return (x * (PEAK / peak)).astype(np.float32)


def trim(x: np.ndarray) -> np.ndarray:
    """Cut leading and trailing frames more than ``TRIM_DB`` below the loudest frame."""
    n = len(x) // FRAME
    if n == 0:
        return x
    rms = np.sqrt(np.mean(x[: n * FRAME].reshape(n, FRAME) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10 ** (-TRIM_DB / 20))
    if loud.size == 0:
        return x[:0]
    start = max(0, (loud[0] - PAD_FRAMES) * FRAME)
    stop = min(len(x), (loud[-1] + 1 + PAD_FRAMES) * FRAME)
    return x[start:stop]
