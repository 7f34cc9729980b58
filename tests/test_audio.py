"""Audio layer: real espeak-ng clips decode and resample; every bad file is an AudioError saying why."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio
from mlaad_fixture import write_empty, write_junk, write_tone

from sourcetrace.data.audio import (
    SILENCE_PEAK,
    _kernel,
    decode,
    load_audio,
    probe_audio,
    resample,
    resampled_length,
)
from sourcetrace.errors import AudioError


@pytest.fixture(scope="module")
def espeak_wav(tmp_path_factory):
    """espeak-ng's native output: 22.05 kHz mono 16-bit WAV."""
    path = tmp_path_factory.mktemp("espeak") / "hello.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(path), "Hello, this is a test of the audio layer."], check=True)
    return path


def test_probe_reads_the_header(espeak_wav):
    info = probe_audio(espeak_wav)
    assert (info.sample_rate, info.channels, info.subtype, info.format) == (22050, 1, "PCM_16", "WAV")
    assert info.frames > 22050 and info.duration == pytest.approx(info.frames / 22050)


def test_load_resamples_with_torchaudio(espeak_wav):
    native, rate = sf.read(str(espeak_wav), dtype="float32")
    wave = load_audio(espeak_wav, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert len(wave) == resampled_length(len(native), rate, 16000)
    expected = torchaudio.functional.resample(torch.from_numpy(native), rate, 16000).numpy()
    np.testing.assert_allclose(wave, expected, atol=1e-5)
    assert _kernel(rate, 16000) is _kernel(rate, 16000)  # kernel built once per rate pair


def test_native_rate_is_read_exactly_and_int16_is_lossless(espeak_wav, tmp_path):
    clip = tmp_path / "c.flac"
    subprocess.run(["sox", str(espeak_wav), "-r", "16000", str(clip)], check=True)
    as_float = load_audio(clip)
    as_int = decode(clip, 16000, "int16")
    assert as_int.dtype == np.int16
    np.testing.assert_array_equal(as_float, sf.read(str(clip), dtype="float32")[0])
    np.testing.assert_array_equal(as_int.astype(np.float32) / 32768, as_float)
    higher = decode(espeak_wav, 16000, "int16")  # resampled, then quantised
    assert higher.dtype == np.int16 and np.abs(higher / 32768 - load_audio(espeak_wav)).max() <= 0.5 / 32768 + 1e-7


# -- every bad input, with the message it produces -----------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match=r"gone\.wav: file does not exist$"):
        load_audio(tmp_path / "gone.wav")


def test_corrupt_file(tmp_path):
    junk = write_junk(tmp_path / "junk.wav")
    with pytest.raises(AudioError, match=r"junk\.wav: unreadable or corrupt audio file \(Format not recognised"):
        load_audio(junk)
    with pytest.raises(AudioError, match="unreadable or corrupt"):
        probe_audio(junk)


def test_empty_file(tmp_path):
    with pytest.raises(AudioError, match=r"empty\.wav: empty audio file \(0 frames\)"):
        load_audio(write_empty(tmp_path / "empty.wav"))


def test_all_zeros(tmp_path):
    with pytest.raises(AudioError, match=r"zeros\.wav: all samples are zero \(digital silence\)"):
        load_audio(write_tone(tmp_path / "zeros.wav", amplitude=0.0))


def test_near_silent(tmp_path):
    quiet = write_tone(tmp_path / "quiet.wav", amplitude=SILENCE_PEAK / 4)
    with pytest.raises(
        AudioError, match=r"quiet\.wav: silent: peak 0.0002\d \(-7\d dBFS\) is below 0.001 \(-60 dBFS\)"
    ):
        load_audio(quiet)
    assert load_audio(write_tone(tmp_path / "soft.wav", amplitude=SILENCE_PEAK * 4)).size == 16000


def test_stereo_says_how_to_fix(tmp_path):
    with pytest.raises(
        AudioError, match=r"stereo\.wav: 2 channels, but clips must be mono .* `sox in\.wav -c 1 out\.wav`"
    ):
        load_audio(write_tone(tmp_path / "stereo.wav", channels=2))


def test_low_sample_rate(tmp_path):
    low = write_tone(tmp_path / "low.wav", sample_rate=8000)
    with pytest.raises(AudioError, match=r"low\.wav: sample rate 8000 Hz is below the target 16000 Hz; upsampling"):
        load_audio(low)
    assert len(load_audio(low, sample_rate=8000)) == 8000  # fine where 8 kHz is the target


def test_non_finite_float_samples(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.full(1600, 0.1, np.float32)
    x[7] = np.nan
    sf.write(str(path), x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"nan\.wav: contains NaN or infinite samples"):
        load_audio(path)


@pytest.mark.parametrize("orig", [22050, 24000, 44100, 48000])
def test_resample_equals_torchaudio(orig):
    x = np.random.default_rng(orig).standard_normal(orig // 3).astype(np.float32) * 0.1
    expected = torchaudio.functional.resample(torch.from_numpy(x), orig, 16000).numpy()
    np.testing.assert_allclose(resample(x, orig, 16000), expected, atol=1e-5)  # kernel in float32 vs float64


@pytest.mark.parametrize(
    "frames,orig,new", [(21289, 22050, 16000), (48000, 48000, 16000), (1, 44100, 16000), (5, 16000, 16000)]
)
def test_resampled_length_matches_torchaudio(frames, orig, new):
    out = torchaudio.functional.resample(torch.zeros(frames), orig, new)
    assert resampled_length(frames, orig, new) == out.shape[-1]


def test_clips_as_they_arrive_are_mixed_down_and_resampled_and_say_so(tmp_path):
    """``read_as_it_comes`` (trace's reader): a stereo or 8 kHz clip is read, not refused, with a note for each
    change; ``strict`` keeps the corpus's refusal; other problems stay errors."""
    from sourcetrace.data.audio import read_as_it_comes

    mono = write_tone(tmp_path / "mono.wav", amplitude=0.5)
    wave, notes = read_as_it_comes(mono, 16000)
    assert notes == [] and np.array_equal(wave, load_audio(mono))
    stereo = tmp_path / "stereo.wav"
    t = np.arange(16000) / 16000
    left, right = 0.4 * np.sin(2 * np.pi * 440 * t), 0.2 * np.sin(2 * np.pi * 440 * t)
    sf.write(stereo, np.stack([left, right], 1), 16000, subtype="PCM_16")
    wave, notes = read_as_it_comes(stereo, 16000)
    assert notes == ["mixed down from 2 channels"]
    np.testing.assert_allclose(wave, (left + right) / 2, atol=1e-4)
    low = write_tone(tmp_path / "phone.wav", sample_rate=8000)
    wave, notes = read_as_it_comes(low, 16000)
    assert len(wave) == 16000 and notes == [
        "narrow-band: recorded at 8000 Hz, resampled to 16000 Hz (nothing above 4000 Hz)"
    ]
    spectrum = np.abs(np.fft.rfft(wave))
    assert spectrum[4100:].max() < 1e-3 * spectrum.max()  # upsampling invents nothing above 4 kHz
    with pytest.raises(AudioError, match="2 channels, but clips must be mono"):
        read_as_it_comes(stereo, 16000, strict=True)
    with pytest.raises(AudioError, match="sample rate 8000 Hz is below the target"):
        read_as_it_comes(low, 16000, strict=True)
    with pytest.raises(AudioError, match="digital silence"):
        read_as_it_comes(write_tone(tmp_path / "zero.wav", amplitude=0.0), 16000)


def test_a_folder_a_device_or_a_pipe_is_not_called_missing(tmp_path):
    import os

    fifo = tmp_path / "pipe.wav"
    os.mkfifo(fifo)
    for path in (tmp_path, "/dev/zero", fifo):
        with pytest.raises(AudioError, match="is not a regular file"):
            load_audio(path)
    with pytest.raises(AudioError, match="file does not exist"):
        load_audio(tmp_path / "missing.wav")
