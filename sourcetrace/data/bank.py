"""Every clip of a split decoded once into one flat int16 array, cropped by numpy indexing.

int16 halves the memory of float32 and is lossless for 16-bit sources. Decoding runs in a thread pool
(soundfile releases the GIL) straight into a preallocated array sized from the file headers. With
``cache_dir`` the array is saved as ``.npy`` keyed by a hash of (files, sizes, mtimes, rate) and loaded
with ``mmap_mode="r"``, so several Ray trial processes on one node share the same pages.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from sourcetrace.data.audio import AudioInfo, check_header, decode, probe_audio, resampled_length, to_int16
from sourcetrace.errors import AudioError

_CACHE_VERSION = 1
_SCALE = 1.0 / 32768.0  # int16 full scale -> [-1, 1)


def default_workers() -> int:
    """Decoder threads: I/O- and libsndfile-bound, so twice the cores (at most 16)."""
    return min(16, 2 * (os.cpu_count() or 1))


def thread_map(fn, items, workers: int, progress: bool, desc: str) -> list:
    """``[fn(x) for x in items]`` in a thread pool (soundfile releases the GIL), optional tqdm bar on stderr.

    Each thread runs torch single-threaded (its resampling conv is tiny; torch's intra-op threads on top
    of the pool oversubscribed a busy 2-core machine 20-fold). torch's thread count is partly global, so
    the caller's is restored afterwards.
    """
    workers = workers or default_workers()
    saved = torch.get_num_threads()
    try:
        with ThreadPoolExecutor(max_workers=workers, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            results = pool.map(fn, items)
            if progress:
                from tqdm import tqdm

                results = tqdm(results, total=len(items), desc=desc, unit="clip", file=sys.stderr)
            return list(results)
    finally:
        torch.set_num_threads(saved)


def _capture(fn):
    """Wrap ``fn`` to return ``(value, None)`` or ``(None, AudioError message)``."""

    def run(x):
        try:
            return fn(x), None
        except AudioError as err:
            return None, str(err)

    return run


def probe_headers(files: Sequence[str | os.PathLike], workers: int = 0) -> list[tuple[AudioInfo | None, str | None]]:
    """Each file's header as ``(AudioInfo, None)``, or ``(None, problem)``, read in a thread pool."""
    return thread_map(_capture(probe_audio), [os.fspath(f) for f in files], workers, False, "probe")


