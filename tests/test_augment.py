"""augment.* keys: validated before any compute, off by default, and drawing training crops from real renderings."""

import json
import math
from dataclasses import fields
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sourcetrace.config import Config
from sourcetrace.data.bank import WaveBank
from sourcetrace.degrade import DEGRADATIONS
from sourcetrace.degrade.config import AugmentConfig
from sourcetrace.errors import ConfigError
from sourcetrace.training.augment import train_crops
from sourcetrace.training.batches import Crops, EpochPlan
from sourcetrace.training.loop import train


def test_every_degradation_is_a_key_and_augmentation_is_off_by_default():
    assert set(DEGRADATIONS) <= {f.name for f in fields(AugmentConfig)}
    assert not Config().augment.active
    assert Config().to_flat()["augment.replay"] == 0.0


@pytest.mark.parametrize(
    "values, message",
    [
        ({"augment.mp3_32": 1.5}, r"augment.mp3_32=1.5 is not a probability"),
        ({"augment.noise": -0.1}, r"augment.noise=-0.1 is not a probability"),
        ({"augment.replay": 0.6, "augment.opus_16": 0.5}, r"augment.opus_16=0.5, augment.replay=0.6 must sum to <= 1"),
        ({"augment.noise_snr_min": 30, "augment.noise_snr_max": 10}, r"noise_snr_min=30.0 is above"),
    ],
)
def test_bad_augment_values_are_config_errors(values, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_dict(values).check_ranges()


def test_unknown_augment_key_lists_the_section():
    with pytest.raises(ConfigError, match="unknown config key 'augment.mp3_128'; keys of section 'augment': amr_nb"):
        Config.from_dict({"augment.mp3_128": 0.1})


@pytest.fixture(scope="module")
def split(mlaad_corpus):
    files = sorted(str(p) for p in (mlaad_corpus / "fake").rglob("train_*.flac"))[:6]
    return SimpleNamespace(table=pd.DataFrame({"file": files}), bank=WaveBank.load(files))


def _batch(crops, seed=0):
    """One planned step of all 6 clips, crops longer than every clip: each starts at 0 (wrap-padded), so rows
    compare across sources."""
    n = 10 * 16000
    rng = np.random.default_rng(seed)
    idx = np.arange(6)
    plan = EpochPlan(idx, crops.bank.crop_starts(idx, n, rng), np.array([0, 6]))
    crops.begin_epoch(rng)
    return crops.batch(plan, crops.upload(plan), 0)[0]


def _crops(split, cfg):
    return train_crops(cfg, split, np.zeros(6, dtype=np.int64), 10 * 16000, torch.device("cpu"))


def test_augmentation_changes_the_training_batch(split, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path))
    plain = _crops(split, Config())
    assert type(plain) is Crops  # off: the clean bank's crops, untouched
    clean = _batch(plain)
    assert torch_equal(clean, split.bank.random_crops(np.arange(6), 10 * 16000, np.random.default_rng(0)))
    mp3 = _crops(split, Config.from_dict({"augment.mp3_32": 1.0}))
    a, b = _batch(mp3), _batch(mp3)
    assert torch_equal(a, b) and a.shape == clean.shape  # reproducible from the trainer's generator
    assert not torch_equal(a, clean) and (tmp_path / "degraded" / "mp3_32").is_dir()
    assert np.corrcoef(a.flatten(), clean.flatten())[0, 1] > 0.8  # the same crops, coded
    half = _batch(_crops(split, Config.from_dict({"augment.replay": 0.5})), seed=3)
    same = [torch_equal(r, c) for r, c in zip(half, _batch(plain, seed=3))]
    noisy = _batch(
        _crops(
            split,
            Config.from_dict({"augment.noise": 1.0, "augment.noise_snr_min": 10.0, "augment.noise_snr_max": 10.0}),
        )
    )
    snr = 10 * np.log10(clean.pow(2).mean(1) / (noisy - clean).pow(2).mean(1))
    assert np.allclose(snr, 10.0, atol=0.5)
    assert any(same) and not all(same)  # some clips replayed, the others clean (drawn per clip)


def test_augmented_batches_land_on_the_models_device(split, tmp_path, monkeypatch):
    """The batch is cut on the host but the model lives on the trial's device: the step gets both tensors
    there. ``meta`` stands in for a GPU (a device that is not the host's, present on every machine)."""
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path))
    cfg = Config.from_dict({"augment.replay": 0.5, "augment.noise": 0.5})
    device = torch.device("meta")
    crops = train_crops(cfg, split, np.zeros(6, dtype=np.int64), 10 * 16000, device)
    rng = np.random.default_rng(0)
    idx = np.arange(6)
    plan = EpochPlan(idx, crops.bank.crop_starts(idx, 10 * 16000, rng), np.array([0, 6]))
    crops.begin_epoch(rng)
    wave, target = crops.batch(plan, crops.upload(plan), 0)
    model = torch.nn.Linear(10 * 16000, 4, device=device)
    assert wave.device == target.device == next(model.parameters()).device
    assert model(wave).shape == (6, 4)  # the step's first op runs where the model is


def torch_equal(a, b) -> bool:
    return bool((a == b).all())


