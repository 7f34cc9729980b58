"""Everyday conditions: a random level (gain), the telephone band (band_8k), chains, the ``everyday`` set."""

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from sourcetrace.config import Config
from sourcetrace.data.audio import load_audio
from sourcetrace.data.bank import WaveBank
from sourcetrace.degrade import DEGRADATIONS, EVERYDAY, check_names, rendered_parts, split_condition
from sourcetrace.degrade.config import AugmentConfig
from sourcetrace.degrade.level import band_8k, gain_db
from sourcetrace.degrade.render import clip_rng, render_files
from sourcetrace.errors import ConfigError
from sourcetrace.evaluation.degraded import format_degraded, format_field, summary
from sourcetrace.training.augment import train_crops

LSB = 1 / 32768  # one 16-bit step


@pytest.fixture(scope="module")
def clips(mlaad_corpus):
    return sorted(str(p) for p in (mlaad_corpus / "fake").rglob("train_*.flac"))[:4]


def _energy(wave: np.ndarray, lo: float, hi: float = 1e9, sr: int = 16000) -> float:
    spec = np.abs(np.fft.rfft(wave)) ** 2
    f = np.fft.rfftfreq(len(wave), 1 / sr)
    return float(spec[(f > lo) & (f <= hi)].sum())


def _level_db(src: str, dst: str) -> float:
    x, y = load_audio(src), load_audio(dst)
    return float(10 * np.log10(np.mean(y.astype(np.float64) ** 2) / np.mean(x.astype(np.float64) ** 2)))


def test_gain_is_a_seeded_level_per_clip_within_minus_30_and_0_db(clips, tmp_path):
    first = render_files(clips, "gain", seed=0, cache_dir=tmp_path / "a")
    levels = [_level_db(s, d) for s, d in zip(clips, first)]
    assert all(-30.1 <= g <= 0.01 for g in levels)
    assert len({round(g, 1) for g in levels}) == len(clips)  # one draw per clip
    for src, dst, g in zip(clips, first, levels):  # exactly the clip's own draw, up to 16-bit rounding
        want = gain_db(clip_rng(src, "gain", 0))
        assert g == pytest.approx(want, abs=0.05)
        x, y = load_audio(src), load_audio(dst)
        assert len(y) == len(x) and np.abs(y - x * 10 ** (want / 20)).max() <= LSB
    again = render_files(clips, "gain", seed=0, cache_dir=tmp_path / "b")  # reproducible from the seed
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in again]
    other = [_level_db(s, d) for s, d in zip(clips, render_files(clips, "gain", seed=1, cache_dir=tmp_path / "a"))]
    assert other != pytest.approx(levels, abs=0.1)


def test_band_8k_removes_the_band_above_4_khz_and_keeps_length_and_speech(clips, tmp_path):
    for src, dst in zip(clips, render_files(clips, "band_8k", cache_dir=tmp_path)):
        x, y = load_audio(src), load_audio(dst)
        assert len(y) == len(x)
        assert _energy(y, 4000) < 1e-3 * _energy(x, 4000)  # nothing of the band above Nyquist of 8 kHz
        assert _energy(y, 100, 3500) == pytest.approx(_energy(x, 100, 3500), rel=0.05)  # the speech band kept
    wave = np.random.default_rng(0).standard_normal(12345).astype(np.float32) * 0.1
    assert len(band_8k(wave, 22050)) == 12345 and np.array_equal(band_8k(wave, 8000), wave)
    loud = np.clip(wave * 20, -1, 1)  # a full-scale clip: the filter's overshoot is scaled back, never clipped
    assert np.abs(band_8k(loud, 16000)).max() <= 32767 / 32768


