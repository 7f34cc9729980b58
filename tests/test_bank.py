"""WaveBank: lossless int16 bank of real clips, crops (shapes, wrap-pad, determinism), mmap cache, errors."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from mlaad_fixture import write_empty, write_junk, write_tone

import sourcetrace.data.bank as bank_module
from sourcetrace.data.audio import load_audio
from sourcetrace.data.bank import WaveBank
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import AudioError


@pytest.fixture(scope="module")
def files(mlaad_corpus):
    return list(read_protocol(mlaad_corpus).tables["eval"]["file"])


@pytest.fixture(scope="module")
def bank(files):
    return WaveBank.load(files, workers=2)


def _start_of(crop: np.ndarray, clip: np.ndarray) -> int:
    """Where ``crop`` sits inside ``clip`` (asserts it is one contiguous window)."""
    n = len(crop)
    cands = [s for s in range(len(clip) - n + 1) if clip[s] == crop[0] and np.array_equal(clip[s : s + 8], crop[:8])]
    hits = [s for s in cands if np.array_equal(clip[s : s + n], crop)]
    assert hits, "crop is not a window of its clip"
    return hits[0]


def test_bank_holds_every_clip_losslessly(bank, files):
    assert len(bank) == len(files) == 16 and bank.data.dtype == np.int16
    assert bank.offsets[0] == 0 and bank.offsets[-1] + bank.lengths[-1] == len(bank.data)
    for i in (0, 7, 15):
        clip = bank.clip(i)
        assert clip.dtype.is_floating_point and clip.ndim == 1
        np.testing.assert_array_equal(clip.numpy(), load_audio(files[i]))  # 16-bit FLAC: exact


def test_random_crops_are_windows_with_uniform_starts(bank):
    rng = np.random.default_rng(0)
    idx = np.array([0, 3, 3, 9, 15])
    crops = bank.random_crops(idx, 32000, rng)
    assert crops.shape == (5, 32000) and crops.dtype.is_floating_point and crops.abs().max() <= 1.0
    for row, i in enumerate(idx):
        start = _start_of(crops[row].numpy(), bank.clip(int(i)).numpy())
        assert 0 <= start <= bank.lengths[i] - 32000
    n = int(bank.lengths[2]) - 4  # 5 possible starts: all drawn, first and last included
    crops = bank.random_crops(np.full(400, 2), n, np.random.default_rng(1)).numpy()
    clip = bank.clip(2).numpy()
    starts = {_start_of(c, clip) for c in crops[:60]}
    assert starts == {0, 1, 2, 3, 4}


def test_random_crops_are_deterministic_per_seed(bank):
    idx = np.arange(16)
    a = bank.random_crops(idx, 16000, np.random.default_rng(42))
    b = bank.random_crops(idx, 16000, np.random.default_rng(42))
    c = bank.random_crops(idx, 16000, np.random.default_rng(43))
    assert a.equal(b) and not a.equal(c)


def test_short_clips_are_wrap_padded(bank):
    n = int(bank.lengths.max()) + 20000
    clip = bank.clip(4).numpy()
    expected = np.resize(clip, n)  # the clip repeated from its start, as voxceleb_trainer's loadWAV
    rnd = bank.random_crops([4, 4], n, np.random.default_rng(0))
    cen = bank.center_crops([4], n)
    assert rnd.shape == (2, n) and cen.shape == (1, n)
    np.testing.assert_array_equal(rnd[0].numpy(), expected)
    np.testing.assert_array_equal(cen[0].numpy(), expected)
    assert set(bank.short_clips(n).tolist()) == set(range(16))
    assert bank.short_clips(int(bank.lengths.min())).size == 0
    assert bank.short_clips(int(bank.lengths.min()) + 1).tolist() == [int(np.argmin(bank.lengths))]


def test_center_crops(bank):
    crops = bank.center_crops(np.array([1, 5]), 16000)
    for row, i in enumerate((1, 5)):
        start = (int(bank.lengths[i]) - 16000) // 2
        np.testing.assert_array_equal(crops[row].numpy(), bank.clip(i).numpy()[start : start + 16000])
    waves = [np.sin(np.arange(800) / (k + 3)).astype(np.float32) * 0.5 for k in range(3)]
    equal = WaveBank.from_arrays(waves)
    assert equal.center_crops([0, 2], 0).shape == (2, 800)  # 0 = full length when all lengths agree
    with pytest.raises(ValueError, match="needs clips of one length"):
        bank.center_crops([0, 1], 0)


def test_parallel_decode_matches_serial(files, bank):
    serial = WaveBank.load(files, workers=1)
    np.testing.assert_array_equal(serial.data, bank.data)
    np.testing.assert_array_equal(serial.offsets, bank.offsets)


def test_trials_starting_together_decode_the_cache_once(files, bank, tmp_path, monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    decoded, real = [], bank_module.decode
    monkeypatch.setattr(bank_module, "decode", lambda f, *a, **k: decoded.append(f) or real(f, *a, **k))
    with ThreadPoolExecutor(3) as pool:  # three trials of one node, one lock file between them
        banks = list(pool.map(lambda _: WaveBank.load(files[:8], cache_dir=tmp_path), range(3)))
    assert sorted(decoded) == sorted(files[:8])  # every file once: the others waited, then mapped the cache
    assert all(isinstance(b.data, np.memmap) and np.array_equal(b.data, banks[0].data) for b in banks)


def test_cache_round_trip_is_memory_mapped(files, bank, tmp_path, monkeypatch):
    cached = WaveBank.load(files, cache_dir=tmp_path)
    assert isinstance(cached.data, np.memmap) and cached.data.mode == "r"
    entries = sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock")  # beside them: the build lock
    assert len(entries) == 2 and entries[0].endswith(".data.npy") and entries[1].endswith(".offsets.npy")
    np.testing.assert_array_equal(cached.data, bank.data)

    def no_decode(*args, **kwargs):
        raise AssertionError("a cache hit must not decode")

    monkeypatch.setattr(bank_module, "decode", no_decode)
    again = WaveBank.load(files, cache_dir=tmp_path)
    assert isinstance(again.data, np.memmap)
    rng = np.random.default_rng(5)
    assert again.random_crops(np.arange(16), 24000, rng).equal(
        bank.random_crops(np.arange(16), 24000, np.random.default_rng(5))
    )
    assert again.center_crops(np.arange(16), 80000).equal(bank.center_crops(np.arange(16), 80000))
    monkeypatch.undo()
    mine = [shutil.copy(f, tmp_path / f"{i}.flac") for i, f in enumerate(files[:3])]
    WaveBank.load(mine, cache_dir=tmp_path / "c2")
    os.utime(mine[0], ns=(1, 1))  # a changed file is a new cache key
    WaveBank.load(mine, cache_dir=tmp_path / "c2")
    assert len(list((tmp_path / "c2").glob("*.data.npy"))) == 2


def test_every_bad_file_is_listed_in_one_error(files, tmp_path):
    bad = {
        "missing": tmp_path / "missing.wav",
        "junk": write_junk(tmp_path / "junk.wav"),
        "empty": write_empty(tmp_path / "empty.wav"),
        "zeros": write_tone(tmp_path / "zeros.wav", amplitude=0.0),
        "stereo": write_tone(tmp_path / "stereo.wav", channels=2),
        "low": write_tone(tmp_path / "low.wav", sample_rate=8000),
    }
    cache = tmp_path / "cache"
    with pytest.raises(AudioError) as err:
        WaveBank.load(files[:3] + [str(p) for p in bad.values()], cache_dir=cache)
    msg = str(err.value)
    assert msg.startswith("6 of 9 audio files cannot be used:\n")
    order = [line.split(": ")[0].rsplit("/", 1)[-1] for line in msg.splitlines()[1:]]
    assert order == [p.name for p in bad.values()]  # in the order the files were given
    for expected in (
        "missing.wav: file does not exist",
        "junk.wav: unreadable or corrupt audio file",
        "empty.wav: empty audio file (0 frames)",
        "zeros.wav: all samples are zero",
        "stereo.wav: 2 channels, but clips must be mono",
        "low.wav: sample rate 8000 Hz is below the target 16000 Hz",
    ):
        assert expected in msg, expected
    assert not cache.exists() or not list(cache.iterdir())  # nothing half-written


def test_resampled_sources_and_from_arrays(tmp_path):
    a = write_tone(tmp_path / "a.wav", seconds=0.5, sample_rate=22050, amplitude=0.3)
    b = write_tone(tmp_path / "b.wav", seconds=1.0, sample_rate=48000, amplitude=0.3)
    bank = WaveBank.load([a, b])
    assert bank.lengths.tolist() == [8000, 16000]
    np.testing.assert_allclose(bank.clip(1).numpy(), load_audio(b), atol=0.5 / 32768 + 1e-7)
    mem = WaveBank.from_arrays([load_audio(a), load_audio(b)])
    np.testing.assert_array_equal(mem.data, bank.data)


def test_decoding_leaves_the_callers_torch_threads_alone(files):
    import torch

    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        WaveBank.load(files[:4], workers=3)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
