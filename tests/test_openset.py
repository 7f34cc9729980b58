"""Open-set metrics on synthetic embeddings: unknown detection, nearest-centroid accuracy, calibration."""

import io
import json

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_curve

from sourcetrace.errors import ConfigError
from sourcetrace.evaluation.openset import (
    DEFAULT_SCORER,
    SCORERS,
    ScorerError,
    binary_eer,
    calibrate_threshold,
    fit_scorer,
    fpr_at_tpr,
    openset_metrics,
    reference_rows,
    scorer_from_state,
)


def blobs(centres, per, spread, rng, prefix):
    x = np.concatenate([c + spread * rng.normal(size=(per, len(c))) for c in centres])
    return x, np.repeat([f"{prefix}{i}" for i in range(len(centres))], per)


def test_well_separated_unknown_systems_are_detected():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(8, 32)) * 3
    ref, ref_names = blobs(centres[:5], 40, 0.3, rng, "k")  # train: 5 known systems
    known, known_names = blobs(centres[:5], 20, 0.3, rng, "k")
    unknown, unknown_names = blobs(centres[5:], 20, 0.3, rng, "u")
    r = openset_metrics(ref, ref_names, np.concatenate([known, unknown]), np.concatenate([known_names, unknown_names]))
    assert r.auroc > 0.99 and r.eer < 2.0
    assert r.closed_accuracy == 1.0 and r.closed_macro_f1 == 1.0
    assert (r.n_known, r.n_unknown, r.unknown_systems) == (100, 60, ["u0", "u1", "u2"])
    m = r.metrics()
    assert m["openset_auroc"] == r.auroc and "openset_closed_accuracy" in m


def test_indistinguishable_unknown_systems_give_chance_auroc():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(4000, 8))
    names = np.tile([f"s{i}" for i in range(8)], 500)  # all from one distribution
    ref, ref_names = x[:2000], names[:2000]
    ref_keep = np.isin(ref_names, ["s0", "s1", "s2", "s3"])
    r = openset_metrics(ref[ref_keep], ref_names[ref_keep], x[2000:], names[2000:])
    assert abs(r.auroc - 0.5) < 0.05
    assert abs(r.eer - 50.0) < 5.0


def test_only_known_clips_have_no_auroc_but_closed_set_scores():
    rng = np.random.default_rng(2)
    x, names = blobs(rng.normal(size=(3, 8)) * 3, 10, 0.2, rng, "k")
    r = openset_metrics(x, names, x, names)
    assert r.auroc is None and r.eer is None and r.closed_accuracy == 1.0
    assert "openset_auroc" not in r.metrics()
    with pytest.raises(ValueError, match="no reference clips"):
        openset_metrics(x, names, x, names, known_systems=["k0", "ghost"])


def test_false_unknown_rate_calibration_meets_its_target():
    rng = np.random.default_rng(3)
    known = rng.normal(0.7, 0.1, size=1000)
    unknown = rng.normal(0.3, 0.1, size=400)
    scores = np.concatenate([known, unknown])
    is_known = np.r_[np.ones(1000, bool), np.zeros(400, bool)]
    t = calibrate_threshold(scores, is_known, "fur", 0.05)
    assert t.false_unknown_rate <= 0.05 and t.false_unknown_rate >= 0.05 - 1 / 1000
    assert (known < t.value).mean() == t.false_unknown_rate
    assert t.false_known_rate == (unknown >= t.value).mean() and t.false_known_rate < 0.05
    assert "5% false-unknown rate" in t.describe()
    only_known = calibrate_threshold(known, np.ones(1000, bool), "fur", 0.10)  # needs no unknown clips
    assert only_known.false_known_rate is None and only_known.false_unknown_rate <= 0.10


