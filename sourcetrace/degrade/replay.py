"""Simulated replay: a clip played through a small loudspeaker in a room and recorded by a microphone.

Three stages, each drawn from the clip's own generator (so one seed gives one room per clip):

1. loudspeaker: 4th-order high-pass at 120-350 Hz (small drivers have no bass) and low-pass at
   4-7 kHz, then a mild ``tanh`` overdrive;
2. room: convolution with a synthetic impulse response (direct path, a dozen early reflections
   within 2-25 ms, and a late tail of exponentially decaying Gaussian noise with RT60 0.2-0.8 s at a
   direct-to-reverberant ratio of 0-10 dB), aligned on the direct path so the clip does not shift;
3. microphone: white noise at 15-35 dB SNR and a 50-80 Hz high-pass.

Nothing is downloaded: the rooms are generated. The output keeps the input's length and peak level.
"""

from __future__ import annotations

import numpy as np
import torch


def room_impulse_response(rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A synthetic RIR, float32, direct path at sample 0 with amplitude 1."""
    rt60 = rng.uniform(0.2, 0.8)
    n = int(rt60 * sample_rate)
    t = np.arange(n) / sample_rate
    rir = np.zeros(n, dtype=np.float64)
    rir[0] = 1.0
    for _ in range(12):  # early reflections: walls, table, ceiling
        d = rng.uniform(0.002, 0.025)
        rir[int(d * sample_rate)] += rng.choice([-1.0, 1.0]) * rng.uniform(0.2, 0.7) * np.exp(-6.9 * d / rt60)
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)  # 60 dB decay over rt60
    tail[: int(0.005 * sample_rate)] = 0.0  # the diffuse field starts after the first reflections
    drr_db = rng.uniform(0.0, 10.0)
    tail *= np.sqrt(np.sum(rir**2) / max(np.sum(tail**2), 1e-12) / 10 ** (drr_db / 10))
    return (rir + tail).astype(np.float32)


def replay(wave: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """``wave`` (float32, 1-D) as re-recorded from a loudspeaker in a simulated room."""
    import torchaudio.functional as AF

    x = torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))
    peak = float(x.abs().max()) or 1.0
    hp, lp = rng.uniform(120.0, 350.0), rng.uniform(4000.0, min(7000.0, 0.45 * sample_rate))
    for _ in range(2):  # two biquads each: 4th order
        x = AF.lowpass_biquad(AF.highpass_biquad(x, sample_rate, hp), sample_rate, lp)
    drive = rng.uniform(1.0, 3.0)
    x = torch.tanh(drive * x / peak) / np.tanh(drive) * peak
    rir = torch.from_numpy(room_impulse_response(rng, sample_rate))
    x = AF.fftconvolve(x, rir)[: len(wave)]
    snr_db = rng.uniform(15.0, 35.0)
    power = float(x.pow(2).mean())
    noise = torch.from_numpy(rng.standard_normal(len(wave)).astype(np.float32))
    x = x + noise * np.sqrt(power / 10 ** (snr_db / 10))
    x = AF.highpass_biquad(x, sample_rate, rng.uniform(50.0, 80.0))
    out = x.numpy()
    return (out * (peak / max(float(np.abs(out).max()), 1e-9))).astype(np.float32)
