"""All-pairs EER and minDCF of cosine scores (the paper's metric), vectorised, chunked, exact.

Score = cosine of every unordered pair i < j (no self pairs); target = same label. The EER is the
point where FPR = FNR on the ROC whose vertices are the distinct scores, joined by straight lines
(the usual ``brentq(1 - x - interp1d(fpr, tpr)(x))`` recipe over sklearn's ``roc_curve``).

How (n = 34 000 gives 578 M pairs): rows are sorted by label so the target pairs of a row block are
a narrow staircase next to the diagonal; row blocks x the columns to their right are scored by one
matmul that directly yields u = c·(cos + 1 + δ) (c = K/(2 + 2δ), δ = 2^-8 so rounding never leaves
[0, K)), and int(u) is a bin of K = 2^18 bins (width 7.6e-6 in cosine; a table that stays in cache), counted
with bincount (split over torch.get_num_threads() threads). Scores are ranked as the float32 u (a monotone
rescaling of the cosine, resolution ~1.2e-7 in cosine units).
- EER: the crossing lies between the ROC vertices at the two edges of one bin, so the exact EER is
  inside [max(FPR_hi, FNR_lo), min(FPR_lo, FNR_hi)], whose width <= min(targets in bin / N_target,
  non-targets in bin / N_non-target). If that width exceeds ``tolerance`` (percentage points) a second
  pass collects the scores of that bin and resolves them exactly by sorting.
- minDCF: minimum over the K + 1 bin-edge thresholds (resolution: one bin, 7.6e-6 in cosine); it
  exceeds the exact minDCF by at most the DCF mass of one bin, negligible at these sizes.
- Up to ``sort_below`` pairs everything is exact: all pair scores are sorted.
Peak memory is O(block) + O(K): about 0.35 GB above the inputs, whatever n is. At 34 000 clips the
histogram bound is ~5e-4 pp, so one pass suffices; the exact second pass costs about one more pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

BINS = 2**18
_DELTA = 2.0**-8
_BLOCK_ELEMS = 1 << 23  # scores per chunk (32 MB of float32)


@dataclass(frozen=True)
class PairMetrics:
    """EER (percent), normalised minDCF, the EER threshold (cosine) and the pair counts.

    ``threshold``: the score of the ROC vertex that ends the EER segment when resolved exactly, else the
    lower edge of the crossing bin (within 7.6e-6).
    """

    eer: float
    min_dcf: float
    threshold: float
    n_target: int
    n_nontarget: int


def all_pairs_eer(embeddings: Any, labels: Any, **kw: Any) -> float:
    """EER in percent over all pairs, e.g. two well separated classes give 0:

    >>> all_pairs_eer([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]], ["a", "a", "b", "b"])
    0.0
    """
    return all_pairs_metrics(embeddings, labels, **kw).eer


def all_pairs_metrics(
    embeddings: Any,
    labels: Any,
    p_target: float = 0.05,
    c_miss: float = 1.0,
    c_fa: float = 1.0,
    *,
    tolerance: float = 1e-3,
    sort_below: int = 2_000_000,
    bins: int = BINS,
) -> PairMetrics:
    """EER, minDCF (normalised, NIST style) and threshold over all pairs; see the module docstring.

    ``tolerance``: largest EER error (percentage points) accepted from the histogram; above it a second
    pass makes the EER exact (0 = always exact). ``sort_below``: pair counts up to this are sorted outright.
    """
    if not 0.0 < p_target < 1.0 or c_miss <= 0 or c_fa <= 0:
        raise ValueError(f"need 0 < p_target < 1 and positive costs, got {p_target}, {c_miss}, {c_fa}")
    pairs = _Pairs(embeddings, labels, bins)
    if pairs.n_pairs <= sort_below:
        u, tgt = pairs.collect(-math.inf, math.inf)
        fpr, fnr, thr = _vertices_sorted(u, tgt, 0, 0, pairs.n_target, pairs.n_nontarget)
        eer, k = roc_crossing(fpr, fnr)
        dcf = _min_dcf(fpr, fnr, p_target, c_miss, c_fa)
        return PairMetrics(100 * eer, dcf, pairs.cosine(thr[k]), pairs.n_target, pairs.n_nontarget)
    h_tar, h_non = pairs.histograms()
    fpr, fnr = _vertices_hist(h_tar, h_non, pairs.n_target, pairs.n_nontarget)
    eer, k = roc_crossing(fpr, fnr)  # vertex k = accept bins >= K - k; the crossing is inside bin K - k
    dcf = _min_dcf(fpr, fnr, p_target, c_miss, c_fa)
    b = bins - k
    width = min(fpr[k] - fpr[k - 1], fnr[k - 1] - fnr[k])
    threshold = pairs.cosine(float(b))
    if 100 * width > tolerance:
        u, tgt = pairs.collect(float(b), float(b + 1))
        if int(tgt.sum()) != int(h_tar[b]) or len(tgt) - int(tgt.sum()) != int(h_non[b]):
            raise RuntimeError(
                "second EER pass did not reproduce the first pass's bin counts (non-deterministic matmul?)"
            )
        tp0, fp0 = int(h_tar[b + 1 :].sum()), int(h_non[b + 1 :].sum())  # accepted above the bin
        sfpr, sfnr, thr = _vertices_sorted(u, tgt, tp0, fp0, pairs.n_target, pairs.n_nontarget)
        eer, j = roc_crossing(sfpr, sfnr)
        threshold = pairs.cosine(thr[j])
    return PairMetrics(100 * eer, dcf, threshold, pairs.n_target, pairs.n_nontarget)


def det_points(embeddings: Any, labels: Any, max_points: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, FNR) arrays of the DET curve, at most ``max_points`` spread evenly along the curve in
    probit (normal deviate) space, as a DET plot draws it; bin resolution for large sets."""
    pairs = _Pairs(embeddings, labels, BINS)
    if pairs.n_pairs <= 2_000_000:
        u, tgt = pairs.collect(-math.inf, math.inf)
        fpr, fnr, _ = _vertices_sorted(u, tgt, 0, 0, pairs.n_target, pairs.n_nontarget)
    else:
        fpr, fnr = _vertices_hist(*pairs.histograms(), pairs.n_target, pairs.n_nontarget)
    keep = np.r_[True, (np.diff(fpr) != 0) | (np.diff(fnr) != 0)]
    fpr, fnr = fpr[keep], fnr[keep]
    if len(fpr) > max_points:
        from scipy.special import ndtri

        eps = 0.5 / max(pairs.n_target, pairs.n_nontarget)
        px, py = ndtri(np.clip(fpr, eps, 1 - eps)), ndtri(np.clip(fnr, eps, 1 - eps))
        arc = np.r_[0.0, np.cumsum(np.hypot(np.diff(px), np.diff(py)))]
        idx = np.unique(np.searchsorted(arc, np.linspace(0, arc[-1], max_points)).clip(0, len(arc) - 1))
        fpr, fnr = fpr[idx], fnr[idx]
    return fpr, fnr


