"""How sure is "the model beats the baseline"? A paired two-level bootstrap of the all-pairs EER difference.

Both scorers are scored on the same resamples: systems are drawn with replacement, then clips with
replacement within each drawn system (a system drawn twice brings two independent draws of its clips). A
resample is a weight per clip (how many times it was drawn); a pair of distinct clips counts with the
product of their weights, and a clip is never paired with a copy of itself. The EER of a weighted pair set
comes from weighted score histograms (``BINS`` bins over [-1, 1] of the cosine), so one resample costs two
``bincount`` calls over the pairs, not a new matrix.

``interval`` returns model EER - baseline EER in percentage points with its 95 % percentile interval; a
verdict says "beats" only when the interval lies wholly below ``-margin`` and "loses" only when it lies
wholly above ``+margin`` (``decide``). Above ``MAX_CLIPS`` clips a seeded sample per system stands in for the
split (said in the result), so the cost stays bounded on MLAAD-sized splits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

BINS = 2000  # cosine resolution 0.001: far below the EER differences a verdict is about
N_BOOT = 500
MAX_CLIPS = 2500  # ~3.1 M pairs: ~0.1 s per resample and scorer on 2 cores
MARGIN_PP = 0.0  # "beats" = the whole interval below -MARGIN_PP


@dataclass(frozen=True)
class Interval:
    """Model EER - baseline EER (pp), its 95 % bootstrap interval, and what it was computed on."""

    diff: float
    lo: float
    hi: float
    n_boot: int
    n_clips: int
    n_systems: int
    margin: float = MARGIN_PP

    @property
    def verdict(self) -> str:
        return decide(self.lo, self.hi, self.margin)

    def text(self) -> str:
        """``-4.31 pp [-6.02, -2.71]``."""
        return f"{self.diff:+.2f} pp [{self.lo:+.2f}, {self.hi:+.2f}]"

    def to_dict(self) -> dict:
        return asdict(self) | {"verdict": self.verdict}


def decide(lo: float, hi: float, margin: float = MARGIN_PP) -> str:
    """``beats`` (interval wholly below -margin), ``loses`` (wholly above +margin), else ``cannot tell``.

    >>> decide(-3.0, -0.5), decide(-1.0, 0.2), decide(0.1, 2.0), decide(-3.0, -0.5, margin=1.0)
    ('beats', 'cannot tell', 'loses', 'cannot tell')
    """
    if hi < -margin:
        return "beats"
    if lo > margin:
        return "loses"
    return "cannot tell"


class _Pairs:
    """The upper-triangle pairs of one embedding set: histogram bin and same-system flag per pair."""

    def __init__(self, emb: np.ndarray, systems: np.ndarray):
        e = np.asarray(emb, dtype=np.float32)
        e = e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)
        self.i, self.j = np.triu_indices(len(e), k=1)
        cos = (e @ e.T)[self.i, self.j]
        self.bin = np.clip(((cos + 1.0) * (BINS / 2)).astype(np.int32), 0, BINS - 1)
        self.target = systems[self.i] == systems[self.j]

    def eer(self, w: np.ndarray) -> float:
        """EER (%) of the pairs weighted by w_i w_j."""
        pw = w[self.i] * w[self.j]
        tar = np.bincount(self.bin[self.target], pw[self.target], minlength=BINS)
        non = np.bincount(self.bin[~self.target], pw[~self.target], minlength=BINS)
        if tar.sum() <= 0 or non.sum() <= 0:
            return float("nan")
        frr = np.concatenate([[0.0], np.cumsum(tar)]) / tar.sum()  # targets below each threshold
        far = 1.0 - np.concatenate([[0.0], np.cumsum(non)]) / non.sum()  # non-targets at or above it
        k = int(np.argmin(np.abs(frr - far)))
        return float(100.0 * (frr[k] + far[k]) / 2)


def _sample(systems: np.ndarray, max_clips: int, rng: np.random.Generator) -> np.ndarray:
    """Row indices: every row, or a seeded sample of about ``max_clips`` spread evenly over the systems."""
    if len(systems) <= max_clips:
        return np.arange(len(systems))
    names = np.unique(systems)
    per = max(2, max_clips // len(names))
    keep = [rng.permutation(np.flatnonzero(systems == s))[:per] for s in names]
    return np.sort(np.concatenate(keep))


def interval(
    model_emb: np.ndarray,
    baseline_emb: np.ndarray,
    systems,
    n_boot: int = N_BOOT,
    seed: int = 0,
    max_clips: int = MAX_CLIPS,
    margin: float = MARGIN_PP,
    point: float | None = None,
) -> Interval | None:
    """Paired bootstrap of model - baseline all-pairs EER over systems and clips within them (None when the
    clips give no EER: one system, or no system with two clips). ``point``: the difference of the exact EERs
    (``all_pairs_metrics``), reported as the estimate; default the histogram's, within a bin of it."""
    systems = np.asarray(systems).astype(str)
    rng = np.random.default_rng(seed)
    rows = _sample(systems, max_clips, rng)
    systems = systems[rows]
    names, codes = np.unique(systems, return_inverse=True)
    if len(names) < 2 or np.bincount(codes).max() < 2:
        return None
    pairs = [_Pairs(np.asarray(e)[rows], systems) for e in (model_emb, baseline_emb)]
    members = [np.flatnonzero(codes == k) for k in range(len(names))]
    ones = np.ones(len(rows))
    if point is None:
        point = pairs[0].eer(ones) - pairs[1].eer(ones)
    diffs = []
    for _ in range(n_boot):
        w = np.zeros(len(rows))
        for k in rng.integers(0, len(names), len(names)):  # systems with replacement
            m = members[k]
            np.add.at(w, m, np.bincount(rng.integers(0, len(m), len(m)), minlength=len(m)))  # clips within
        d = pairs[0].eer(w) - pairs[1].eer(w)
        if np.isfinite(d):
            diffs.append(d)
    if not diffs:
        return None
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return Interval(float(point), float(lo), float(hi), len(diffs), int(len(rows)), int(len(names)), margin)