def test_chains_apply_left_to_right_and_are_cached_under_their_full_name(clips, tmp_path):
    two = clips[:2]
    [g, gb] = [render_files(two, n, cache_dir=tmp_path) for n in ("gain", "gain+band_8k")]
    assert all(Path(p).parent.name == "gain+band_8k" for p in gb)
    for single, chained in zip(g, gb):  # band_8k of the gain rendering, up to the 16-bit rounding between
        assert np.abs(load_audio(chained) - band_8k(load_audio(single), 16000)).max() <= 3 * LSB
    # order matters: the band limit after replay removes replay's wideband microphone noise, before it does not
    last = render_files(two, "replay+band_8k", cache_dir=tmp_path)
    first = render_files(two, "band_8k+replay", cache_dir=tmp_path)
    for src, a, b in zip(two, last, first):
        above = _energy(load_audio(src), 4000)
        assert _energy(load_audio(a), 4000) < 1e-3 * above < _energy(load_audio(b), 4000)
    assert Path(render_files(two, " replay + band_8k ", cache_dir=tmp_path)[0]) == Path(last[0])


@pytest.mark.parametrize(
    "names, message",
    [
        ("gain+mp3_16", r"unknown degradation 'mp3_16' in 'gain\+mp3_16'; valid degradations: amr_nb, g711"),
        ("short_1s+gain", r"the window 'short_1s' must come last in 'short_1s\+gain'"),
        ("everyday+gain", r"the set 'everyday' cannot be part of a chain"),
        ("gain,band_8k+", r"unknown degradation '' in 'band_8k\+'"),
    ],
)
def test_a_bad_part_is_one_clear_error_naming_the_valid_names(names, message):
    with pytest.raises(ConfigError, match=message) as err:
        check_names(names)
    assert "\n" not in str(err.value) and "gain, band_8k" in str(err.value) and "everyday" in str(err.value)


def test_windows_are_evaluation_conditions_never_renderings(clips, tmp_path):
    with pytest.raises(ConfigError, match="'short_1s' .*is an evaluation window, not a rendering"):
        render_files(clips, "short_1s", cache_dir=tmp_path)
    with pytest.raises(ConfigError, match="evaluation window"):
        render_files(clips, "amr_nb+short_2s", cache_dir=tmp_path)
    assert split_condition("short_2s") == (None, 2.0)
    assert split_condition("amr_nb+short_1s") == ("amr_nb", 1.0)
    assert split_condition("replay+amr_nb") == ("replay+amr_nb", None)
    assert not list(tmp_path.iterdir())


def test_everyday_expands_in_place_and_mixes_with_other_names():
    expected = ["gain", "short_1s", "short_2s", "band_8k", "mp3_32", "opus_16", "amr_nb", "gsm", "replay"]
    assert list(EVERYDAY) == expected and check_names("everyday") == expected
    assert check_names("everyday,g711") == [*expected, "g711"]
    assert check_names(["g711", "everyday", "amr_nb+replay", "gain"]) == ["g711", *expected, "amr_nb+replay"]
    assert rendered_parts(check_names("everyday,amr_nb+g711")) == [
        "gain", "band_8k", "mp3_32", "opus_16", "amr_nb", "gsm", "replay", "g711"
    ]  # fmt: skip


def test_gain_and_band_8k_are_augmentation_keys_whose_banks_keep_lengths(clips, tmp_path, monkeypatch):
    assert {"gain", "band_8k"} <= set(DEGRADATIONS) <= {f.name for f in fields(AugmentConfig)}
    cfg = Config.from_dict({"augment.gain": 0.5, "augment.band_8k": 0.5})
    cfg.check_ranges()
    assert cfg.augment.rendered() == {"gain": 0.5, "band_8k": 0.5}
    with pytest.raises(ConfigError, match="must sum to <= 1"):
        Config.from_dict({"augment.gain": 0.6, "augment.band_8k": 0.6}).check_ranges()
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path))
    split = SimpleNamespace(table=pd.DataFrame({"file": clips}), bank=WaveBank.load(clips))
    crops = train_crops(cfg, split, np.zeros(len(clips), dtype=np.int64), 16000, torch.device("cpu"))
    assert len(crops.banks) == 3 and all(np.array_equal(b.lengths, split.bank.lengths) for b in crops.banks)


