"""The paper's linear probe on synthetic embeddings: separable clusters vs noise, matrix layout, balance."""

import numpy as np
import pytest

from sourcetrace.evaluation.probe import confusion_long, linear_probe, undersample


def clusters(n_classes=5, per=60, dim=16, spread=0.1, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, dim))
    x = np.concatenate([c + spread * rng.normal(size=(per, dim)) for c in centres])
    names = np.repeat([f"sys{i}" for i in range(n_classes)], per)
    return x / np.linalg.norm(x, axis=1, keepdims=True), names


def test_separable_clusters_are_probed_almost_perfectly():
    x, names = clusters()
    r = linear_probe(x, names)
    assert r.accuracy >= 0.95 and r.macro_f1 >= 0.95
    assert r.n_test == 60 and r.n_train == 240  # stratified 80/20 of 5 x 60


def test_noise_gives_chance_level():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(1000, 16))
    names = np.repeat([f"s{i}" for i in range(5)], 200)
    r = linear_probe(x, names)
    assert r.chance == pytest.approx(0.2)
    assert abs(r.accuracy - 0.2) < 0.1  # 200 test clips: chance +- ~3.5 standard errors


def test_confusion_matrix_names_every_system_and_sums_to_the_test_set():
    x, names = clusters(n_classes=4, per=30)
    x = np.concatenate([x, x[:1]])
    names = np.concatenate([names, ["lonely"]])  # one clip: cannot be both trained and tested
    r = linear_probe(x, names)
    expected = ["lonely", "sys0", "sys1", "sys2", "sys3"]
    assert list(r.confusion.index) == expected and list(r.confusion.columns) == expected
    assert r.confusion.to_numpy().sum() == r.n_test
    assert r.dropped == {"lonely": 1} and r.confusion.loc["lonely"].sum() == 0
    long = confusion_long(r.confusion)
    assert len(long) == 25 and long["count"].sum() == r.n_test
    assert set(long.columns) == {"true", "predicted", "count", "row_fraction"}


def test_classes_are_capped_at_a_seeded_count():
    labels = np.array(["a"] * 500 + ["b"] * 40 + ["c"] * 350)
    idx, n, dropped = undersample(labels, 300, 2, seed=3)
    assert n == 300 and not dropped  # the paper's cap; a smaller class keeps all of its clips
    assert {k: int((labels[idx] == k).sum()) for k in "abc"} == {"a": 300, "b": 40, "c": 300}
    assert np.array_equal(idx, undersample(labels, 300, 2, seed=3)[0])
    idx, n, _ = undersample(labels, None, 2, seed=3)  # balanced down to the smallest class
    assert n == 40 and {k: int((labels[idx] == k).sum()) for k in "abc"} == {"a": 40, "b": 40, "c": 40}
    big = np.array(["a"] * 500 + ["b"] * 400)
    assert undersample(big, 300, 2, seed=0)[1] == 300  # the paper's cap


def test_same_seed_same_result_and_clear_errors():
    x, names = clusters(n_classes=3, per=20, spread=0.8)
    a, b = linear_probe(x, names, seed=5), linear_probe(x, names, seed=5)
    assert a.accuracy == b.accuracy and a.confusion.equals(b.confusion)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(x[:20], names[:20])
    with pytest.raises(ValueError, match="system names"):
        linear_probe(x, names[:-1])
