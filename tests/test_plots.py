"""Figures are written as non-empty PNGs from synthetic inputs (Agg canvas, no display)."""

import numpy as np
import pandas as pd

from sourcetrace.evaluation.eer import all_pairs_metrics, det_points
from sourcetrace.evaluation.plots import plot_beside_baseline, plot_confusion, plot_det, plot_umap, umap_coordinates

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_png(tmp_path):
    names = ["espeak", "pico", "sam"]
    cm = pd.DataFrame([[5, 1, 0], [0, 6, 0], [0, 0, 0]], index=names, columns=names)
    p = plot_confusion(cm, tmp_path / "sub" / "cm.png")
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_umap_png_and_coordinates(tmp_path):
    rng = np.random.default_rng(0)
    x = np.concatenate([c + 0.1 * rng.normal(size=(30, 10)) for c in rng.normal(size=(4, 10))])
    names = np.repeat(["a", "b", "c", "d"], 30)
    seen = np.isin(names, ["a", "b"])
    xy = umap_coordinates(x, seed=0)
    assert xy.shape == (120, 2) and np.isfinite(xy).all()
    p = plot_umap(xy, names, seen, tmp_path / "umap.png")
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_det_png(tmp_path):
    rng = np.random.default_rng(1)
    x = np.concatenate([c + 0.5 * rng.normal(size=(20, 8)) for c in rng.normal(size=(3, 8))])
    labels = np.repeat([0, 1, 2], 20)
    m = all_pairs_metrics(x, labels)
    fpr, fnr = det_points(x, labels)
    p = plot_det(fpr, fnr, tmp_path / "det.png", m.eer, m.min_dcf)
    assert p.read_bytes()[:8] == PNG and p.stat().st_size > 1000


def test_model_beside_baseline_png_with_and_without_intervals(tmp_path):
    rows = [("clean", 7.36, 11.67), ("gain", 7.45, 14.22), ("replay", 12.78, 21.08)]
    plain = plot_beside_baseline(rows, tmp_path / "a" / "conditions.png", "test EER per condition")
    ivs = {"clean": (-10.03, -2.03), "replay": (-14.86, -3.89)}
    marked = plot_beside_baseline(rows, tmp_path / "field.png", "field check", ivs)
    for path in (plain, marked):
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