def _fake_result(model: dict[str, float], baseline: dict[str, float]) -> dict:
    clean = {"model": {"eer": 10.0, "min_dcf": 0.5}, "baseline": {"eer": 20.0, "min_dcf": 0.7}}
    degraded = {n: {"model": {"eer": m, "min_dcf": 0.5}, "baseline": {"eer": baseline[n], "min_dcf": 0.7}}
                for n, m in model.items()}  # fmt: skip
    return {"metrics": clean, "degraded": degraded}


def test_summary_gives_mean_and_worst_per_scorer_and_where_the_model_wins():
    res = _fake_result(
        {"gain": 12.0, "amr_nb+replay": 30.0, "short_1s": 21.0},
        {"gain": 22.0, "amr_nb+replay": 25.0, "short_1s": 21.0},
    )
    s = summary(res)
    assert s["model"] == {"mean_eer": pytest.approx(21.0), "worst": "amr_nb+replay", "worst_eer": 30.0}
    assert s["baseline"] == {"mean_eer": pytest.approx(68 / 3), "worst": "amr_nb+replay", "worst_eer": 25.0}
    assert s["n_conditions"] == 3 and s["model_beats_baseline"] == ["gain"]
    assert s["model_not_better"] == ["amr_nb+replay", "short_1s"]  # a tie is no win
    text = format_degraded(res)
    assert "mean degraded - clean EER: +11.00 pp" in text
    assert "mean EER over the 3 degraded conditions: 21.00%; worst: amr_nb+replay (30.00%)" in text
    assert (
        "the model beats the baseline (lower EER, by point estimates) on 1 of 3 conditions; "
        "not on: amr_nb+replay, short_1s" in text
    )
    header = next(line for line in text.splitlines() if line.strip().startswith("metric"))
    assert header.endswith("      gain  amr_nb+replay  short_1s")  # long names keep their columns apart


def test_the_field_table_sets_every_condition_beside_the_baseline_with_mean_worst_and_a_verdict():
    res = _fake_result({"gain": 12.0, "amr_nb+replay": 30.0}, {"gain": 22.0, "amr_nb+replay": 25.0})
    res |= {"split": "eval", "n_clips": 40}
    lines = format_field(res).splitlines()
    assert lines[0] == "eval split, 40 clips; all-pairs EER %"
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:6]}
    assert rows == {"clean": ["10.00", "20.00"], "gain": ["12.00", "22.00"], "amr_nb+replay": ["30.00", "25.00"]} | {
        "mean": ["degraded", "21.00", "23.50"]
    }
    assert lines[6].split()[-2:] == ["30.00", "25.00"] and "(worst: model amr_nb+replay" in lines[7]
    assert lines[-1] == (
        "field verdict (point estimates): the model does NOT clearly beat the baseline on: amr_nb+replay; "
        "worst degraded / clean EER = 3.0x"
    )
    won = _fake_result({"gain": 12.0}, {"gain": 22.0}) | {"split": "eval", "n_clips": 40}
    assert format_field(won).splitlines()[-1] == (
        "field verdict (point estimates): the model BEATS the baseline on every condition; "
        "worst degraded / clean EER = 1.2x"
    )
    # With intervals, a lower point estimate is not enough: gain's interval crosses zero.
    iv = {"clean": (-10.0, -14.0, -6.0, "beats"), "gain": (-10.0, -20.0, 1.0, "cannot tell")}
    won["intervals"] = {n: {"all": dict(zip(("diff", "lo", "hi", "verdict"), v))} for n, v in iv.items()}
    text = format_field(won).splitlines()
    assert text[2].split()[-4:] == ["-10.00", "[-14.00,", "-6.00]", "beats"]
    assert text[-1] == (
        "field verdict (95 % bootstrap intervals): the model does NOT clearly beat the baseline on: gain; "
        "worst degraded / clean EER = 1.2x"
    )


