"""All-pairs EER / minDCF against an independent sklearn computation, hand cases and degenerate inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from sourcetrace.evaluation.eer import all_pairs_eer, all_pairs_metrics, det_points

HIST_EXACT = {"sort_below": 0, "tolerance": 0.0}  # force the histogram path and its exact second pass


def reference_eer(emb: np.ndarray, labels: np.ndarray) -> float:
    """The common recipe: float64 cosines of all i < j pairs, sklearn roc_curve, brentq on the ROC."""
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(len(e), 1)
    fpr, tpr, _ = roc_curve((labels[i] == labels[j]).astype(int), np.einsum("nd,nd->n", e[i], e[j]))
    return 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0, xtol=1e-14)


def blobs(n: int, classes: int, spread: float, seed: int, dim: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    return rng.normal(size=(n, dim)) + spread * rng.normal(size=(classes, dim))[labels], labels


@pytest.mark.parametrize("spread", [0.2, 1.0, 4.0])  # badly ... well separated
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("path", ["sort", "histogram"])
def test_matches_sklearn_on_random_sets(spread, seed, path):
    emb, labels = blobs(120 + 40 * seed, 5, spread, seed)
    kw = HIST_EXACT if path == "histogram" else {}
    assert all_pairs_eer(emb, labels, **kw) == pytest.approx(reference_eer(emb, labels), abs=1e-7)


@pytest.mark.parametrize("path", ["sort", "histogram"])
def test_matches_sklearn_with_heavy_ties(path):
    """Embeddings drawn from +-axis vectors: every score is exactly -1, 0 or 1, so ties are massive."""
    rng = np.random.default_rng(3)
    axes = np.vstack([np.eye(4), -np.eye(4)])
    labels = rng.integers(0, 3, 90)
    pick = np.where(rng.random(90) < 0.6, labels, rng.integers(0, 8, 90))
    emb = axes[pick]
    kw = HIST_EXACT if path == "histogram" else {}
    assert all_pairs_eer(emb, labels, **kw) == pytest.approx(reference_eer(emb, labels), abs=1e-7)


def test_hand_computed_case():
    """Unit vectors at 0 and 90 deg (A), 30 and 180 deg (B). Scores, best first: .866 N, .5 N, 0 T + 0 N
    (tie), -.866 T, -1 N. ROC vertices (FPR, FNR): (0, 1) (.25, 1) (.5, 1) (.75, .5) (.75, 0) (1, 0); the
    crossing is on the segment (.5, 1)-(.75, .5): EER = .5 + (2/3)(.25) = 2/3, at threshold 0.
    minDCF at p_target = .5 is min(FPR + FNR) = .75."""
    deg = np.radians([0, 90, 30, 180])
    emb = np.stack([np.cos(deg), np.sin(deg)], 1)
    m = all_pairs_metrics(emb, ["A", "A", "B", "B"], p_target=0.5)
    assert m.eer == pytest.approx(200 / 3, abs=1e-9)
    assert m.threshold == pytest.approx(0.0, abs=1e-6)
    assert m.min_dcf == pytest.approx(0.75, abs=1e-9)
    assert (m.n_target, m.n_nontarget) == (2, 4)
    h = all_pairs_metrics(emb, ["A", "A", "B", "B"], p_target=0.5, **HIST_EXACT)
    assert h.eer == pytest.approx(200 / 3, abs=1e-9) and h.min_dcf == pytest.approx(0.75, abs=1e-9)


def test_identical_embeddings_give_fifty_percent():
    emb = np.tile([[0.3, -0.2, 0.9]], (12, 1))
    labels = np.repeat([0, 1, 2], 4)
    assert all_pairs_eer(emb, labels) == pytest.approx(50.0)
    assert all_pairs_eer(emb, labels, **HIST_EXACT) == pytest.approx(50.0)


def test_string_labels_equal_integer_labels_and_torch_inputs():
    emb, labels = blobs(80, 4, 1.0, seed=5)
    names = np.array(["sys_" + "abcd"[k] for k in labels])
    as_int = all_pairs_metrics(emb, labels)
    assert all_pairs_metrics(emb, names) == as_int
    assert all_pairs_metrics(torch.tensor(emb, requires_grad=True), torch.tensor(labels)) == as_int
    assert all_pairs_metrics(emb, list(names)) == as_int


def test_row_order_does_not_matter():
    emb, labels = blobs(100, 4, 1.0, seed=6)
    perm = np.random.default_rng(0).permutation(100)
    assert all_pairs_eer(emb[perm], labels[perm]) == pytest.approx(all_pairs_eer(emb, labels), abs=1e-9)


def test_histogram_path_agrees_with_sorting_on_a_bigger_set():
    emb, labels = blobs(1500, 12, 0.7, seed=7, dim=16)  # 1.1 M pairs, several row blocks
    exact = all_pairs_metrics(emb, labels)
    forced = all_pairs_metrics(emb, labels, **HIST_EXACT)
    assert forced.eer == pytest.approx(exact.eer, abs=1e-9)
    assert forced.threshold == pytest.approx(exact.threshold, abs=1e-9)
    assert forced.min_dcf == pytest.approx(exact.min_dcf, abs=1e-3)  # bin resolution
    bounded = all_pairs_metrics(emb, labels, sort_below=0)  # default tolerance 1e-3 pp
    assert abs(bounded.eer - exact.eer) <= 1e-3
    assert (forced.n_target, forced.n_nontarget) == (exact.n_target, exact.n_nontarget)
    assert exact.n_target + exact.n_nontarget == 1500 * 1499 // 2


def test_min_dcf_against_a_direct_computation():
    emb, labels = blobs(150, 5, 1.5, seed=8)
    e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    i, j = np.triu_indices(150, 1)
    fpr, tpr, _ = roc_curve((labels[i] == labels[j]).astype(int), np.einsum("nd,nd->n", e[i], e[j]))
    p, c_miss, c_fa = 0.05, 1.0, 1.0
    want = np.min(c_miss * p * (1 - tpr) + c_fa * (1 - p) * fpr) / min(c_miss * p, c_fa * (1 - p))
    assert all_pairs_metrics(emb, labels, p_target=p).min_dcf == pytest.approx(want, abs=1e-9)


def test_det_points_are_a_monotone_downsampled_curve():
    emb, labels = blobs(2200, 10, 1.0, seed=9)  # 2.4 M pairs: histogram path
    fpr, fnr = det_points(emb, labels, max_points=500)
    assert 2 <= len(fpr) <= 500 and len(fpr) == len(fnr)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(fnr) <= 0)
    assert (fpr[0], fnr[0], fpr[-1], fnr[-1]) == (0.0, 1.0, 1.0, 0.0)
    small_fpr, _ = det_points(emb[:200], labels[:200])
    assert small_fpr[0] == 0.0 and small_fpr[-1] == 1.0


@pytest.mark.parametrize(
    "emb, labels, match",
    [
        (np.ones((5, 3)), [0] * 5, "at least 2 labels"),
        (np.ones((1, 3)), [0], "at least 2 embeddings"),
        (np.eye(3), [0, 1, 2], "no target pairs"),
        (np.ones((4, 3)), [0, 0, 1], r"labels \[n\]"),
        (np.ones(4), [0, 0, 1, 1], r"embeddings \[n, d\]"),
        (np.array([[1.0, 0], [math.nan, 1], [0, 1], [1, 1]]), [0, 0, 1, 1], "row 1 is not finite"),
    ],
)
def test_degenerate_inputs_raise_clear_errors(emb, labels, match):
    with pytest.raises(ValueError, match=match):
        all_pairs_metrics(emb, labels)


def test_bad_dcf_parameters_raise():
    with pytest.raises(ValueError, match="p_target"):
        all_pairs_metrics(np.eye(4), [0, 0, 1, 1], p_target=1.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_give_the_same_eer():
    emb, labels = blobs(1500, 12, 0.7, seed=7, dim=16)
    cpu = all_pairs_metrics(emb, labels, **HIST_EXACT)
    gpu = all_pairs_metrics(torch.tensor(emb, device="cuda"), labels, **HIST_EXACT)
    assert gpu.eer == pytest.approx(cpu.eer, abs=1e-4)
