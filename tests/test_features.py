"""Log-Mel front end: shape, fp32 under autocast, instance norm, agreement with the voxceleb_trainer recipe."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
import torch.nn.functional as F
import torchaudio

from sourcetrace.config import Config, FeaturesConfig
from sourcetrace.errors import ConfigError
from sourcetrace.features import LEVEL_RMS_DBFS, LogMelFbank, PreEmphasis, set_level


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def reference(wave: torch.Tensor, cfg: FeaturesConfig, norm: bool = True) -> torch.Tensor:
    """voxceleb_trainer's torchfb: PreEmphasis conv, MelSpectrogram, log(x + 1e-6), InstanceNorm1d."""
    x = F.pad(wave.unsqueeze(1), (1, 0), "reflect")
    x = F.conv1d(x, torch.tensor([[[-0.97, 1.0]]])).squeeze(1)
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=16000,
        n_fft=cfg.n_fft,
        win_length=cfg.win_length,
        hop_length=cfg.hop_length,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        n_mels=cfg.n_mels,
        window_fn=torch.hamming_window,
    )
    x = (mel(x) + 1e-6).log()
    return torch.nn.InstanceNorm1d(cfg.n_mels)(x) if norm else x


@pytest.mark.parametrize("samples", [32000, 16000 * 6 + 37, 400])
def test_shape_and_agreement_with_voxceleb_trainer_recipe(samples):
    cfg = FeaturesConfig(level="none")  # voxceleb_trainer feeds the waveform as it comes
    wave = torch.randn(3, samples)
    out = LogMelFbank(cfg)(wave)
    assert out.shape == (3, 40, samples // 160 + 1) and out.dtype == torch.float32
    torch.testing.assert_close(out, reference(wave, cfg), atol=1e-4, rtol=1e-4)


def test_instance_norm_per_utterance_and_mel_bin():
    wave = torch.randn(4, 32000) * torch.tensor([[0.01], [0.1], [1.0], [10.0]])
    out = LogMelFbank(FeaturesConfig())(wave)
    torch.testing.assert_close(out.mean(dim=2), torch.zeros(4, 40), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(dim=2, unbiased=False), torch.ones(4, 40), atol=1e-3, rtol=0)
    # gain invariance (well above the 1e-6 floor): a louder copy gives the same normalised features
    torch.testing.assert_close(out[2], LogMelFbank(FeaturesConfig())(wave[2:3] * 50)[0], atol=1e-3, rtol=1e-3)


def test_without_instance_norm_is_the_plain_log_mel():
    cfg = dataclasses.replace(FeaturesConfig(), instance_norm=False, level="none")
    wave = torch.randn(2, 16000)
    torch.testing.assert_close(LogMelFbank(cfg)(wave), reference(wave, cfg, norm=False), atol=1e-4, rtol=1e-4)


def test_the_input_level_is_set_inside_the_front_end_so_any_gain_gives_the_same_features():
    """features.level=rms (the default): each row is brought to one RMS level before the log-Mel, so without
    instance norm (the demo's front end, whose log-Mel carries the level) a clip at any gain in [-40, 0] dB
    gives the same features; level=none keeps the level (and the voxceleb_trainer recipe) as it was."""
    cfg = dataclasses.replace(FeaturesConfig(), instance_norm=False)
    wave = torch.randn(3, 16000) * torch.tensor([[0.3], [0.05], [1.0]])
    fb = LogMelFbank(cfg)
    plain = reference(set_level(wave), cfg, norm=False)
    torch.testing.assert_close(fb(wave), plain, atol=1e-4, rtol=1e-4)
    rms = set_level(wave).pow(2).mean(-1).sqrt()
    torch.testing.assert_close(20 * rms.log10(), torch.full((3,), LEVEL_RMS_DBFS), atol=1e-4, rtol=0)
    for db in (-40.0, -23.5, -6.0, 0.0):
        torch.testing.assert_close(fb(wave * 10 ** (db / 20)), fb(wave), atol=1e-4, rtol=1e-4)
    raw = LogMelFbank(dataclasses.replace(cfg, level="none"))
    assert (raw(wave * 0.01) - raw(wave)).abs().mean() > 1.0  # the level reaches an unlevelled log-Mel
    silent = torch.zeros(1, 16000)
    assert torch.equal(set_level(silent), silent)  # digital silence is not blown up


def test_stored_configs_from_before_the_level_key_keep_their_unlevelled_input():
    old = {k: v for k, v in Config().to_flat().items() if k != "features.level"}
    assert Config.stored(old).features.level == "none"  # the model was trained on raw levels
    assert Config.from_json(json.dumps(old)).features.level == "none"
    assert Config.from_dict({}).features.level == "rms"  # a new config levels its input
    assert Config.stored(Config().to_flat()).features.level == "rms"
    with pytest.raises(ConfigError, match="features.level='peak' is not one of rms, none"):
        Config.from_dict({"features.level": "peak"}).check_ranges()


def test_batched_equals_one_by_one():
    fb, wave = LogMelFbank(FeaturesConfig()), torch.randn(5, 24000)
    torch.testing.assert_close(fb(wave), torch.cat([fb(w[None]) for w in wave]), atol=1e-5, rtol=1e-5)


def test_fp32_inside_bf16_autocast_and_for_half_input():
    fb, wave = LogMelFbank(FeaturesConfig()), torch.randn(2, 32000)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fb(wave)
        out_half_in = fb(wave.bfloat16())
    assert out.dtype == out_half_in.dtype == torch.float32
    torch.testing.assert_close(out, fb(wave))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_fp32_under_fp16_autocast_matches_cpu():
    fb, wave = LogMelFbank(FeaturesConfig()), torch.randn(2, 32000)
    expected = fb(wave)
    fb = fb.cuda()
    with torch.autocast("cuda", dtype=torch.float16):
        out = fb(wave.cuda())
    assert out.device.type == "cuda" and out.dtype == torch.float32
    torch.testing.assert_close(out.cpu(), expected, atol=1e-3, rtol=1e-3)


def test_pre_emphasis_formula_and_no_parameters():
    wave = torch.randn(2, 100)
    y = PreEmphasis(0.97)(wave)
    torch.testing.assert_close(y[:, 1:], wave[:, 1:] - 0.97 * wave[:, :-1])
    torch.testing.assert_close(y[:, 0], wave[:, 0] - 0.97 * wave[:, 1])  # reflected first sample
    assert not list(LogMelFbank(FeaturesConfig()).parameters())
    assert not LogMelFbank(FeaturesConfig())(wave.repeat(1, 10)).requires_grad


def test_other_mel_counts_and_bad_input():
    cfg = dataclasses.replace(FeaturesConfig(), n_mels=64)
    assert LogMelFbank(cfg)(torch.randn(1, 8000)).shape == (1, 64, 51)
    with pytest.raises(ValueError, match=r"waveform batch \[B, T\]"):
        LogMelFbank(FeaturesConfig())(torch.randn(8000))
