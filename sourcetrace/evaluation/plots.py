"""PNG figures of an analysis: confusion matrix, UMAP of embeddings, DET curve, model-vs-baseline bars.

Figures are plain ``matplotlib.figure.Figure`` objects rendered by the Agg canvas: no pyplot, no display,
no global backend switch (importing this module changes nothing in a notebook), nothing to leak.
Each function writes one PNG and returns its path.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_DET_TICKS = [0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9]


def _figure(width: float, height: float):
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots()


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def plot_confusion(confusion: pd.DataFrame, path: str | os.PathLike, title: str = "Linear probe") -> Path:
    """Heat map of row-normalised counts (recall per true system), counts written in the cells."""
    counts = confusion.to_numpy(dtype=float)
    rows = counts.sum(1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    k = max(len(confusion.index), len(confusion.columns))
    size = min(4 + 0.35 * k, 30)
    fig, ax = _figure(size + 1.5, size)
    im = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    ax.set_xticks(range(len(confusion.columns)), [str(c) for c in confusion.columns], rotation=90, fontsize=7)
    ax.set_yticks(range(len(confusion.index)), [str(c) for c in confusion.index], fontsize=7)
    ax.set_xlabel("predicted system")
    ax.set_ylabel("true system")
    ax.set_title(title)
    if k <= 40:
        for i, j in zip(*np.nonzero(counts)):
            ax.text(
                j,
                i,
                f"{int(counts[i, j])}",
                ha="center",
                va="center",
                fontsize=6,
                color="white" if frac[i, j] > 0.5 else "black",
            )
    fig.colorbar(im, ax=ax, fraction=0.04, label="fraction of the true system's clips")
    return _save(fig, path)


def umap_coordinates(embeddings: Any, seed: int = 0, n_neighbors: int = 15, metric: str = "cosine") -> np.ndarray:
    """2-D UMAP of ``embeddings`` [n, d] (umap-learn, seeded: deterministic, single-threaded)."""
    import umap

    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"UMAP needs at least 4 embeddings [n, d]; got shape {x.shape}")
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=max(2, min(n_neighbors, len(x) - 1)),
        metric=metric,
        random_state=seed,
        n_jobs=1,
        init="spectral" if len(x) > 10 else "random",
    )
    return np.asarray(reducer.fit_transform(x), dtype=np.float32)


def plot_umap(
    coords: Any, systems: Sequence[str], seen: Sequence[bool], path: str | os.PathLike, title: str = "UMAP"
) -> Path:
    """Scatter of 2-D coordinates coloured by system; seen systems as dots, unseen as crosses."""
    xy = np.asarray(coords)
    names = np.asarray(systems).astype(str)
    seen = np.asarray(seen, dtype=bool)
    if not (len(xy) == len(names) == len(seen)):
        raise ValueError(f"{len(xy)} points, {len(names)} systems and {len(seen)} seen flags must match")
    order = sorted(set(names), key=lambda s: (not seen[names == s].any(), s))  # seen first in the legend
    cmap = colormaps["tab20" if len(order) <= 20 else "turbo"]
    colours = [cmap(i if len(order) <= 20 else i / max(len(order) - 1, 1)) for i in range(len(order))]
    fig, ax = _figure(10, 8)
    for colour, s in zip(colours, order):
        m = names == s
        unseen = not seen[m].any()
        ax.scatter(
            xy[m, 0],
            xy[m, 1],
            s=14 if unseen else 8,
            color=colour,
            marker="x" if unseen else "o",
            alpha=0.8,
            linewidths=1.0 if unseen else 0,
            label=f"{s}{' (unseen)' if unseen else ''}",
        )
    ax.set_title(f"{title}  (o seen systems, x unseen)")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(
        loc="center left",
        bbox_to_anchor=(1.01, 0.5),
        fontsize=7,
        markerscale=1.5,
        ncol=1 if len(order) <= 32 else 2,
        frameon=False,
    )
    return _save(fig, path)


def plot_det(
    fpr: Any,
    fnr: Any,
    path: str | os.PathLike,
    eer: float,
    min_dcf: float,
    label: str = "all pairs",
    title: str = "DET (cosine, all pairs)",
) -> Path:
    """DET curve on normal-deviate axes with the EER point; ``eer`` in percent, minDCF in the legend."""
    from scipy.special import ndtri

    fpr, fnr = np.asarray(fpr, dtype=float), np.asarray(fnr, dtype=float)
    lo, hi = _DET_TICKS[0], _DET_TICKS[-1]
    px, py = ndtri(np.clip(fpr, lo / 2, 1 - lo / 2)), ndtri(np.clip(fnr, lo / 2, 1 - lo / 2))
    fig, ax = _figure(6, 6)
    ax.plot(px, py, lw=1.5, label=f"{label}: EER {eer:.2f}%, minDCF {min_dcf:.3f}")
    e = ndtri(np.clip(eer / 100.0, lo / 2, 1 - lo / 2))
    ax.plot([e], [e], "o", color="crimson", label=f"EER point ({eer:.2f}%)")
    ax.plot([ndtri(lo), ndtri(hi)], [ndtri(lo), ndtri(hi)], ":", color="grey", lw=0.8)
    ticks = ndtri(np.array(_DET_TICKS))
    names = [f"{100 * t:g}" for t in _DET_TICKS]
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlim(ndtri(lo), ndtri(hi))
    ax.set_ylim(ndtri(lo), ndtri(hi))
    ax.set_xlabel("false acceptance rate (%)")
    ax.set_ylabel("false rejection rate (%)")
    ax.set_title(title)
    ax.grid(True, lw=0.3)
    ax.legend(loc="upper right", fontsize=8)
    return _save(fig, path)


def plot_reliability(reliabilities: Sequence[Any], path: str | os.PathLike, title: str = "Reliability") -> Path:
    """Reliability diagrams side by side, one per ``calibration.Reliability``: per equal-width probability
    bin, the fraction of positive outcomes (bar) and the mean predicted probability (red line; the gap between
    the two is the bin's calibration error, and the diagonal is perfect calibration), the ECE in each panel's
    title and the clips per bin along the bottom."""
    rels = list(reliabilities)
    if not rels:
        raise ValueError("no reliability to plot")
    fig = Figure(figsize=(5 * len(rels), 5.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(rels), squeeze=False)[0]
    for ax, rel in zip(axes, rels):
        edges = np.asarray(rel.edges, dtype=float)
        width = np.diff(edges)
        acc = np.array([np.nan if a is None else a for a in rel.accuracy], dtype=float)
        conf = np.array([np.nan if c is None else c for c in rel.confidence], dtype=float)
        ax.bar(
            edges[:-1],
            np.nan_to_num(acc),
            width=width,
            align="edge",
            color="steelblue",
            alpha=0.8,
            edgecolor="white",
            label="observed fraction",
        )
        ax.hlines(conf, edges[:-1], edges[1:], colors="crimson", lw=2, label="mean predicted probability")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
        for x, w, n in zip(edges[:-1], width, rel.count):
            if n:
                ax.text(x + w / 2, 0.02, str(n), ha="center", va="bottom", fontsize=6, rotation=90)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel(f"predicted probability ({rel.what})")
        ax.set_ylabel("observed fraction")
        ax.set_title(f"{rel.what}: ECE {rel.ece:.3f} ({rel.n} clips)", fontsize=9)
        ax.legend(loc="best", fontsize=7)
    fig.suptitle(title)
    return _save(fig, path)


def plot_beside_baseline(
    rows: Sequence[tuple[str, float, float]],
    path: str | os.PathLike,
    title: str,
    intervals: dict[str, tuple[float, float]] | None = None,
) -> Path:
    """Horizontal bars of EER % per condition, the model beside the featureless baseline; ``rows`` are
    (condition, model EER, baseline EER). With ``intervals`` (condition -> the 95 % interval of model -
    baseline), each condition's label carries it."""
    fig, ax = _figure(7.5, 0.45 * len(rows) + 1.2)
    y = np.arange(len(rows))
    model = [r[1] for r in rows]
    base = [r[2] for r in rows]
    ax.barh(y - 0.2, model, height=0.4, color="tab:blue", label="model")
    ax.barh(y + 0.2, base, height=0.4, color="tab:gray", label="featureless baseline")
    labels = []
    for name, m, b in rows:
        iv = (intervals or {}).get(name)
        labels.append(f"{name}\n{m - b:+.2f} [{iv[0]:+.2f}, {iv[1]:+.2f}]" if iv else name)
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("EER %")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)
