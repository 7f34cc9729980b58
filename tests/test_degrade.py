"""Degradations by the real encoders (ffmpeg) and simulated replay: what each does to a clip, caching, bad input."""

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.data.audio import load_audio
from sourcetrace.degrade import DEGRADATIONS, check_names, codecs
from sourcetrace.degrade.codecs import CODECS, decode_many, encode_many
from sourcetrace.degrade.render import render_files
from sourcetrace.errors import ConfigError

NARROWBAND = ("amr_nb", "gsm", "g711")  # coded at 8 kHz: nothing above 4 kHz survives


@pytest.fixture(scope="module")
def clips(mlaad_corpus):
    return sorted(str(p) for p in (mlaad_corpus / "fake").rglob("train_*.flac"))[:3]


def _above(wave: np.ndarray, hz: float, sr: int = 16000) -> float:
    """Spectral energy above ``hz``."""
    spec = np.abs(np.fft.rfft(wave)) ** 2
    return float(spec[np.fft.rfftfreq(len(wave), 1 / sr) > hz].sum())


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_each_degradation_keeps_rate_and_length_and_changes_the_clip(name, clips, tmp_path):
    out = render_files(clips, name, cache_dir=tmp_path)
    for src, dst in zip(clips, out):
        x, y = load_audio(src), load_audio(dst)
        info = sf.info(dst)
        assert info.samplerate == 16000 and info.channels == 1 and info.frames == len(x)
        assert not np.allclose(x, y, atol=1e-3)
        if name in NARROWBAND:  # the 8 kHz codec leaves < 5 % of the source's energy above 4.2 kHz
            assert _above(y, 4200) < 0.05 * _above(x, 4200)
        elif name != "replay":  # wideband codecs keep the speech: output correlates with the source
            assert np.corrcoef(x, y)[0, 1] > 0.8


@pytest.mark.parametrize("name, fmt, subtype", [("mp3_32", "MP3", "MPEG_LAYER_III"), ("opus_16", "OGG", "OPUS")])
def test_mp3_and_opus_files_are_real_and_decode(name, fmt, subtype, clips, tmp_path):
    x = load_audio(clips[0])
    [path] = encode_many([x], 16000, name, [tmp_path / f"c{CODECS[name].suffix}"])
    info = sf.info(str(path))  # libsndfile reads the encoder's file on its own
    assert (info.format, info.subtype) == (fmt, subtype)
    assert abs(info.duration - len(x) / 16000) < 0.1
    bits = 8 * path.stat().st_size / (len(x) / 16000)
    assert bits < 1.5 * int(CODECS[name].bitrate[:-1]) * 1000  # the bitrate the codec was asked for
    [y] = decode_many([path], 16000, [len(x)])
    assert len(y) == len(x)


def test_rendering_is_deterministic_cached_and_keyed_by_source_and_seed(clips, tmp_path):
    first = render_files(clips, "replay", seed=1, cache_dir=tmp_path / "a")
    again = render_files(clips, "replay", seed=1, cache_dir=tmp_path / "b")  # a fresh cache: same bytes
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in again]
    stamps = [os.stat(p).st_mtime_ns for p in first]
    assert render_files(clips, "replay", seed=1, cache_dir=tmp_path / "a") == first  # cached: not rewritten
    assert [os.stat(p).st_mtime_ns for p in first] == stamps
    other = render_files(clips, "replay", seed=2, cache_dir=tmp_path / "a")
    assert other != first and Path(other[0]).read_bytes() != Path(first[0]).read_bytes()
    mp3 = render_files(clips, "mp3_32", cache_dir=tmp_path / "a")
    one = render_files(clips[1:2], "mp3_32", cache_dir=tmp_path / "c")  # alone or in a chunk: the same
    assert Path(one[0]).read_bytes() == Path(mp3[1]).read_bytes()
    src = Path(tmp_path / "copy.flac")
    src.write_bytes(Path(clips[0]).read_bytes())
    [before] = render_files([src], "mp3_32", cache_dir=tmp_path / "a")
    os.utime(src, ns=(1, 1))  # a changed source is rendered again
    [after] = render_files([src], "mp3_32", cache_dir=tmp_path / "a")
    assert before != after


def test_unknown_degradation_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown degradation 'mp3_128'; valid degradations: amr_nb, g711"):
        check_names("mp3_32,mp3_128")


def test_missing_encoder_names_the_package(monkeypatch):
    # this machine has every encoder: stand in for an ffmpeg built without OpenCORE AMR, and for no ffmpeg at all
    monkeypatch.setattr(codecs, "_encoders", lambda: frozenset({"libmp3lame", "libopus"}))
    with pytest.raises(ConfigError, match="libopencore_amrnb encoder.*install the Debian package libavcodec-extra"):
        codecs.require(["mp3_32", "amr_nb"])
    codecs.require(["mp3_32", "replay"])
    monkeypatch.setattr(codecs.shutil, "which", lambda _: None)
    with pytest.raises(ConfigError, match="install the Debian package ffmpeg"):
        codecs.require(["opus_16"])
    codecs.require(["replay"])  # replay needs no encoder
