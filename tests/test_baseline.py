"""The featureless baseline: features, its Table-1 row and comparison, its MLflow run; the epoch budget key."""

import json

import numpy as np
import pandas as pd
import pytest
from test_report import GE2E, make_experiment

from sourcetrace.config import Config
from sourcetrace.data.samplers import BalancedSampler, RandomSampler, voxceleb_epoch_steps
from sourcetrace.errors import ConfigError
from sourcetrace.evaluation.baseline import NAME, clip_features, standardise
from sourcetrace.sweep.baseline import sweep_baseline
from sourcetrace.sweep.report import format_table1, write_reports
from sourcetrace.training.loop import steps_per_epoch
from sourcetrace.validation import validate

UNSEEN = ("lang_seen___model_not_seen", "lang_not_seen___model_not_seen")


def test_features_are_mean_and_std_of_mfcc_and_deltas_and_standardise_on_given_stats():
    rng = np.random.default_rng(0)
    quiet, loud = rng.standard_normal(16000) * 0.01, rng.standard_normal(16000) * 0.5
    f = clip_features([quiet, loud, loud[::-1].copy()], seconds=1.0)
    assert f.shape == (3, 120) and np.isfinite(f).all()
    assert f[1, 0] > f[0, 0]  # c0 (log energy) mean grows with loudness
    assert np.allclose(f[:, 90:], np.abs(f[:, 90:]))  # std columns are non-negative
    z = standardise(f)
    assert np.allclose(z.mean(0), 0, atol=1e-4) and np.allclose(z.std(0)[z.std(0) > 0], 1, atol=1e-3)
    other = standardise(f[:1], stats_from=f)
    assert np.allclose(other, z[:1], atol=1e-5)


def _baseline(exp, test_all=20.0, test_unseen=(30.0, 30.0)):
    metrics = {"dev_eer": 18.0, "test_eer": test_all}
    metrics |= {f"test_eer.{c}": v for c, v in zip(UNSEEN, test_unseen)}
    (exp / "baseline.json").write_text(json.dumps({"name": NAME, "metrics": metrics}))


def _experiment(tmp_path):
    exp = make_experiment(tmp_path, [("t1", GE2E, "TERMINATED", [(2, 9.0), (4, 8.0)], None)])
    for line_file in exp.glob("run_trial_*/result.json"):  # the trial's per-condition test EERs
        rows = [json.loads(x) for x in line_file.read_text().splitlines()]
        for r in rows:
            if "dev_eer" in r:
                r |= {f"test_eer.{c}": 10.0 for c in UNSEEN}
        line_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return exp


def test_table1_has_the_baseline_row_and_the_best_trial_beside_it(tmp_path):
    exp = _experiment(tmp_path)
    _baseline(exp)
    reports = write_reports(exp)
    row = reports.table1[reports.table1["backbone"] == NAME]
    assert len(row) == 1 and row["dev@10"].item() == 18.0 and row["test@10"].item() == 20.0
    saved = pd.read_parquet(reports.out_dir / "table1.parquet")
    assert NAME in set(saved["backbone"]) and NAME in set(
        pd.read_parquet(reports.out_dir / "table1_cells.parquet")["backbone"]
    )
    comp = pd.read_parquet(reports.out_dir / "comparison.parquet")
    test = comp[comp["split"] == "test"].set_index("condition")
    assert test.loc["all", "model_eer"] == 13.0 and test.loc["all", "baseline_eer"] == 20.0  # best eval: epoch 4
    assert test["model_wins"].all()
    text = format_table1(reports)
    assert NAME in text and "verdict: the model handed over BEATS the baseline on eval" in text


def test_verdict_names_the_condition_the_baseline_wins(tmp_path):
    exp = _experiment(tmp_path)
    _baseline(exp, test_unseen=(5.0, 30.0))
    text = format_table1(write_reports(exp))
    assert "does NOT beat the baseline on eval: lang_seen___model_not_seen" in text


