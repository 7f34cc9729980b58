"""Lossy codecs through the ffmpeg command line: encode a clip to the codec's file, decode it back.

Every codec runs its real encoder (``ffmpeg -encoders`` must list it): LAME, libopus, OpenCORE AMR-NB,
libgsm, G.711 mu-law. The clip goes in as 32-bit float PCM at the project rate, is resampled by ffmpeg to
the codec's rate (8 kHz for the telephony codecs), encoded into its container, then decoded and
resampled back and trimmed or zero-padded to the input length (codec frames pad the end). ``bitexact``
flags keep the output identical from run to run. Debian's ``ffmpeg`` package has LAME, Opus, GSM and
G.711; AMR-NB's encoder is in ``libavcodec-extra`` (``scripts/setup_engines.sh`` installs both).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sourcetrace.errors import ConfigError

FFMPEG = "ffmpeg"
_QUIET = (FFMPEG, "-nostdin", "-hide_banner", "-loglevel", "error", "-y")
_EXACT = ("-fflags", "+bitexact", "-flags:a", "+bitexact")


@dataclass(frozen=True)
class Codec:
    encoder: str  # ffmpeg encoder name
    fmt: str  # ffmpeg container (-f)
    suffix: str  # file suffix of the encoded clip
    rate: int  # coded sample rate
    bitrate: str | None  # -b:a, None = the codec's only rate
    package: str  # the Debian package whose ffmpeg has the encoder

    @property
    def bandwidth_hz(self) -> float:
        """Highest frequency the coded signal can carry (Nyquist of the coded rate)."""
        return self.rate / 2


CODECS: dict[str, Codec] = {
    "mp3_32": Codec("libmp3lame", "mp3", ".mp3", 16000, "32k", "ffmpeg"),
    "mp3_64": Codec("libmp3lame", "mp3", ".mp3", 16000, "64k", "ffmpeg"),
    "opus_16": Codec("libopus", "ogg", ".opus", 16000, "16k", "ffmpeg"),
    "amr_nb": Codec("libopencore_amrnb", "amr", ".amr", 8000, "12.2k", "libavcodec-extra"),
    "gsm": Codec("libgsm", "gsm", ".gsm", 8000, None, "ffmpeg"),
    "g711": Codec("pcm_mulaw", "wav", ".wav", 8000, None, "ffmpeg"),
}


@functools.cache
def _encoders() -> frozenset[str]:
    out = subprocess.run([*_QUIET[:-1], "-encoders"], capture_output=True, text=True, check=True).stdout
    return frozenset(line.split()[1] for line in out.splitlines() if len(line.split()) > 1 and line[:2] == " A")


def require(names) -> None:
    """Check that ffmpeg and the encoder of every codec in ``names`` exist; name the package to install."""
    wanted = [CODECS[n] for n in names if n in CODECS]
    if not wanted:
        return
    if shutil.which(FFMPEG) is None:
        raise ConfigError(
            f"degradations {', '.join(n for n in names if n in CODECS)} need the ffmpeg command: install the "
            "Debian package ffmpeg (scripts/setup_engines.sh does, or: apt-get install ffmpeg)"
        )
    have = _encoders()
    for name in names:
        codec = CODECS.get(name)
        if codec and codec.encoder not in have:
            raise ConfigError(
                f"degradation {name!r} needs ffmpeg's {codec.encoder} encoder, which this ffmpeg lacks: install "
                f"the Debian package {codec.package} (apt-get install {codec.package})"
            )


def encode_many(waves, sample_rate: int, name: str, paths) -> list[Path]:
    """Encode each float32 clip of ``waves`` with codec ``name`` into its path of ``paths`` (the codec's file).

    One ffmpeg process serves all clips (its start-up dominates a short clip's cost), one independent
    encoder per output, so each file is exactly what encoding its clip alone gives.
    """
    codec = CODECS[name]
    raw = [Path(p).with_suffix(".in.f32") for p in paths]
    cmd = list(_QUIET)
    for wave, r in zip(waves, raw):
        r.write_bytes(np.ascontiguousarray(wave, dtype="<f4").tobytes())
        cmd += ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1", "-i", str(r)]
    for i, path in enumerate(paths):
        cmd += ["-map", f"{i}:a", "-ar", str(codec.rate), "-c:a", codec.encoder]
        cmd += (["-b:a", codec.bitrate] if codec.bitrate else []) + [*_EXACT, "-f", codec.fmt, str(path)]
    _run(cmd, name)
    for r in raw:
        r.unlink()
    return [Path(p) for p in paths]


def decode_many(paths, sample_rate: int, n_samples=None) -> list[np.ndarray]:
    """float32 mono samples of files ffmpeg reads, at ``sample_rate``; each trimmed/zero-padded to its length in
    ``n_samples`` (codec frames pad the end). One ffmpeg process for all of them."""
    outs = [Path(p).with_suffix(".out.f32") for p in paths]
    cmd = list(_QUIET) + [a for p in paths for a in ("-i", str(p))]
    for i, out in enumerate(outs):
        cmd += ["-map", f"{i}:a", "-f", "f32le", "-ac", "1", "-ar", str(sample_rate), str(out)]
    _run(cmd, ", ".join(map(str, paths[:3])))
    waves = []
    for i, out in enumerate(outs):
        wave = np.fromfile(out, dtype="<f4").astype(np.float32)
        out.unlink()
        if n_samples is not None:
            wave = np.pad(wave[: n_samples[i]], (0, max(0, n_samples[i] - len(wave))))
        waves.append(wave)
    return waves


def apply_codec(waves, sample_rate: int, name: str, workdir: str | Path) -> list[np.ndarray]:
    """Each clip of ``waves`` after a round trip through codec ``name`` (encoded files live in ``workdir``)."""
    paths = [Path(workdir) / f"clip{i}{CODECS[name].suffix}" for i in range(len(waves))]
    return decode_many(encode_many(waves, sample_rate, name, paths), sample_rate, [len(w) for w in waves])


def _run(cmd: list[str], what) -> None:
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed on {what}: {msg[-1] if msg else f'exit {proc.returncode}'}")
