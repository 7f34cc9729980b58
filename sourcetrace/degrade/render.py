"""Render degraded copies of audio files once, into an on-disk cache, deterministically for a seed.

A rendered clip is a 16-bit WAV at the project rate with exactly the decoded source's length, stored as
``CACHE/<degradation>/<key>.wav``; the key hashes (degradation, seed, the source's absolute path, size and
mtime, the rate) with the rule the wave-bank cache uses, so a changed source is rendered again and an
unchanged one never is. The random draws of a clip (its room, noise) come from (degradation, seed,
file name): the same corpus renders the same everywhere. Codecs run one ffmpeg process per chunk of
clips with an independent encoder per clip, so a clip renders the same alone or in any chunk. Files are
written atomically, so parallel renderers (Ray trials) at worst do the same work twice. ``CACHE`` is
``$SOURCETRACE_CACHE/degraded``, else ``~/.cache/sourcetrace/degraded``.

A chain (``amr_nb+replay``) is rendered from the decoded source through each part in turn, left to right,
in float (one 16-bit rounding, at the end); each part draws from its own generator, ``clip_rng(file,
part, seed)`` (a repeated part: ``part#2``, ...), so ``gain+band_8k`` is ``band_8k`` of the ``gain``
rendering up to that rounding. It is cached under its full name (``CACHE/amr_nb+replay/``).
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
from sourcetrace.degrade import BAND_8K, CHAIN, GAIN, REPLAY, chain_parts
from sourcetrace.degrade.codecs import apply_codec, require
from sourcetrace.degrade.level import band_8k, gain
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


CHUNK = 24  # clips per ffmpeg process


def degrade_waves(waves: list[np.ndarray], sample_rate: int, name: str, rngs) -> list[np.ndarray]:
    """Float32 clips through single degradation ``name`` (each keeps its length and rate)."""
    if name == REPLAY:
        return [replay(w, sample_rate, rng) for w, rng in zip(waves, rngs)]
    if name == GAIN:
        return [gain(w, rng) for w, rng in zip(waves, rngs)]
    if name == BAND_8K:
        return [band_8k(w, sample_rate) for w in waves]
    with tempfile.TemporaryDirectory(prefix="sourcetrace-codec-") as tmp:
        return apply_codec(waves, sample_rate, name, tmp)


def part_keys(name: str) -> list[tuple[str, str]]:
    """(degradation, generator key) of each part of chain ``name``: a part's key is its name, ``name#k`` for
    its k-th occurrence (k >= 2), so a chain's parts draw as they do alone."""
    out, seen = [], {}
    for part in name.split(CHAIN):
        seen[part] = seen.get(part, 0) + 1
        out.append((part, part if seen[part] == 1 else f"{part}#{seen[part]}"))
    return out


def degrade_chain(waves: list[np.ndarray], files: list[str], sample_rate: int, name: str, seed: int):
    """Float32 clips (decoded from ``files``) through chain ``name``, left to right."""
    for part, key in part_keys(name):
        waves = degrade_waves(waves, sample_rate, part, [clip_rng(f, key, seed) for f in files])
    return waves


def _render_chunk(files: list[str], name: str, seed: int, sample_rate: int, cache_dir: Path) -> list[str]:
    """Render the files of one chunk that are not cached yet; returns the problems (one per bad file)."""
    todo, waves, problems = [], [], []
    for f in files:
        if rendered_path(f, name, seed, sample_rate, cache_dir).is_file():
            continue
        try:
            waves.append(decode(f, sample_rate, "float32"))
            todo.append(f)
        except AudioError as err:
            problems.append(str(err))
    if not todo:
        return problems
    try:
        degraded = degrade_chain(waves, todo, sample_rate, name, seed)
    except RuntimeError as err:
        return problems + [f"{todo[0]} (and {len(todo) - 1} more): cannot render {name}: {err}"]
    for f, wave in zip(todo, degraded):
        out = rendered_path(f, name, seed, sample_rate, cache_dir)
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.", suffix=".wav")
        os.close(fd)
        sf.write(tmp, to_int16(wave), sample_rate, subtype="PCM_16", format="WAV")
        os.chmod(tmp, 0o644)
        os.replace(tmp, out)
    return problems


def render_files(
    files: Sequence[str | os.PathLike],
    name: str,
    seed: int = 0,
    sample_rate: int = 16000,
    cache_dir: str | os.PathLike | None = None,
    workers: int = 0,
    progress: bool = False,
) -> list[str]:
    """Paths of the renderings of ``files`` (in order) under degradation or chain ``name`` (``amr_nb+replay``);
    one error lists every bad file.

    Files not cached yet are rendered in chunks of ``CHUNK`` (one ffmpeg process per chunk), chunks in parallel.
    """
    name = CHAIN.join(chain_parts(name))
    require(name.split(CHAIN))
    cache = Path(cache_dir) if cache_dir else cache_root()
    files = [os.fspath(f) for f in files]
    todo = [f for f in files if not rendered_path(f, name, seed, sample_rate, cache).is_file()]
    chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]

    def render(chunk: list[str]) -> list[str]:
        return _render_chunk(chunk, name, seed, sample_rate, cache)

    done = thread_map(render, chunks, workers, progress and bool(chunks), f"{name} (chunks of {CHUNK})")
    problems = [p for chunk in done for p in chunk]
    if problems:
        raise _many(problems, len(files))
    return [str(rendered_path(f, name, seed, sample_rate, cache)) for f in files]


def with_renderings(table, names: Sequence[str], seed: int = 0, sample_rate: int = 16000):
    """A protocol table (column ``degradation`` = "clean") followed by a copy per rendering in ``names``, its
    files the rendered clips (rendered once, cached): a split scored under those conditions too."""
    import pandas as pd

    parts = [table.assign(degradation="clean")]
    for name in names:
        parts.append(table.assign(file=render_files(list(table["file"]), name, seed, sample_rate), degradation=name))
    return pd.concat(parts, ignore_index=True)
