"""Open-set metrics on synthetic embeddings: unknown detection, nearest-centroid accuracy, calibration."""

import numpy as np
import pytest

from sourcetrace.evaluation.openset import (
    binary_eer,
    calibrate_threshold,
    class_centroids,
    openset_metrics,
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
    names, c = class_centroids([[1.0, 0.0], [0.0, 1.0], [0.0, 2.0]], ["a", "a", "b"])
    assert names == ["a", "b"]
    np.testing.assert_allclose(c, [[2**-0.5, 2**-0.5], [0.0, 1.0]], atol=1e-6)
