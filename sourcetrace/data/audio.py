"""Decode and validate one clip: soundfile decode, torchaudio resampling, an ``AudioError`` per problem.

Rules (MLAAD clips are mono speech at >= 16 kHz): a missing, unreadable, empty, multi-channel, silent or
non-finite file is an error that names the path and the fix; a rate below the target is an error
(upsampling invents no bandwidth and makes the rate a cue for the system), a higher rate is resampled.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass

import numpy as np
import soundfile as sf
import torch

from sourcetrace.errors import AudioError

SILENCE_PEAK = 1e-3  # -60 dBFS: a peak below this is "silent"
CANONICAL_PEAK = 0.99  # the corpus's clips are peak-normalised to this (below full scale: 16-bit never clips)
_INT16_SUBTYPES = {"PCM_16", "PCM_S8", "PCM_U8"}  # read as int16 without loss


@dataclass(frozen=True)
class AudioInfo:
    """Header facts of one file (no samples decoded)."""

    path: str
    sample_rate: int
    channels: int
    frames: int
    format: str
    subtype: str

    @property
    def duration(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def probe_audio(path: str | os.PathLike) -> AudioInfo:
    """Header read (``soundfile.info``); ``AudioError`` if the file is missing or not audio."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        what = "is not a regular file (a folder, a device or a pipe)" if os.path.exists(path) else "file does not exist"
        raise AudioError(f"{path}: {what}")
    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError) as err:
        raise AudioError(f"{path}: unreadable or corrupt audio file ({_short(err)})") from None
    return AudioInfo(path, int(info.samplerate), int(info.channels), int(info.frames), info.format, info.subtype)


def header_problems(info: AudioInfo, sample_rate: int = 16000) -> list[str]:
    """``'<path>: <problem>'`` for an empty, multi-channel or too-low-rate file (header facts only)."""
    problems = []
    if info.frames <= 0:
        problems.append(f"{info.path}: empty audio file (0 frames)")
    if info.channels != 1:
        problems.append(
            f"{info.path}: {info.channels} channels, but clips must be mono (MLAAD's are); "
            f"mix it down, e.g. `sox in.wav -c 1 out.wav`"
        )
    if info.sample_rate < sample_rate:
        problems.append(
            f"{info.path}: sample rate {info.sample_rate} Hz is below the target {sample_rate} Hz; upsampling "
            f"would invent no content above {info.sample_rate // 2} Hz and make the rate a cue for the system: "
            f"leave the clip out or re-synthesise it at >= {sample_rate} Hz"
        )
    return problems


def check_header(info: AudioInfo, sample_rate: int = 16000) -> None:
    """Raise ``AudioError`` for the first of ``header_problems``."""
    problems = header_problems(info, sample_rate)
    if problems:
        raise AudioError(problems[0])


def content_problems(path: str, wave: np.ndarray) -> list[str]:
    """``'<path>: <problem>'`` for decoded samples (float in [-1, 1] or int16) that are empty, non-finite or silent."""
    if wave.size == 0:
        return [f"{path}: empty audio file (0 frames decoded)"]
    if wave.dtype == np.int16:
        peak = int(np.abs(wave.astype(np.int32)).max()) / 32768.0
    else:
        if not np.isfinite(wave).all():
            return [f"{path}: contains NaN or infinite samples"]
        peak = float(np.abs(wave).max())
    if peak == 0.0:
        return [f"{path}: all samples are zero (digital silence)"]
    if peak < SILENCE_PEAK:
        return [
            f"{path}: silent: peak {peak:.2g} ({20 * math.log10(peak):.0f} dBFS) is below {SILENCE_PEAK:g} (-60 dBFS)"
        ]
    return []


def read_samples(info: AudioInfo, dtype: str = "float32") -> np.ndarray:
    """All samples at the native rate, [frames] or [frames, channels]; ``AudioError`` if decoding fails."""
    try:
        wave, _ = sf.read(info.path, dtype=dtype, always_2d=False)
    except (sf.LibsndfileError, RuntimeError) as err:
        raise AudioError(f"{info.path}: unreadable or corrupt audio file ({_short(err)})") from None
    return wave