@pytest.mark.slow
def test_training_with_augmentation_trains_on_other_crops(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))
    quick = {
        "data.root": str(tiny_corpus),
        "train.epochs": 1,
        "train.steps_per_epoch": 2,
        "train.batch_size": 8,
        "train.eval_test": False,
        "model.embedding_dim": 16,
        "model.channels": 8,
        "data.crop_seconds": 1.0,
        "data.eval_seconds": 1.0,
        "data.short_clips": "pad",
        "data.max_clips_per_class": 2,  # few clips to render
    }
    plain = train(Config.from_dict(quick), tmp_path / "plain").history[0]["train_loss"]
    aug = train(Config.from_dict(quick | {"augment.amr_nb": 1.0}), tmp_path / "aug")
    assert aug.history[0]["train_loss"] != plain
    assert json.loads((tmp_path / "aug" / "config.json").read_text())["augment.amr_nb"] == 1.0


def test_band_eq_shifts_each_training_clip_by_a_gain_and_a_tilt_within_the_bound():
    """augment.band_eq_db: per clip, log-Mel + g + t * ramp (|g|, |t| <= a dB) while training; nothing at eval."""
    from sourcetrace.models import build_model

    a_db = 6.0
    model = build_model(Config.from_dict({"model.channels": 8, "augment.band_eq_db": a_db}))
    wave = torch.randn(1, 16000).repeat(64, 1)  # one clip, 64 times: the differences are the EQ's alone
    model.fbank.instance_norm = False  # the default norm would take the shift straight back out
    ref = model.eval().fbank(wave)
    shifted = model.train().fbank(wave) - ref  # [64, 40, frames]
    assert shifted.std(-1).max() < 1e-4  # the same shift in every frame
    band = shifted.mean(-1)  # [64, 40]: linear in the band index
    gain, tilt = band.mean(1), band[:, -1] - band[:, 0]
    torch.testing.assert_close(band, gain[:, None] + tilt[:, None] * torch.linspace(-0.5, 0.5, 40), atol=1e-4, rtol=0)
    bound = a_db * math.log(10) / 10
    assert gain.abs().max() <= bound and tilt.abs().max() <= bound
    assert gain.abs().max() > 0.7 * bound and gain.std() > 0.3 * bound  # drawn per clip over the whole range
    torch.testing.assert_close(model.eval().fbank(wave), ref)


def test_band_eq_is_validated_and_logged_as_a_used_param():
    from sourcetrace.validation import used_params, validate

    with pytest.raises(ConfigError, match=r"augment.band_eq_db=-1.0 is negative"):
        Config.from_dict({"augment.band_eq_db": -1}).check_ranges()
    with pytest.raises(
        ConfigError, match=r"augment.band_eq_db=3.0 acts on log-Mel bands, which model.name=.w2v2_aasist. does not"
    ):
        validate(Config.from_dict({"augment.band_eq_db": 3, "model.name": "w2v2_aasist"}))
    assert used_params(Config.from_dict({"augment.band_eq_db": 3}))["augment.band_eq_db"] == 3.0
    assert "augment.mp3_32" not in used_params(Config())
    assert used_params(Config.from_dict({"augment.mp3_32": 0.1}))["augment.mp3_32"] == 0.1  # MLflow sees the recipe
    assert "augment.band_eq_db" not in used_params(Config.from_dict({"model.name": "w2v2_aasist"}))


def test_spec_masks_blank_one_band_and_one_stretch_per_training_clip():
    """augment.freq_mask / time_mask: per clip at most that many whole Mel rows / frame columns set to the
    clip's mean while training; nothing at eval; band statistics still see the whole clip."""
    from sourcetrace.models import build_model

    cfg = {"model.channels": 8, "model.band_stats": True, "augment.freq_mask": 8, "augment.time_mask": 20}
    model = build_model(Config.from_dict(cfg))
    wave = torch.randn(1, 16000).repeat(32, 1) * torch.linspace(0.1, 1.0, 16000)
    ref, ref_stats = model.eval().fbank.with_band_stats(wave)
    x, stats = model.train().fbank.with_band_stats(wave)
    torch.testing.assert_close(stats, ref_stats)
    changed = (x - ref).abs() > 1e-6  # [32, 40, frames]
    rows, cols = changed.all(-1).sum(1), changed.all(1).sum(1)
    assert rows.max() <= 8 and cols.max() <= 20 and rows.float().mean() > 1 and cols.float().mean() > 3
    blanked = changed.all(-1)  # a masked row holds one value, the clip's mean
    for b in range(4):
        if blanked[b].any():
            torch.testing.assert_close(
                x[b][blanked[b]], torch.full_like(x[b][blanked[b]], x[b][blanked[b]][0, 0].item())
            )
    torch.testing.assert_close(model.eval().fbank.with_band_stats(wave)[0], ref)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"augment.freq_mask": -1}, r"augment.freq_mask=-1 is negative"),
        ({"augment.freq_mask": 40}, r"augment.freq_mask=40 would mask every one of features.n_mels=40 bins"),
        ({"augment.time_mask": 5, "model.name": "w2v2_aasist"}, r"augment.time_mask=5 acts on log-Mel bands"),
    ],
)
def test_bad_spec_masks_are_config_errors(values, message):
    from sourcetrace.validation import validate

    with pytest.raises(ConfigError, match=message):
        validate(Config.from_dict(values))
