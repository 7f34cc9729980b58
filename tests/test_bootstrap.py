"""The paired bootstrap behind every model-vs-baseline verdict: its EER, its intervals, its rule."""

import numpy as np
import pytest

from sourcetrace.evaluation.bootstrap import _Pairs, decide, interval
from sourcetrace.evaluation.eer import all_pairs_eer


def clusters(spread: float, n_sys: int = 12, per: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_sys, 16))
    labels = np.repeat(np.arange(n_sys), per)
    return centres[labels] + rng.normal(scale=spread, size=(len(labels), 16)), labels.astype(str)


def test_the_weighted_histogram_eer_is_the_all_pairs_eer_at_unit_weights():
    emb, systems = clusters(1.0)
    assert _Pairs(emb, systems).eer(np.ones(len(systems))) == pytest.approx(all_pairs_eer(emb, systems), abs=0.2)


def test_a_weight_of_two_counts_a_clip_twice_but_never_pairs_it_with_itself():
    emb, systems = clusters(1.0, n_sys=3, per=3)
    pairs = _Pairs(emb, systems)
    w = np.ones(len(systems))
    w[0] = 2  # clip 0 drawn twice: its pairs with clips 1 and 2 (same system) count twice, no (0, 0') pair
    pw = w[pairs.i] * w[pairs.j]
    assert pw[pairs.target].sum() == 3 * 3 + 2  # three systems of three target pairs, two of them doubled
    assert pw[~pairs.target].sum() == 27 + 6  # 27 non-target pairs, clip 0's six doubled
    assert np.isfinite(pairs.eer(w)) and np.isnan(pairs.eer(np.zeros(len(systems))))  # no pair: no EER


def test_a_clearly_better_model_beats_and_an_equal_one_cannot_be_told_apart():
    good, systems = clusters(0.8)
    bad, _ = clusters(2.0, seed=1)
    res = interval(good, bad, systems, n_boot=200)
    assert res.verdict == "beats" and res.hi < 0 and res.lo <= res.diff <= res.hi
    assert (res.n_clips, res.n_systems, res.n_boot) == (120, 12, 200)
    same = interval(good, good + 1e-3, systems, n_boot=200)
    assert same.verdict == "cannot tell" and same.lo <= 0 <= same.hi
    worse = interval(bad, good, systems, n_boot=200)
    assert worse.verdict == "loses"


def test_the_point_estimate_given_is_reported_and_the_interval_is_seeded():
    good, systems = clusters(0.8)
    bad, _ = clusters(1.5, seed=1)
    a = interval(good, bad, systems, n_boot=100, point=-3.25)
    b = interval(good, bad, systems, n_boot=100, point=-3.25)
    assert a == b and a.diff == -3.25 and "-3.25 pp [" in a.text()


def test_splits_without_an_eer_have_no_interval_and_big_ones_are_sampled_per_system():
    emb, systems = clusters(1.0)
    assert interval(emb, emb, np.array(["a"] * len(systems)), n_boot=10) is None  # one system
    assert interval(emb[::10], emb[::10], systems[::10], n_boot=10) is None  # no system with two clips
    res = interval(emb, emb + 1e-3, systems, n_boot=20, max_clips=48)
    assert res.n_clips == 48 and res.n_systems == 12


def test_the_rule_needs_the_whole_interval_beyond_the_margin():
    assert decide(-2.0, -0.1) == "beats" and decide(-2.0, 0.0) == "cannot tell"
    assert decide(-2.0, -0.5, margin=1.0) == "cannot tell" and decide(-3.0, -1.5, margin=1.0) == "beats"
    assert decide(0.5, 2.0) == "loses" and decide(0.5, 2.0, margin=1.0) == "cannot tell"