# -- ROC maths on vertices ------------------------------------------------------------------------
def _vertices_sorted(u: np.ndarray, tgt: np.ndarray, tp0: int, fp0: int, n_tar: int, n_non: int):
    """ROC vertices (descending thresholds) from scores, starting after tp0 / fp0 accepted pairs."""
    order = np.argsort(-u, kind="stable")
    u, tgt = u[order], tgt[order]
    last = np.r_[u[1:] != u[:-1], True]  # end of each group of tied scores
    tp = tp0 + np.cumsum(tgt)[last]
    fp = fp0 + np.cumsum(~tgt)[last]
    fpr = np.r_[fp0, fp] / n_non
    fnr = 1.0 - np.r_[tp0, tp] / n_tar
    thr = np.r_[np.inf, u[last]]
    return fpr, fnr, thr


def _vertices_hist(h_tar: np.ndarray, h_non: np.ndarray, n_tar: int, n_non: int):
    """ROC vertices at the bin edges, from the top bin down (vertex k accepts the top k bins)."""
    fpr = np.r_[0, np.cumsum(h_non[::-1])] / n_non
    fnr = 1.0 - np.r_[0, np.cumsum(h_tar[::-1])] / n_tar
    return fpr, fnr


def roc_crossing(fpr: np.ndarray, fnr: np.ndarray) -> tuple[float, int]:
    """(EER, k): where FPR meets FNR on the segment between vertex k-1 (the last with FPR < FNR) and k.

    >>> roc_crossing(np.array([0.0, 0.5, 1.0]), np.array([1.0, 0.25, 0.0]))
    (0.4, 1)
    """
    k = int(np.argmax(fpr >= fnr))
    if k == 0:
        return float(fpr[0]), 0
    x0, y0, x1, y1 = fpr[k - 1], fnr[k - 1], fpr[k], fnr[k]
    a = (y0 - x0) / ((y0 - x0) + (x1 - y1))
    return float(x0 + a * (x1 - x0)), k


def _min_dcf(fpr: np.ndarray, fnr: np.ndarray, p: float, c_miss: float, c_fa: float) -> float:
    dcf = c_miss * p * fnr + c_fa * (1 - p) * fpr
    return float(dcf.min() / min(c_miss * p, c_fa * (1 - p)))


