"""Open-set source tracing: is a clip from a known system, and which one?

Known systems are represented by centroids of reference (training) embeddings. A clip's score is its
highest cosine to a centroid; "known" clips (label >= 0: systems of train) should score higher than
clips of systems absent from train. Reported: AUROC and EER of that known-vs-unknown detection,
and closed-set accuracy / macro-F1 of nearest-centroid classification on the known clips.

The "unknown" threshold is calibrated on dev. Default operating point: a 5 % false-unknown rate on
known systems (``"fur"``). Why not the dev EER point: it depends on which unseen systems dev happens to
hold (MLAAD's eval holds others), and it cannot be computed at all when a calibration set has no
unseen systems; the false-unknown rate needs only known-system clips and tells an analyst directly how
often a clip of a system already on file is wrongly called "unknown". ``"eer"`` is available too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

OPERATING_POINTS = ("fur", "eer")


def _unit(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"need embeddings [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"embedding row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])} is not finite")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def class_centroids(embeddings: Any, systems: Sequence[str]) -> tuple[list[str], np.ndarray]:
    """(sorted system names, unit-length mean of each system's unit embeddings [k, d])."""
    x = _unit(embeddings)
    names = np.asarray(systems).astype(str)
    if len(names) != len(x):
        raise ValueError(f"{len(x)} embeddings but {len(names)} system names")
    order = sorted(set(names))
    means = np.stack([x[names == s].mean(0) for s in order]) if order else np.zeros((0, x.shape[1]), np.float32)
    return order, _unit(means) if len(order) else means


def centroid_scores(embeddings: Any, centroids: Any) -> np.ndarray:
    """Cosine of every clip to every centroid [n, k]."""
    return _unit(embeddings) @ _unit(centroids).T


def binary_eer(scores: Any, positive: Any) -> tuple[float, float]:
    """(EER in percent, threshold) of ``score >= threshold`` accepting positives."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("an EER needs both positive (known) and negative (unknown) clips")
    fpr, tpr, thr = roc_curve(positive, scores)
    fnr = 1.0 - tpr
    k = int(np.argmax(fpr >= fnr))
    if k == 0:
        return 100.0 * float(fpr[0]), float(thr[0])
    x0, y0, x1, y1 = fpr[k - 1], fnr[k - 1], fpr[k], fnr[k]
    a = (y0 - x0) / ((y0 - x0) + (x1 - y1))
    return 100.0 * float(x0 + a * (x1 - x0)), float(thr[k])


@dataclass(frozen=True)
class Threshold:
    """An "unknown" threshold (score < value -> unknown) and the rates it gave on its calibration set."""

    value: float
    operating_point: str  # "fur" (target false-unknown rate on known systems) or "eer"
    target: float | None  # the false-unknown rate aimed at ("fur")
    false_unknown_rate: float  # known clips called unknown
    false_known_rate: float | None  # unknown clips accepted as known (None: no unknown clips)
    n_known: int
    n_unknown: int
    split: str = "dev"

    def describe(self) -> str:
        """One line for output headers."""
        point = (
            f"{100 * self.target:g}% false-unknown rate on known systems"
            if self.operating_point == "fur"
            else "EER point of known-vs-unknown detection"
        )
        fkr = "" if self.false_known_rate is None else f", false-known {100 * self.false_known_rate:.1f}%"
        return (
            f"'unknown' below cosine {self.value:.4f}: {point} on {self.split} ({self.n_known} known / "
            f"{self.n_unknown} unknown clips; false-unknown {100 * self.false_unknown_rate:.1f}%{fkr})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(
    scores: Any, is_known: Any, operating_point: str = "fur", target: float = 0.05, split: str = "dev"
) -> Threshold:
    """Pick the "unknown" threshold from calibration scores (max cosine to the known centroids).

    ``fur``: the highest threshold whose false-unknown rate on known clips is <= ``target``.
    ``eer``: the known-vs-unknown EER threshold (needs unknown clips).
    """
    scores, is_known = np.asarray(scores, dtype=np.float64), np.asarray(is_known, dtype=bool)
    if scores.shape != is_known.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and is_known {is_known.shape} must be matching 1-D arrays")
    known, unknown = scores[is_known], scores[~is_known]
    if len(known) == 0:
        raise ValueError(f"cannot calibrate the 'unknown' threshold: no clips of known systems in {split}")
    if operating_point == "fur":
        if not 0.0 < target < 1.0:
            raise ValueError(f"target false-unknown rate must be in (0, 1), got {target}")
        value = float(np.sort(known)[int(np.floor(target * len(known)))])  # floor(target n) known clips below
    elif operating_point == "eer":
        if len(unknown) == 0:
            raise ValueError(f"the 'eer' operating point needs clips of unknown systems in {split}; use 'fur'")
        value = binary_eer(scores, is_known)[1]
    else:
        raise ValueError(f"unknown operating point {operating_point!r}; valid: {', '.join(OPERATING_POINTS)}")
    return Threshold(
        value=value,
        operating_point=operating_point,
        target=float(target) if operating_point == "fur" else None,
        false_unknown_rate=float((known < value).mean()),
        false_known_rate=float((unknown >= value).mean()) if len(unknown) else None,
        n_known=int(len(known)),
        n_unknown=int(len(unknown)),
        split=split,
    )


@dataclass
class OpenSetResult:
    """Known-vs-unknown detection and closed-set nearest-centroid scores of one split."""

    auroc: float | None  # None when the split has only known or only unknown systems
    eer: float | None  # percent
    eer_threshold: float | None
    closed_accuracy: float | None
    closed_macro_f1: float | None
    n_known: int
    n_unknown: int
    unknown_systems: list[str]
    scores: np.ndarray  # max cosine per clip (the detection score)
    predicted: list[str]  # nearest centroid per clip

    def metrics(self, prefix: str = "openset_") -> dict[str, float]:
        """Flat float metrics; undefined ones are left out."""
        vals = {
            "auroc": self.auroc,
            "eer": self.eer,
            "closed_accuracy": self.closed_accuracy,
            "closed_macro_f1": self.closed_macro_f1,
            "n_known": self.n_known,
            "n_unknown": self.n_unknown,
        }
        return {prefix + k: float(v) for k, v in vals.items() if v is not None}


def openset_metrics(
    ref_embeddings: Any,
    ref_systems: Sequence[str],
    embeddings: Any,
    systems: Sequence[str],
    known_systems: Sequence[str] | None = None,
) -> OpenSetResult:
    """Score ``embeddings`` against centroids of the reference clips of ``known_systems`` (default: every
    reference system). A clip is "known" when its system is one of them."""
    ref_names = np.asarray(ref_systems).astype(str)
    known = sorted(set(ref_names) if known_systems is None else set(map(str, known_systems)))
    missing = sorted(set(known) - set(ref_names))
    if missing:
        raise ValueError(f"no reference clips for known system(s): {', '.join(missing)}")
    ref_x = np.asarray(ref_embeddings)
    keep = np.isin(ref_names, known)
    names, cents = class_centroids(ref_x[keep], ref_names[keep])
    sys_names = np.asarray(systems).astype(str)
    sims = centroid_scores(embeddings, cents)
    if len(sys_names) != len(sims):
        raise ValueError(f"{len(sims)} embeddings but {len(sys_names)} system names")
    score = sims.max(1)
    pred = np.asarray(names)[sims.argmax(1)]
    is_known = np.isin(sys_names, names)
    auroc = eer = thr = acc = f1 = None
    if is_known.any() and not is_known.all():
        auroc = float(roc_auc_score(is_known, score))
        eer, thr = binary_eer(score, is_known)
    if is_known.any():
        acc = float(accuracy_score(sys_names[is_known], pred[is_known]))
        present = sorted(set(sys_names[is_known]))
        f1 = float(f1_score(sys_names[is_known], pred[is_known], labels=present, average="macro", zero_division=0))
    return OpenSetResult(
        auroc=auroc,
        eer=eer,
        eer_threshold=thr,
        closed_accuracy=acc,
        closed_macro_f1=f1,
        n_known=int(is_known.sum()),
        n_unknown=int((~is_known).sum()),
        unknown_systems=sorted(set(sys_names[~is_known])),
        scores=score,
        predicted=list(pred),
    )