def test_eer_calibration_balances_both_errors():
    rng = np.random.default_rng(4)
    scores = np.r_[rng.normal(0.6, 0.1, 2000), rng.normal(0.4, 0.1, 2000)]
    is_known = np.r_[np.ones(2000, bool), np.zeros(2000, bool)]
    t = calibrate_threshold(scores, is_known, "eer")
    eer, _ = binary_eer(scores, is_known)
    assert abs(100 * t.false_unknown_rate - eer) < 1.0 and abs(100 * t.false_known_rate - eer) < 1.0
    with pytest.raises(ValueError, match="needs clips of unknown systems"):
        calibrate_threshold(scores[:2000], is_known[:2000], "eer")
    with pytest.raises(ValueError, match="unknown operating point"):
        calibrate_threshold(scores, is_known, "roc")


def test_centroids_are_unit_means():
    fitted = SCORERS["centroid"].fit([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]], ["a", "a", "b"])
    assert fitted.systems == ["a", "b"]
    np.testing.assert_allclose(fitted.centroids(), [[2**-0.5, 2**-0.5], [0.0, 1.0]], atol=1e-6)


# --- open-set scorers: every registered scorer honours the same contract ---

SCORER_NAMES = sorted(SCORERS)


def separable(seed=5, dim=16):
    """Five known systems (reference + held-out clips) and three unknown ones, well apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, dim)) * 3
    ref, ref_names = blobs(centres[:5], 30, 0.3, rng, "k")
    known, known_names = blobs(centres[:5], 20, 0.3, rng, "k")
    unknown, unknown_names = blobs(centres[5:], 20, 0.3, rng, "u")
    return ref, ref_names, known, known_names, unknown, unknown_names


def json_able(v):
    return v is None or isinstance(v, (str, int, float, bool)) or (isinstance(v, list) and all(map(json_able, v)))


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_scorer_separates_known_from_unknown_and_names_the_system(name):
    ref, ref_names, known, known_names, unknown, _ = separable()
    s = fit_scorer(name, ref, ref_names)
    assert s.name == name and s.systems == ["k0", "k1", "k2", "k3", "k4"]
    kn_known, per_known = s.score(known)
    kn_unknown, per_unknown = s.score(unknown)
    assert per_known.shape == (100, 5) and per_unknown.shape == (60, 5) and kn_known.shape == (100,)
    assert kn_known.min() > kn_unknown.max()  # every known clip above every unknown one
    assert (np.asarray(s.systems)[per_known.argmax(1)] == known_names).all()
    np.testing.assert_allclose(kn_known, per_known.max(1), rtol=1e-5, atol=1e-5)  # knownness = best match


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_scorer_state_round_trips_through_plain_values(name):
    ref, ref_names, known, *_ = separable()
    s = fit_scorer(name, ref, ref_names)
    state = s.state()
    assert state["name"] == name
    for key, v in state.items():
        assert isinstance(v, np.ndarray) and v.dtype != object or json_able(v), f"{name} state {key!r}: {type(v)}"
    json.dumps({k: v for k, v in state.items() if not isinstance(v, np.ndarray)})
    arrays = {k: v for k, v in state.items() if isinstance(v, np.ndarray)}
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # arrays survive a pickle-free save/load
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as z:
        restored = {k: z[k] for k in z.files}
    back = scorer_from_state({**{k: v for k, v in state.items() if k not in arrays}, **restored})
    assert type(back) is type(s) and back.systems == s.systems
    for a, b in zip(s.score(known), back.score(known)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    back.remove("k0")  # the restored scorer is independent of the original
    assert "k0" in s.systems


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_enrolling_and_removing_systems(name):
    ref, ref_names, known, known_names, unknown, unknown_names = separable()
    s = fit_scorer(name, ref, ref_names)
    before, per_before = s.score(unknown)
    s.add("u0", unknown[unknown_names == "u0"][:10])  # enrol an unseen system from 10 clips
    assert s.systems == ["k0", "k1", "k2", "k3", "k4", "u0"]
    after, per = s.score(unknown)
    rows = unknown_names == "u0"
    assert (after[rows] > before[rows]).all() and (np.asarray(s.systems)[per[rows].argmax(1)] == "u0").all()
    np.testing.assert_allclose(per[:, :5], per_before, rtol=1e-5, atol=1e-5)  # the other systems are untouched
    s.add("k2", known[known_names == "k2"])  # extend a known system
    assert s.systems.count("k2") == 1 and len(s.systems) == 6
    s.remove("k0")
    kn, per = s.score(known)
    assert s.systems == ["k1", "k2", "k3", "k4", "u0"] and per.shape == (100, 5)
    assert kn[known_names == "k0"].max() < kn[known_names != "k0"].min()  # k0's clips are no longer known
    with pytest.raises(ScorerError, match="no system 'k0'"):
        s.remove("k0")
    with pytest.raises(ScorerError, match="dimensions"):
        s.score(known[:, :4])
    with pytest.raises(ScorerError, match="invalid system name"):
        s.add(" ", known[:2])


@pytest.mark.parametrize("name", SCORER_NAMES)
def test_threshold_calibrates_on_any_scorers_knownness(name):
    ref, ref_names, known, known_names, unknown, unknown_names = separable()
    s = fit_scorer(name, ref, ref_names)
    scores = np.concatenate([s.score(known)[0], s.score(unknown)[0]])
    is_known = np.r_[np.ones(len(known), bool), np.zeros(len(unknown), bool)]
    t = calibrate_threshold(scores, is_known, "fur", 0.05, scorer=name)
    assert t.scorer == name and t.false_unknown_rate <= 0.05 and t.false_known_rate == 0.0
    text = t.describe()
    assert name in text and "5% false-unknown rate" in text
    assert SCORERS[name].score_label in text and ("cosine" in text) == (name in ("centroid", "knn"))
    r = openset_metrics(
        ref, ref_names, np.concatenate([known, unknown]), np.r_[known_names, unknown_names], scorer=name, threshold=t
    )
    assert r.scorer == name and r.false_known_rate == 0.0 and r.false_unknown_rate == t.false_unknown_rate
    m = r.metrics()
    assert m["openset_fpr95"] == 0.0 and m["openset_false_known_rate"] == 0.0 and m["openset_threshold"] == t.value


def test_fpr95_matches_sklearn_roc_curve():
    rng = np.random.default_rng(6)
    for n_known, n_unknown in ((1000, 400), (37, 11), (20, 500)):
        scores = np.r_[rng.normal(0.6, 0.15, n_known), rng.normal(0.4, 0.15, n_unknown)].round(2)  # with ties
        is_known = np.r_[np.ones(n_known, bool), np.zeros(n_unknown, bool)]
        fpr, tpr, _ = roc_curve(is_known, scores, drop_intermediate=False)
        assert fpr_at_tpr(scores, is_known, 0.95) == pytest.approx(fpr[np.argmax(tpr >= 0.95)])
        assert fpr_at_tpr(scores, is_known, 0.5) == pytest.approx(fpr[np.argmax(tpr >= 0.5)])
    with pytest.raises(ValueError, match="both"):
        fpr_at_tpr(scores[:n_known], is_known[:n_known])


def test_scorer_registry_errors_name_the_choices():
    ref, ref_names, *_ = separable()
    with pytest.raises(ConfigError, match="valid open-set scorers: .*centroid"):
        fit_scorer("nearest", ref, ref_names)
    with pytest.raises(ConfigError, match="valid open-set scorers"):
        scorer_from_state({"name": "nearest"})
    with pytest.raises(ScorerError, match="'name'"):
        scorer_from_state({"systems": ["a"]})
    state = fit_scorer("centroid", ref, ref_names).state()
    del state["means"]
    with pytest.raises(ScorerError, match="'means'"):
        scorer_from_state(state)
    with pytest.raises(ScorerError, match="3 system names"):
        fit_scorer(DEFAULT_SCORER, ref, ref_names[:3])
    with pytest.raises(ScorerError, match="not finite"):
        fit_scorer(DEFAULT_SCORER, np.where(np.arange(ref.size).reshape(ref.shape) == 7, np.nan, ref), ref_names)
    one = fit_scorer(DEFAULT_SCORER, ref[:30], ref_names[:30])
    with pytest.raises(ScorerError, match="only system"):
        one.remove(one.systems[0])
    assert DEFAULT_SCORER in SCORERS and len(SCORERS) >= 3


def test_reference_rows_keep_small_systems_whole_and_sample_large_ones_reproducibly():
    table = pd.DataFrame({"system": ["a"] * 5 + ["b"] * 50 + ["c"] * 3})
    rows = reference_rows(table, per_system=10, seed=0)
    picked = table["system"].iloc[rows]
    assert picked.value_counts().to_dict() == {"a": 5, "b": 10, "c": 3}
    assert (np.diff(rows) > 0).all() and (rows == reference_rows(table, per_system=10, seed=0)).all()
    assert len(reference_rows(table, per_system=None)) == len(table)


@pytest.mark.parametrize("name", ["centroid", "knn"])
def test_enrolling_clips_later_equals_fitting_on_all_of_them(name):
    ref, ref_names, known, *_ = separable()
    first = ref_names != "k3"
    part = fit_scorer(name, ref[first], ref_names[first])
    part.add("k3", ref[~first][:12])
    part.add("k3", ref[~first][12:])  # extend in two steps
    whole = fit_scorer(name, ref, ref_names)
    assert part.systems == whole.systems
    for a, b in zip(part.score(known), whole.score(known)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_knn_scores_are_means_of_the_k_nearest_cosines():
    rng = np.random.default_rng(7)
    ref, names = rng.normal(size=(30, 6)), np.repeat(["a", "b", "c"], [12, 15, 3])
    query = rng.normal(size=(9, 6))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    cos = unit(query) @ unit(ref).T
    for k in (1, 4):
        knownness, per = fit_scorer("knn", ref, names, k=k).score(query)
        expect = np.stack([np.sort(cos[:, names == s], 1)[:, ::-1][:, :k].mean(1) for s in "abc"], 1)
        np.testing.assert_allclose(per, expect, rtol=1e-5, atol=1e-6)  # "c" has 3 clips: k=4 uses all 3
        np.testing.assert_allclose(knownness, expect.max(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(ScorerError, match="k must be a positive integer"):
        fit_scorer("knn", ref, names, k=0)
    with pytest.raises(ScorerError, match="takes no parameters"):
        fit_scorer("mahalanobis", ref, names, k=3)


def test_mahalanobis_matches_an_independent_ledoit_wolf_computation():
    from sklearn.covariance import LedoitWolf

    rng = np.random.default_rng(8)
    ref, names = rng.normal(size=(40, 5)) + np.repeat(np.eye(5)[:2] * 3, 20, 0), np.repeat(["a", "b"], 20)
    query = rng.normal(size=(7, 5))
    unit = lambda v: v / np.linalg.norm(v, axis=1, keepdims=True)  # noqa: E731
    x = unit(ref)
    means = np.stack([x[names == s].mean(0) for s in "ab"])
    cov = LedoitWolf(assume_centered=True).fit(x - means[(names == "b").astype(int)]).covariance_
    q = unit(query)
    d = np.stack([np.einsum("ij,jk,ik->i", q - m, np.linalg.inv(cov), q - m) for m in means], 1)
    knownness, per = fit_scorer("mahalanobis", ref, names).score(query)
    np.testing.assert_allclose(per, -d, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(knownness, -d.min(1), rtol=1e-4, atol=1e-6)
    with pytest.raises(ScorerError, match="more clips"):
        fit_scorer("mahalanobis", ref[:2], ["a", "b"])