# -- scoring all pairs in chunks ------------------------------------------------------------------
class _Pairs:
    """Label-sorted unit embeddings; yields the rescaled scores u of all pairs i < j block by block."""

    def __init__(self, embeddings: Any, labels: Any, bins: int):
        x = embeddings if isinstance(embeddings, torch.Tensor) else torch.as_tensor(np.asarray(embeddings))
        lab = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if x.dim() != 2 or lab.ndim != 1 or len(lab) != x.shape[0]:
            raise ValueError(f"need embeddings [n, d] and labels [n], got {list(x.shape)} and {list(lab.shape)}")
        if x.shape[0] < 2:
            raise ValueError(f"all-pairs EER needs at least 2 embeddings, got {x.shape[0]}")
        x = x.detach().float()
        bad = ~torch.isfinite(x).all(dim=1)
        if bool(bad.any()):
            raise ValueError(f"embedding row {int(bad.nonzero()[0])} is not finite (NaN or inf)")
        _, codes = np.unique(lab, return_inverse=True)
        order = np.argsort(codes, kind="stable")
        codes = codes[order].astype(np.int64)
        counts = np.bincount(codes).astype(np.int64)
        n = len(codes)
        self.n_pairs = n * (n - 1) // 2
        self.n_target = int((counts * (counts - 1) // 2).sum())
        self.n_nontarget = self.n_pairs - self.n_target
        if self.n_nontarget == 0:
            raise ValueError(f"all-pairs EER needs at least 2 labels (no non-target pairs); got only {lab[0]!r}")
        if self.n_target == 0:
            raise ValueError(
                f"all-pairs EER needs a label with at least 2 clips (no target pairs); {n} labels, 1 clip each"
            )
        self.bins, self.n = bins, n
        self.scale = bins / (2 + 2 * _DELTA)
        x = torch.nn.functional.normalize(x[torch.as_tensor(order, device=x.device)], dim=1)
        ones = torch.ones(n, 1, device=x.device)
        self.left = torch.cat([x * self.scale, ones * (self.scale * (1 + _DELTA))], 1).contiguous()
        self.right_t = torch.cat([x, ones], 1).T.contiguous()
        self.codes = torch.as_tensor(codes, device=x.device)
        self.class_end = torch.as_tensor(np.cumsum(counts)[codes], device=x.device)  # end of each row's class

    def cosine(self, u: float) -> float:
        """Cosine of a rescaled score u (float64 arithmetic)."""
        u = float(u)
        return u / self.scale - 1 - _DELTA if math.isfinite(u) else u

    def blocks(self) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
        """(a, b, square u [b, b], right u [b, n - a - b]) for row blocks [a, a + b)."""
        a, n = 0, self.n
        while a < n - 1:
            b = max(1, min(n - a, _BLOCK_ELEMS // (n - a)))
            rows = self.left[a : a + b]
            yield a, b, rows @ self.right_t[:, a : a + b], rows @ self.right_t[:, a + b :]
            a += b

    def _masks(self, a: int, b: int, width: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
        """Square: valid (j > i) and target masks; right: target mask over its first w columns."""
        dev = self.left.device
        r = torch.arange(b, device=dev)
        codes = self.codes[a : a + b]
        valid = r[None, :] > r[:, None]
        sq_tar = valid & (codes[:, None] == codes[None, :])
        stop = self.class_end[a : a + b] - (a + b)  # target columns of the right part: [0, stop)
        w = int(min(max(int(stop.max()), 0), width))
        right_tar = torch.arange(w, device=dev)[None, :] < stop[:, None]
        return valid, sq_tar, right_tar, w

    def histograms(self) -> tuple[np.ndarray, np.ndarray]:
        """Target and non-target counts per bin (int64 arrays of length ``bins``)."""
        dev = self.left.device
        h_all = torch.zeros(self.bins, dtype=torch.int64, device=dev)
        h_tar = torch.zeros(self.bins, dtype=torch.int64, device=dev)
        threads = torch.get_num_threads() if dev.type == "cpu" else 1
        with ThreadPoolExecutor(max(threads, 1)) as pool:
            for a, b, sq, right in self.blocks():
                valid, sq_tar, right_tar, w = self._masks(a, b, right.shape[1])
                isq = sq.to(torch.int32)
                iright = right.to(torch.int32)
                h_all += self._count(isq[valid], pool, threads) + self._count(iright.reshape(-1), pool, threads)
                h_tar += self._count(isq[sq_tar], pool, 1) + self._count(iright[:, :w][right_tar], pool, threads)
        h_tar_np, h_all_np = h_tar.cpu().numpy(), h_all.cpu().numpy()
        if int(h_all_np.sum()) != self.n_pairs or int(h_tar_np.sum()) != self.n_target:
            raise RuntimeError("pair histogram lost pairs (internal error)")
        return h_tar_np, h_all_np - h_tar_np

    def _count(self, idx: torch.Tensor, pool: ThreadPoolExecutor, threads: int) -> torch.Tensor:
        if threads <= 1 or idx.numel() < (1 << 20):
            parts = [torch.bincount(idx, minlength=self.bins)]
        else:
            parts = list(pool.map(lambda c: torch.bincount(c, minlength=self.bins), idx.chunk(threads)))
        out = parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)
        if out.numel() != self.bins:
            raise RuntimeError(f"score rescaling left [0, {self.bins}) (internal error)")
        return out

    def collect(self, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
        """Rescaled scores u with lo <= u < hi and their target flags (numpy float32, bool)."""
        us, ts = [], []
        for a, b, sq, right in self.blocks():
            valid, sq_tar, right_tar, w = self._masks(a, b, right.shape[1])
            m = valid & (sq >= lo) & (sq < hi)
            us.append(sq[m]), ts.append(sq_tar[m])
            m = (right >= lo) & (right < hi)
            rows, cols = m.nonzero(as_tuple=True)
            us.append(right[rows, cols])
            ts.append(self.codes[a + b + cols] == self.codes[a + rows])
        return torch.cat(us).cpu().numpy(), torch.cat(ts).cpu().numpy()