def resampled_length(frames: int, orig: int, new: int) -> int:
    """Length that ``torchaudio.functional.resample`` returns for ``frames`` samples."""
    if orig == new:
        return frames
    g = math.gcd(orig, new)
    orig, new = orig // g, new // g
    return -(-frames * new // orig)


_KERNELS: dict[tuple[int, int], object] = {}
_KERNEL_LOCK = threading.Lock()


def _kernel(orig: int, new: int):
    """One ``torchaudio.transforms.Resample`` per rate pair: its sinc kernel is built once, then reused."""
    key = (orig, new)
    with _KERNEL_LOCK:
        if key not in _KERNELS:
            import torchaudio

            _KERNELS[key] = torchaudio.transforms.Resample(orig, new)
        return _KERNELS[key]


def resample(wave: np.ndarray, orig: int, new: int) -> np.ndarray:
    """Band-limited sinc resampling of a float32 1-D array (torchaudio, Hann window, its default width).

    Many decoder threads should each run it with one torch thread (``bank.thread_map`` does).
    """
    if orig == new:
        return wave
    with torch.no_grad():
        return _kernel(orig, new)(torch.from_numpy(np.ascontiguousarray(wave, dtype=np.float32))).numpy()


def decode(path: str | os.PathLike, sample_rate: int = 16000, dtype: str = "float32") -> np.ndarray:
    """Validated mono samples at ``sample_rate``: float32 in [-1, 1] or int16 (full scale 32768)."""
    info = probe_audio(path)
    check_header(info, sample_rate)
    as_int = dtype == "int16" and info.sample_rate == sample_rate and info.subtype in _INT16_SUBTYPES
    wave = read_samples(info, "int16" if as_int else "float32")
    if wave.ndim != 1:  # the header said mono; keep the first channel rather than fail late
        wave = wave.reshape(len(wave), -1)[:, 0]
    problems = content_problems(info.path, wave)
    if problems:
        raise AudioError(problems[0])
    if as_int:
        return wave
    wave = resample(wave, info.sample_rate, sample_rate)
    if dtype == "int16":
        return to_int16(wave)
    return wave.astype(np.float32, copy=False)


def load_audio(path: str | os.PathLike, sample_rate: int = 16000) -> np.ndarray:
    """Mono float32 samples in [-1, 1] at ``sample_rate``; ``AudioError`` naming the path and the problem.

    >>> load_audio("no/such.wav")
    Traceback (most recent call last):
    ...
    sourcetrace.errors.AudioError: no/such.wav: file does not exist
    """
    return decode(path, sample_rate, "float32")


def read_as_it_comes(path: str | os.PathLike, sample_rate: int = 16000, strict: bool = False):
    """(mono float32 samples at ``sample_rate``, notes on what was done to get them) for a clip as an analyst
    receives it: several channels are mixed down (their mean), a rate below ``sample_rate`` (8 kHz telephone
    audio, say) is resampled up and said to be narrow-band. ``strict`` refuses both, as the corpus does.
    The level is left as it is: the model sets it itself (``features.level``).

    Other problems (missing, unreadable, empty, silent, non-finite) are ``AudioError`` as in ``load_audio``.
    """
    info = probe_audio(path)
    if strict:
        return decode(path, sample_rate, "float32"), []
    problems = [p for p in header_problems(info, sample_rate) if "channels" not in p and "sample rate" not in p]
    if problems:
        raise AudioError(problems[0])
    wave = read_samples(info, "float32")
    notes = []
    if wave.ndim == 2:
        if wave.shape[1] > 1:
            notes.append(f"mixed down from {wave.shape[1]} channels")
        wave = wave.mean(axis=1, dtype=np.float32)
    problems = content_problems(info.path, wave)
    if problems:
        raise AudioError(problems[0])
    if info.sample_rate < sample_rate:
        notes.append(
            f"narrow-band: recorded at {info.sample_rate} Hz, resampled to {sample_rate} Hz "
            f"(nothing above {info.sample_rate // 2} Hz)"
        )
    return resample(np.ascontiguousarray(wave, dtype=np.float32), info.sample_rate, sample_rate), notes


def at_canonical_level(wave: np.ndarray) -> np.ndarray:
    """A float clip peak-normalised to ``CANONICAL_PEAK``, the level of every corpus clip (silence left as is).

    Inference applies it to a clip before anything stores it as 16-bit (a quiet clip would lose bits there);
    the model then sets its own input level (``features.level``), so training and inference agree.

    >>> round(float(np.abs(at_canonical_level(np.array([0.0, 0.01, -0.02], np.float32))).max()), 4)
    0.99
    """
    wave = np.asarray(wave, dtype=np.float32)
    peak = float(np.abs(wave).max()) if wave.size else 0.0
    return wave * np.float32(CANONICAL_PEAK / peak) if peak > 0 else wave


def to_int16(wave: np.ndarray) -> np.ndarray:
    """Float [-1, 1] -> int16 (x * 32768, rounded, clipped): exact for 16-bit sources."""
    return np.clip(np.rint(wave * 32768.0), -32768, 32767).astype(np.int16)


def _short(err: Exception) -> str:
    """libsndfile's reason, without the path it repeats."""
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return msg.rsplit(": ", 1)[-1] if msg.startswith("Error opening") else msg
