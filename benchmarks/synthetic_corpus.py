"""A small synthetic source-tracing corpus from numpy alone (no TTS engine): for device checks and tests.

``write_corpus(root)`` writes 16 kHz mono 16-bit FLAC clips in the project's layout,
``root/fake/<lang>/<system>/<split>_<n>.flac``, and ``root/protocol/{train,dev,eval}.csv`` with the
columns of the project's own corpus (``path, model_name, language, duration, text``), as
``sourcetrace/data/protocol.py`` reads them.

Every clip is source-filter "speech": a glottal pulse train (f0 contour with declination, vibrato and
per-period jitter) plus aspiration noise, shaped frame by frame (STFT, overlap-add) by the formants of a
sequence of vowels. A language is a set of vowel formants and a syllable rate; a system is a colouring of
the result: spectral tilt, low-pass, noise floor, harmonic-to-noise ratio, a spectral ripple (a
"vocoder" comb), a fixed random colouring (``fingerprint``), phase smearing, mu-law quantisation, and its
own f0 range and jitter. So systems are
separable from the spectrum alone, as real TTS systems are, and languages shift every system alike.

Systems ``sys0``-``sys5`` and languages ``la``/``lb`` are in train; ``sys6``/``sys7`` and ``lc`` appear only
in dev and eval, so both hold all four seen/unseen conditions. The default corpus (8 systems x 3
languages, 384 clips of 3-4 s) takes a few seconds on 2 cores.

Usage: python benchmarks/synthetic_corpus.py OUT_DIR [--train-per-cell 16] [--test-per-cell 4] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
N_FFT, HOP = 512, 256  # 32 ms frames, 50 % overlap (periodic Hann: the frames sum to one)
COLUMNS = ["path", "model_name", "language", "duration", "text"]


@dataclass(frozen=True)
class Language:
    vowels: tuple[tuple[float, float, float], ...]  # (F1, F2, F3) in Hz of each vowel
    syllables_per_s: float
    f0_scale: float  # speaking pitch relative to the system's


@dataclass(frozen=True)
class System:
    f0: tuple[float, float]  # range of a clip's mean f0, Hz
    jitter: float  # relative per-period f0 perturbation
    tilt_db_per_oct: float  # spectral tilt above 500 Hz
    lowpass_hz: float  # the band edge of the "vocoder"
    noise_db: float  # white noise floor relative to the clip's RMS
    hnr: float  # aspiration noise level relative to the pulses
    ripple: float  # depth of a spectral comb (0 = none)
    ripple_hz: float  # its period in Hz
    phase_smear: float  # 0..1: random phase mixed into every frame (Griffin-Lim-like buzz)
    mu_law: int  # 0 = none, else mu-law quantisation levels (a codec-like grain)
    pulse_ms: float = 2.5  # glottal pulse width: the source's spectral roll-off


LANGUAGES = {
    "la": Language(((730, 1090, 2440), (270, 2290, 3010), (300, 870, 2240), (530, 1840, 2480)), 4.5, 1.0),
    "lb": Language(((850, 1220, 2810), (390, 2300, 2800), (440, 1020, 2240), (360, 1700, 2150)), 5.5, 1.1),
    "lc": Language(((640, 1190, 2390), (310, 2020, 2960), (570, 840, 2410), (480, 1550, 2500)), 3.8, 0.9),
}
SYSTEMS = {
    "sys0": System((95, 125), 0.005, -6, 7600, -50, 0.05, 0.0, 0, 0.0, 0, 3.0),
    "sys1": System((180, 230), 0.010, -9, 5500, -45, 0.10, 0.0, 0, 0.2, 0, 1.5),
    "sys2": System((110, 150), 0.020, -3, 7000, -40, 0.20, 0.3, 180, 0.0, 0, 2.5),
    "sys3": System((160, 210), 0.003, -12, 4000, -55, 0.05, 0.0, 0, 0.0, 64, 2.0),
    "sys4": System((120, 170), 0.030, -6, 6500, -35, 0.30, 0.0, 0, 0.6, 0, 3.5),
    "sys5": System((200, 260), 0.008, -4, 7800, -60, 0.02, 0.5, 320, 0.0, 0, 1.2),
    "sys6": System((100, 140), 0.012, -8, 5000, -42, 0.15, 0.2, 250, 0.3, 0, 2.8),  # dev/eval only
    "sys7": System((170, 220), 0.015, -5, 6000, -48, 0.08, 0.0, 0, 0.0, 32, 1.8),  # dev/eval only
}
TRAIN_SYSTEMS = ("sys0", "sys1", "sys2", "sys3", "sys4", "sys5")
TRAIN_LANGUAGES = ("la", "lb")


def _excitation(sys: System, lang: Language, n: int, rng: np.random.Generator) -> np.ndarray:
    """Glottal pulses along an f0 contour (declination, vibrato, jitter) plus aspiration noise."""
    t = np.arange(n) / SAMPLE_RATE
    f0 = rng.uniform(*sys.f0) * lang.f0_scale
    contour = f0 * (1.1 - 0.2 * t / t[-1]) * (1 + 0.03 * np.sin(2 * np.pi * rng.uniform(3, 6) * t))
    n_periods = int(np.sum(contour) / SAMPLE_RATE) + 2
    jitter = 1 + sys.jitter * rng.standard_normal(n_periods)
    phase = np.cumsum(contour / SAMPLE_RATE)
    period = np.floor(phase).astype(np.int64)
    pulses = np.diff(period, prepend=-1) > 0  # one pulse at each period start
    src = np.zeros(n)
    src[pulses] = jitter[period[pulses]]
    src = np.convolve(src, np.hanning(int(SAMPLE_RATE * sys.pulse_ms / 1000)) ** 2, mode="same")  # glottal pulse
    src -= np.convolve(src, np.ones(64) / 64, mode="same")  # no DC
    return src + sys.hnr * np.std(src) * rng.standard_normal(n)


def fingerprint(system: str, db: float = 6.0) -> np.ndarray:
    """A system's fixed spectral colouring over the FFT bins: +-``db`` at 12 knots spaced on a log scale,
    interpolated (what a vocoder's filters leave on every clip); deterministic per system name."""
    f = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    rng = np.random.default_rng(sum(map(ord, system)) * 7919)
    knots = np.geomspace(100, SAMPLE_RATE / 2, 12)
    gains = rng.uniform(-db, db, size=knots.size)
    return 10 ** (np.interp(np.maximum(f, 100), knots, gains) / 20)


def _envelopes(sys: System, lang: Language, n_frames: int, rng: np.random.Generator, colour_of: str = "") -> np.ndarray:
    """[frames, bins] magnitude: the vowel formants of each syllable, gated by syllable energy, coloured."""
    f = np.fft.rfftfreq(N_FFT, 1 / SAMPLE_RATE)
    frame_s = HOP / SAMPLE_RATE
    n_syl = max(1, int(n_frames * frame_s * lang.syllables_per_s))
    vowels = np.array(lang.vowels)[rng.integers(len(lang.vowels), size=n_syl)]
    vowels = vowels * rng.uniform(0.95, 1.05, size=vowels.shape)  # speaker/clip variation
    pos = np.arange(n_frames) * n_syl / n_frames  # syllable index of each frame (fractional)
    k = np.minimum(pos.astype(int), n_syl - 1)
    formants = vowels[k]  # [frames, 3]
    bw = np.array([80.0, 110.0, 160.0])
    ff = f[None, :, None]
    fk = formants[:, None, :]
    res = fk**2 / np.sqrt((fk**2 - ff**2) ** 2 + (bw * ff) ** 2 + 1e-9)  # second-order resonators
    env = res.prod(axis=2)
    env /= env.max(axis=1, keepdims=True)
    gate = np.sin(np.pi * (pos - np.floor(pos))) ** 0.7  # syllable onsets and offsets
    gate *= rng.uniform(0.0, 1.0, size=n_syl)[k] > 0.12  # some pauses
    env *= gate[:, None] + 0.01
    octaves = np.log2(np.maximum(f, 500.0) / 500.0)
    colour = 10 ** (sys.tilt_db_per_oct * octaves / 20)
    colour /= 1 + (f / sys.lowpass_hz) ** 16  # a steep low-pass at the system's band edge
    if sys.ripple:
        colour *= 1 + sys.ripple * np.cos(2 * np.pi * f / sys.ripple_hz)
    if colour_of:
        colour *= fingerprint(colour_of)
    return env * colour[None, :]


def synthesise(system: str, language: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One clip, float32 in [-1, 1], peak about -3 dBFS."""
    sys, lang = SYSTEMS[system], LANGUAGES[language]
    n_frames = int(seconds * SAMPLE_RATE / HOP)
    n = (n_frames + 1) * HOP
    src = _excitation(sys, lang, n, rng)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(N_FFT) / N_FFT)  # periodic Hann: sums to 1 at 50 %
    idx = np.arange(n_frames)[:, None] * HOP + np.arange(N_FFT)[None, :]
    idx = np.minimum(idx, n - 1)
    spec = np.fft.rfft(src[idx] * window, axis=1) * _envelopes(sys, lang, n_frames, rng, system)
    if sys.phase_smear:
        random_phase = np.exp(2j * np.pi * rng.random(spec.shape))
        spec = (1 - sys.phase_smear) * spec + sys.phase_smear * np.abs(spec) * random_phase
    frames = np.fft.irfft(spec, n=N_FFT, axis=1)
    out = np.zeros(n + N_FFT)
    np.add.at(out, idx.ravel(), frames.ravel())  # overlap-add
    out = out[:n]
    out /= np.sqrt(np.mean(out**2)) + 1e-12
    out += 10 ** (sys.noise_db / 20) * rng.standard_normal(n)
    out *= 0.7 / np.abs(out).max()
    if sys.mu_law:
        mu = float(sys.mu_law - 1)
        q = np.sign(out) * np.log1p(mu * np.abs(out)) / np.log1p(mu)
        q = np.round((q + 1) / 2 * mu) / mu * 2 - 1
        out = np.sign(q) * ((1 + mu) ** np.abs(q) - 1) / mu
    return out.astype(np.float32)


def plan(train_per_cell: int = 16, test_per_cell: int = 4) -> list[tuple[str, str, str]]:
    """(split, system, language) of every clip: train = seen systems x seen languages; dev/eval = all x all."""
    rows = [("train", s, g) for s in TRAIN_SYSTEMS for g in TRAIN_LANGUAGES for _ in range(train_per_cell)]
    for split in ("dev", "eval"):
        rows += [(split, s, g) for s in SYSTEMS for g in LANGUAGES for _ in range(test_per_cell)]
    return rows


def write_corpus(
    root: str | Path, train_per_cell: int = 16, test_per_cell: int = 4, seed: int = 0, seconds=(3.0, 4.0)
) -> dict:
    """Write the clips and ``protocol/{train,dev,eval}.csv`` under ``root``; returns a summary dict.

    Deterministic for a seed. Existing files are overwritten (the protocol is rewritten last, so a
    half-written corpus has no protocol).
    """
    import soundfile as sf  # only here: the module imports with numpy alone

    root = Path(root)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list]] = {"train": [], "dev": [], "eval": []}
    total = 0.0
    for i, (split, system, language) in enumerate(plan(train_per_cell, test_per_cell)):
        dur = float(rng.uniform(*seconds))
        wave = synthesise(system, language, dur, rng)
        rel = f"fake/{language}/{system}/{split}_{i:04d}.flac"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(root / rel), wave, SAMPLE_RATE, subtype="PCM_16", format="FLAC")
        seconds_written = len(wave) / SAMPLE_RATE
        total += seconds_written
        rows[split].append(["./" + rel, system, language, round(seconds_written, 3), f"synthetic {i}"])
    (root / "protocol").mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with open(root / "protocol" / f"{split}.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(COLUMNS)
            w.writerows(split_rows)
    return {
        "root": str(root),
        "clips": {s: len(r) for s, r in rows.items()},
        "systems": len(SYSTEMS),
        "languages": len(LANGUAGES),
        "audio_s": round(total, 1),
        "seconds": round(time.perf_counter() - t0, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--train-per-cell", type=int, default=16, help="train clips per (system, language)")
    ap.add_argument("--test-per-cell", type=int, default=4, help="dev and eval clips per (system, language)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(write_corpus(args.out, args.train_per_cell, args.test_per_cell, args.seed))


if __name__ == "__main__":
    main()