def bank_key(files: Sequence[str], sample_rate: int) -> str:
    """Hash of (files, sizes, mtimes, rate): a cache entry is reused only for unchanged files."""
    h = hashlib.sha1(f"v{_CACHE_VERSION}:{sample_rate}:{len(files)}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"\n{os.path.abspath(f)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


class WaveBank:
    """Clips as one int16 array ``data`` with ``offsets``/``lengths`` (samples); crops are float32 in [-1, 1]."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, lengths: np.ndarray, sample_rate: int = 16000):
        self.data = data
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.lengths = np.asarray(lengths, dtype=np.int64)
        self.sample_rate = sample_rate

    # -- building -------------------------------------------------------------------------
    @classmethod
    def from_arrays(cls, waves: Sequence[np.ndarray], sample_rate: int = 16000) -> WaveBank:
        """A bank of in-memory clips (float in [-1, 1] or int16)."""
        waves = [w if w.dtype == np.int16 else to_int16(np.asarray(w, dtype=np.float32)) for w in waves]
        lengths = np.array([len(w) for w in waves], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        data = np.concatenate(waves) if waves else np.zeros(0, np.int16)
        return cls(data, offsets, lengths, sample_rate)

    @classmethod
    def load(
        cls,
        files: Sequence[str | os.PathLike],
        sample_rate: int = 16000,
        workers: int = 0,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = False,
        headers: Sequence[tuple[AudioInfo | None, str | None]] | None = None,
    ) -> WaveBank:
        """Decode ``files`` (or map a cached copy); one ``AudioError`` lists every bad file.

        ``headers``: the files' ``probe_headers``, when the caller has read them already.
        """
        files = [os.fspath(f) for f in files]
        key = bank_key(files, sample_rate) if cache_dir and all(os.path.isfile(f) for f in files) else None
        if not key:
            return cls._decode(files, sample_rate, workers, None, progress, headers)
        from filelock import FileLock

        base = Path(cache_dir) / f"wavebank-{key}"
        base.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(f"{base}.lock"):  # one decode per node: trials starting together wait, then map it
            if Path(f"{base}.offsets.npy").is_file() and Path(f"{base}.data.npy").is_file():
                return cls._from_cache(base, sample_rate)
            return cls._decode(files, sample_rate, workers, base, progress, headers)

    @classmethod
    def _decode(
        cls, files: list[str], sample_rate: int, workers: int, base: Path | None, progress: bool, headers=None
    ) -> WaveBank:
        """Decode every file (into the cache file ``base`` when given); one ``AudioError`` lists every bad file."""
        cache_dir = base.parent if base else None
        errors: dict[int, str] = {}  # file index -> problem, reported in file order
        lengths = np.zeros(len(files), dtype=np.int64)
        if headers is None or len(headers) != len(files):
            headers = probe_headers(files, workers)
        for i, (info, err) in enumerate(headers):
            try:
                if err:
                    raise AudioError(err)
                check_header(info, sample_rate)
                lengths[i] = resampled_length(info.frames, info.sample_rate, sample_rate)
            except AudioError as bad:
                errors[i] = str(bad)
        offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
        total, tmp = int(lengths.sum()), None
        if base and not errors:  # decode straight into the cache file: no second copy in memory
            Path(cache_dir).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f"{base.name}.", suffix=".tmp.npy")
            os.close(fd)
            os.chmod(tmp, 0o644)
            data = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(total,))
        else:
            data = np.empty(total, dtype=np.int16)

        def fill(i: int) -> None:
            wave = decode(files[i], sample_rate, "int16")
            if len(wave) != lengths[i]:
                raise AudioError(
                    f"{files[i]}: decoded {len(wave)} samples but the header promises {lengths[i]} "
                    "(truncated or corrupt file)"
                )
            data[offsets[i] : offsets[i] + lengths[i]] = wave

        todo = [i for i in range(len(files)) if i not in errors]  # decode all of them: list EVERY problem
        for i, (_, err) in zip(todo, thread_map(_capture(fill), todo, workers, progress, "decode")):
            if err:
                errors[i] = err
        if errors:
            if tmp:
                del data
                os.unlink(tmp)
            raise _many([errors[i] for i in sorted(errors)], len(files))
        if tmp:
            data.flush()
            del data
            os.replace(tmp, f"{base}.data.npy")
            _save_atomic(f"{base}.offsets.npy", np.stack([offsets, lengths]))
            return cls._from_cache(base, sample_rate)
        return cls(data, offsets, lengths, sample_rate)

    @classmethod
    def _from_cache(cls, base: Path, sample_rate: int) -> WaveBank:
        data = np.load(f"{base}.data.npy", mmap_mode="r")
        offsets, lengths = np.load(f"{base}.offsets.npy")
        return cls(data, offsets, lengths, sample_rate)

    # -- reading --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def seconds(self) -> np.ndarray:
        return self.lengths / self.sample_rate

    def clip(self, i: int) -> torch.Tensor:
        """Clip ``i`` at full length, float32 [n]."""
        o, n = int(self.offsets[i]), int(self.lengths[i])
        return _to_float(np.asarray(self.data[o : o + n]))

    def short_clips(self, n_samples: int) -> np.ndarray:
        """Indices of clips shorter than ``n_samples``."""
        return np.flatnonzero(self.lengths < n_samples)

    def random_crops(self, idx, n_samples: int, rng: np.random.Generator) -> torch.Tensor:
        """float32 [B, n_samples]: uniform random start; shorter clips wrap-padded from their start."""
        idx = np.asarray(idx, dtype=np.int64)
        return self._gather(idx, self.crop_starts(idx, n_samples, rng), n_samples)

    def crop_starts(self, idx, n_samples: int, rng: np.random.Generator) -> np.ndarray:
        """The uniform random crop starts of ``random_crops`` (0 for clips shorter than the crop)."""
        room = np.maximum(self.lengths[np.asarray(idx, dtype=np.int64)] - n_samples + 1, 1)
        return np.floor(rng.random(len(room)) * room).astype(np.int64)

    def crops_at(self, idx, starts, n_samples: int) -> torch.Tensor:
        """float32 [B, n_samples] from the given starts, shorter clips wrap-padded (as ``random_crops``)."""
        return self._gather(np.asarray(idx, dtype=np.int64), np.asarray(starts, dtype=np.int64), n_samples)

    def center_crops(self, idx, n_samples: int) -> torch.Tensor:
        """float32 [B, n_samples]: centred window, shorter clips wrap-padded; 0 = full equal-length clips."""
        idx = np.asarray(idx, dtype=np.int64)
        lengths = self.lengths[idx]
        if n_samples == 0:
            if len(idx) and (lengths != lengths[0]).any():
                raise ValueError(
                    "center_crops(n_samples=0) needs clips of one length; got lengths "
                    f"{sorted(set(lengths.tolist()))[:5]}..."
                    " (pass a crop length, or take clips one by one with clip(i))"
                )
            n_samples = int(lengths[0]) if len(idx) else 0
        starts = np.maximum(lengths - n_samples, 0) // 2
        return self._gather(idx, starts, n_samples)

    def _gather(self, idx: np.ndarray, starts: np.ndarray, n: int) -> torch.Tensor:
        """Rows ``data[offset + start : offset + start + n]``: one fancy index over a sliding-window view for
        clips of at least n samples, a per-clip tile (no per-sample work) for the shorter ones."""
        if len(idx) and (self.lengths[idx] <= 0).any():
            raise ValueError("cannot crop an empty clip")
        out = np.empty((len(idx), n), dtype=np.int16)
        lengths = self.lengths[idx]
        long = lengths >= n
        if n and long.any():
            windows = sliding_window_view(self.data, n)
            out[long] = windows[self.offsets[idx[long]] + starts[long]]
        for row in np.flatnonzero(~long) if n else ():  # wrap-pad: the clip repeated from its start
            o, m = int(self.offsets[idx[row]]), int(lengths[row])
            out[row] = np.tile(self.data[o : o + m], -(-n // m))[:n]
        return _to_float(out)


def _to_float(a: np.ndarray) -> torch.Tensor:
    """int16 -> float32 / 32768 in numpy (torch's int16 cast is slower, and contends for threads)."""
    return torch.from_numpy(np.multiply(a, np.float32(_SCALE), dtype=np.float32))


def _save_atomic(path: str, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp.npy")
    with os.fdopen(fd, "wb") as fh:
        np.save(fh, array)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _many(problems: list[str], n_files: int) -> AudioError:
    return AudioError(f"{len(problems)} of {n_files} audio files cannot be used:\n  " + "\n  ".join(problems))