def test_dev_under_field_conditions_joins_renderings_of_every_dev_clip(mlaad_corpus, tmp_path, monkeypatch):
    """data.dev_degrade: the trial's dev split is the clean clips plus each named rendering of them, so dev EER
    (halving, the best checkpoint, what a sweep hands over) is measured under those conditions; bad names fail
    in validation, before any data is read."""
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import score_splits
    from sourcetrace.validation import validate

    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path))
    base = {"data.root": str(mlaad_corpus), "data.short_clips": "pad", "data.eval_seconds": 2.0}
    clean = prepare_data(Config.from_dict(base))
    cfg = Config.from_dict(base | {"data.dev_degrade": "band_8k,gain+amr_nb,short_1s"})
    field = prepare_data(cfg)
    n = len(clean.dev.table)
    assert list(field.dev.table["degradation"]) == ["clean"] * n + ["band_8k"] * n + ["gain+amr_nb"] * n
    assert field.dev.table["system"].tolist() == clean.dev.table["system"].tolist() * 3
    rendered = field.dev.table["file"].iloc[n:]
    assert all(Path(f).is_file() and str(tmp_path) in f for f in rendered)
    assert np.array_equal(field.dev.bank.clip(0), clean.dev.bank.clip(0))  # the clean clips come first, as they are
    assert len(field.train.table) == len(clean.train.table)  # training and test are untouched
    metrics = score_splits(FrameLevels(), field, cfg, torch.device("cpu"))
    assert 0.0 <= metrics["dev_eer"] <= 100.0
    for bad, message in [("short_1s", "names no rendering"), ("mp3_16", "unknown degradation 'mp3_16'")]:
        with pytest.raises(ConfigError, match=f"data.dev_degrade='{bad}'.*{message}"):
            validate(Config.from_dict(base | {"data.dev_degrade": bad}))


class FrameLevels(torch.nn.Module):
    """A toy embedder: the levels of 16 frames of 25 ms."""

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        return wave[:, : 16 * 400].reshape(len(wave), 16, 400).std(-1)


def test_a_quick_field_check_scores_the_same_seeded_sample_of_each_system():
    from sourcetrace.evaluation.evaluate import sample_per_system

    table = pd.DataFrame({"system": ["a"] * 10 + ["b"] * 3, "file": [f"{i}.wav" for i in range(13)]})
    sample = sample_per_system(table, 4)
    assert sample["system"].value_counts().to_dict() == {"a": 4, "b": 3}
    assert sample.equals(sample_per_system(table, 4))  # the same clips every time
    assert set(sample["file"]) <= set(table["file"]) and sample_per_system(table, 20).equals(table)


def test_a_sweep_renders_what_its_trials_read_once_before_they_start(mlaad_corpus, tmp_path, monkeypatch, capsys):
    """Two trials rendering the same training clips at once did the work twice (~4 min of the demo): the driver
    renders every augment.* rendering of the training split and every data.dev_degrade one of dev first."""
    from sourcetrace.sweep.run import prerender
    from sourcetrace.training.data import read_tables

    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path))
    base = {"data.root": str(mlaad_corpus), "data.short_clips": "pad"}
    cfgs = [
        Config.from_dict(base | {"augment.band_8k": 0.2, "data.dev_degrade": "gain", "model.embedding_dim": d})
        for d in (10, 50)
    ]
    prerender(cfgs + [Config.from_dict(base)])
    assert "renderings for the trials ready in" in capsys.readouterr().out
    _, tables = read_tables(cfgs[0])
    assert len(list((tmp_path / "degraded" / "band_8k").iterdir())) == len(tables["train"])
    assert len(list((tmp_path / "degraded" / "gain").iterdir())) == len(tables["dev"])
    prerender([Config.from_dict(base)])  # nothing to render: says nothing
    assert capsys.readouterr().out == ""