def test_sweep_baseline_scores_the_corpus_once_and_logs_an_mlflow_run(mlaad_corpus, tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    base = {"data.root": str(mlaad_corpus), "data.eval_seconds": 2.0}
    record = sweep_baseline(tmp_path, base, uri, "sw")
    m = record["metrics"]
    assert {"dev_eer", "test_eer", "dev_min_dcf", "test_openset_auroc"} <= set(m)
    assert any(k.startswith("test_eer.") for k in m)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("sw").experiment_id])
    assert len(runs) == 1 and runs[0].info.run_name == NAME and runs[0].info.status == "FINISHED"
    # the headline vocabulary of every run of a sweep (trials, baseline, fusion): best_dev_eer, best_test_eer
    assert runs[0].data.metrics["best_test_eer"] == pytest.approx(m["test_eer"])
    assert (
        runs[0].data.metrics["best_dev_eer"] == pytest.approx(m["dev_eer"]) and runs[0].data.tags["role"] == "baseline"
    )
    assert sweep_baseline(tmp_path, base, uri, "sw") == json.loads((tmp_path / "baseline.json").read_text())
    assert len(client.search_runs([client.get_experiment_by_name("sw").experiment_id])) == 1  # cached, not re-logged


def test_epoch_steps_sampler_pass_or_one_pass_of_clips():
    labels = np.repeat(np.arange(4), [40, 6, 6, 6])  # one large class: the balanced pass is long
    bal = BalancedSampler(labels, batch_size=4, per_class=2)
    cfg = Config.from_dict({"sampler.name": "balanced", "train.batch_size": 4, "loss.name": "ge2e"})
    assert steps_per_epoch(cfg, bal, labels) == len(bal) == 20
    clips = cfg.with_values({"train.epoch_steps": "clips"})
    assert steps_per_epoch(clips, bal, labels) == len(labels) // 4 == 14
    assert steps_per_epoch(clips.with_values({"train.steps_per_epoch": 5}), bal, labels) == 5
    rnd = RandomSampler(labels, batch_size=4)
    assert steps_per_epoch(clips, rnd, labels) == steps_per_epoch(cfg, rnd, labels) == 14
    vt_random = Config.from_dict({"train.batch_size": 4, "train.epoch_steps": "voxceleb"})
    assert steps_per_epoch(vt_random, rnd, labels) == 14
    vt = cfg.with_values({"train.epoch_steps": "voxceleb"})
    assert steps_per_epoch(vt, bal, labels) == voxceleb_epoch_steps(labels, 4, 2, 0) < 14


def test_voxceleb_epoch_matches_the_issue_figures_on_mlaad_like_counts():
    """2 400 / 1 500 / 22 x 300 clips, 12 classes x 2: a full balanced pass is 1 200 batches; voxceleb_trainer's
    sampler keeps <= 500 clips per class and drops conflicting groups: about 240-320 batches."""
    labels = np.repeat(np.arange(24), [2400, 1500] + [300] * 22)
    assert len(BalancedSampler(labels, batch_size=24, per_class=2)) == 1200
    steps = [voxceleb_epoch_steps(labels, 24, 2, seed) for seed in range(3)]
    assert all(200 <= s <= 7600 // 24 for s in steps)
    small = np.repeat(np.arange(4), [40, 6, 6, 6])  # fewer clips than the cap: only drops shorten the epoch
    assert voxceleb_epoch_steps(small, 4, 2) <= 29 // 2
    with pytest.raises(ConfigError, match="train.epoch_steps"):
        validate(Config.from_dict({"train.epoch_steps": "vt"}))


def test_the_sweep_baseline_reads_the_trials_settings_dev_renderings_and_eval_test(mlaad_corpus, tmp_path, monkeypatch):
    """The baseline row is scored on the dev the trials score (data.dev_degrade adds renderings of every dev
    clip) and follows train.eval_test (its Config used to keep only data.* keys, so eval_test was ignored)."""
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))
    base = {"data.root": str(mlaad_corpus), "data.eval_seconds": 2.0, "model.channels": 8}
    (tmp_path / "clean").mkdir()
    (tmp_path / "field").mkdir()
    clean = sweep_baseline(tmp_path / "clean", base)["metrics"]
    field = sweep_baseline(tmp_path / "field", base | {"data.dev_degrade": "band_8k", "train.eval_test": False})
    assert field["dev_degrade"] == ["band_8k"] and field["metrics"]["dev_eer"] != clean["dev_eer"]
    assert "test_eer" in clean and not any(k.startswith("test_") for k in field["metrics"])
    assert len(list((tmp_path / "cache" / "degraded" / "band_8k").iterdir())) > 0
