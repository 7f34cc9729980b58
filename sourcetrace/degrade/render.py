"""Render degraded copies of audio files once, into an on-disk cache, deterministically for a seed.

A rendered clip is a 16-bit WAV at the project rate with exactly the decoded source's length, stored as
``CACHE/<degradation>/<key>.wav``; the key hashes (degradation, seed, the source's absolute path, size and
mtime, the rate) with the rule the wave-bank cache uses, so a changed source is rendered again and an
unchanged one never is. The random draws of a clip (its room, noise) come from (degradation, seed,
file name): the same corpus renders the same everywhere. Files are written atomically, so parallel
renderers (Ray trials) at worst do the same work twice. ``CACHE`` is ``$SOURCETRACE_CACHE/degraded``,
else ``~/.cache/sourcetrace/degraded``.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile as sf

from sourcetrace.data.audio import decode, to_int16
from sourcetrace.data.bank import _many, bank_key, thread_map
from sourcetrace.degrade import REPLAY, check_names
from sourcetrace.degrade.codecs import apply_codec, require
from sourcetrace.degrade.replay import replay
from sourcetrace.errors import AudioError

_VERSION = 1


def cache_root() -> Path:
    base = os.environ.get("SOURCETRACE_CACHE")
    return Path(base) / "degraded" if base else Path.home() / ".cache" / "sourcetrace" / "degraded"


def rendered_path(file: str | os.PathLike, name: str, seed: int, sample_rate: int, cache_dir: Path) -> Path:
    key = hashlib.sha1(f"v{_VERSION}:{name}:{seed}:{bank_key([os.fspath(file)], sample_rate)}".encode())
    return Path(cache_dir) / name / f"{key.hexdigest()[:24]}.wav"


def clip_rng(file: str | os.PathLike, name: str, seed: int) -> np.random.Generator:
    digest = hashlib.sha1(f"{name}\t{seed}\t{os.path.basename(os.fspath(file))}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def degrade_wave(wave: np.ndarray, sample_rate: int, name: str, rng: np.random.Generator) -> np.ndarray:
    """One float32 clip through degradation ``name`` (same length and rate)."""
    if name == REPLAY:
        return replay(wave, sample_rate, rng)
    with tempfile.TemporaryDirectory(prefix="sourcetrace-codec-") as tmp:
        return apply_codec(wave, sample_rate, name, tmp)


def render_one(file: str | os.PathLike, name: str, seed: int, sample_rate: int, cache_dir: Path) -> Path:
    """The cached rendering of ``file`` under ``name`` (rendered now if absent)."""
    out = rendered_path(file, name, seed, sample_rate, cache_dir)
    if out.is_file():
        return out
    wave = decode(file, sample_rate, "float32")
    try:
        degraded = degrade_wave(wave, sample_rate, name, clip_rng(file, name, seed))
    except RuntimeError as err:
        raise AudioError(f"{file}: cannot render {name}: {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".wav")
    os.close(fd)
    sf.write(tmp, to_int16(degraded), sample_rate, subtype="PCM_16", format="WAV")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def render_files(
    files: Sequence[str | os.PathLike],
    name: str,
    seed: int = 0,
    sample_rate: int = 16000,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = False,
) -> list[str]:
    """Paths of the renderings of ``files`` (in order) under degradation ``name``; one error lists every bad file."""
    check_names([name])
    require([name])
    cache = Path(cache_dir) if cache_dir else cache_root()

    def one(f):
        try:
            return str(render_one(f, name, seed, sample_rate, cache)), None
        except AudioError as err:
            return None, str(err)

    results = thread_map(one, list(files), workers, progress, f"render {name}")
    problems = [err for _, err in results if err]
    if problems:
        raise _many(problems, len(files))
    return [path for path, _ in results]
