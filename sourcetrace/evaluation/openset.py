"""Open-set source tracing: is a clip from a known system, and which one?

An open-set scorer (``sourcetrace.evaluation.scorers``: centroid cosine, k-nearest neighbours,
Mahalanobis ...) is fitted on reference embeddings of the known systems (``reference_rows``: the one
policy for which training clips those are). Its knownness should be higher for "known" clips (systems
of train) than for clips of systems absent from train. Reported: AUROC, EER and FPR95 (unknown clips
accepted when 95 % of known clips are) of that known-vs-unknown detection, the false-known rate at a
given threshold, and closed-set accuracy / macro-F1 of the best-matching system on the known clips.

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
import pandas as pd
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score, roc_curve

from sourcetrace.evaluation.eer import roc_crossing
from sourcetrace.evaluation.scorer_base import OpenSetScorer, ScorerError
from sourcetrace.evaluation.scorers import DEFAULT_SCORER, SCORERS, fit_scorer, scorer_from_state

__all__ = [
    "DEFAULT_SCORER",
    "OPERATING_POINTS",
    "SCORERS",
    "OpenSetResult",
    "OpenSetScorer",
    "ScorerError",
    "Threshold",
    "binary_eer",
    "calibrate_threshold",
    "fit_scorer",
    "fpr_at_tpr",
    "openset_metrics",
    "openset_scores",
    "reference_rows",
    "reference_table",
    "scorer_from_state",
]

OPERATING_POINTS = ("fur", "eer")


REFERENCE_CLIPS_PER_SYSTEM = 300  # reference (training) clips per known system: all of them up to this many


def reference_rows(table: pd.DataFrame, per_system: int | None = REFERENCE_CLIPS_PER_SYSTEM, seed: int = 0):
    """Positions (``iloc``) of the reference clips of a training table: every clip of a system with at most
    ``per_system`` clips, else a sample of ``per_system`` drawn with ``seed``. One policy for the
    in-training metrics, ``analyze`` and attribution, so their open-set numbers agree."""
    systems = table["system"].to_numpy(dtype=str)
    rng = np.random.default_rng(seed)
    rows = []
    for s in sorted(set(systems)):
        pos = np.flatnonzero(systems == s)
        if per_system is not None and len(pos) > per_system:
            pos = np.sort(rng.choice(pos, per_system, replace=False))
        rows.append(pos)
    return np.sort(np.concatenate(rows)) if rows else np.zeros(0, np.int64)


def reference_table(train: pd.DataFrame, known: Sequence[str]) -> pd.DataFrame:
    """The reference clips of a model: its ``known`` systems' rows of ``train``, picked by ``reference_rows``."""
    train = train[train["system"].isin(list(known))]
    return train.iloc[reference_rows(train)]


def binary_eer(scores: Any, positive: Any) -> tuple[float, float]:
    """(EER in percent, threshold) of ``score >= threshold`` accepting positives."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("an EER needs both positive (known) and negative (unknown) clips")
    fpr, tpr, thr = roc_curve(positive, scores)
    eer, k = roc_crossing(fpr, 1.0 - tpr)
    return 100.0 * eer, float(thr[k])


def fpr_at_tpr(scores: Any, positive: Any, tpr: float = 0.95) -> float:
    """Fraction of negatives (unknown clips) scoring at or above the highest threshold that accepts at
    least ``tpr`` of the positives (known clips): FPR95 for the default, the field's open-set metric."""
    scores, positive = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("FPR at a TPR needs both positive (known) and negative (unknown) clips")
    known = np.sort(scores[positive])[::-1]
    need = int(np.ceil(tpr * len(known) - 1e-9))  # known clips that must be accepted
    value = known[max(need, 1) - 1]
    return float((scores[~positive] >= value).mean())


@dataclass(frozen=True)
class Threshold:
    """An "unknown" threshold (knownness < value -> unknown) and the rates it gave on its calibration set."""

    value: float
    operating_point: str  # "fur" (target false-unknown rate on known systems) or "eer"
    target: float | None  # the false-unknown rate aimed at ("fur")
    false_unknown_rate: float  # known clips called unknown
    false_known_rate: float | None  # unknown clips accepted as known (None: no unknown clips)
    n_known: int
    n_unknown: int
    split: str = "dev"
    scorer: str = "centroid"  # the open-set scorer whose knownness ``value`` is on

    def describe(self) -> str:
        """One line for output headers."""
        point = (
            f"{100 * self.target:g}% false-unknown rate on known systems"
            if self.operating_point == "fur"
            else "EER point of known-vs-unknown detection"
        )
        fkr = "" if self.false_known_rate is None else f", false-known {100 * self.false_known_rate:.1f}%"
        label = SCORERS[self.scorer].score_label if self.scorer in SCORERS else f"{self.scorer} score"
        return (
            f"'unknown' below {label} {self.value:.4f} ({self.scorer} scorer): {point} on {self.split} "
            f"({self.n_known} known / {self.n_unknown} unknown clips; "
            f"false-unknown {100 * self.false_unknown_rate:.1f}%{fkr})"
        )

    def to_dict(self) -> dict:
        return asdict(self)


def calibrate_threshold(
    scores: Any,
    is_known: Any,
    operating_point: str = "fur",
    target: float = 0.05,
    split: str = "dev",
    scorer: str = "centroid",
) -> Threshold:
    """Pick the "unknown" threshold from calibration knownness scores of the open-set ``scorer``.

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
        scorer=scorer,
    )


@dataclass
class OpenSetResult:
    """Known-vs-unknown detection and closed-set best-match scores of one split."""

    auroc: float | None  # None when the split has only known or only unknown systems
    eer: float | None  # percent
    eer_threshold: float | None
    closed_accuracy: float | None
    closed_macro_f1: float | None
    n_known: int
    n_unknown: int
    unknown_systems: list[str]
    scores: np.ndarray  # knownness per clip (the detection score)
    predicted: list[str]  # best-matching known system per clip
    fpr95: float | None = None  # unknown clips accepted when 95 % of known clips are
    scorer: str = "centroid"
    threshold: float | None = None  # an "unknown" threshold applied to this split, if given
    false_unknown_rate: float | None = None  # at ``threshold`` (None: no threshold or no known clips)
    false_known_rate: float | None = None  # at ``threshold`` (None: no threshold or no unknown clips)

    def metrics(self, prefix: str = "openset_") -> dict[str, float]:
        """Flat float metrics; undefined ones are left out."""
        vals = {
            "auroc": self.auroc,
            "eer": self.eer,
            "fpr95": self.fpr95,
            "closed_accuracy": self.closed_accuracy,
            "closed_macro_f1": self.closed_macro_f1,
            "n_known": self.n_known,
            "n_unknown": self.n_unknown,
            "threshold": self.threshold,
            "false_unknown_rate": self.false_unknown_rate,
            "false_known_rate": self.false_known_rate,
        }
        return {prefix + k: float(v) for k, v in vals.items() if v is not None}


def openset_scores(
    scorer: OpenSetScorer, embeddings: Any, systems: Sequence[str], threshold: Threshold | float | None = None
) -> OpenSetResult:
    """Score ``embeddings`` with a fitted scorer; a clip is "known" when its system is one of the scorer's."""
    knownness, per_system = scorer.score(embeddings)
    sys_names = np.asarray(systems).astype(str)
    if len(sys_names) != len(knownness):
        raise ValueError(f"{len(knownness)} embeddings but {len(sys_names)} system names")
    pred = np.asarray(scorer.systems)[per_system.argmax(1)] if len(knownness) else np.zeros(0, str)
    is_known = np.isin(sys_names, scorer.systems)
    auroc = eer = thr = acc = f1 = fpr95 = None
    if is_known.any() and not is_known.all():
        auroc = float(roc_auc_score(is_known, knownness))
        eer, thr = binary_eer(knownness, is_known)
        fpr95 = fpr_at_tpr(knownness, is_known, 0.95)
    if is_known.any():
        acc = float(accuracy_score(sys_names[is_known], pred[is_known]))
        present = sorted(set(sys_names[is_known]))
        f1 = float(f1_score(sys_names[is_known], pred[is_known], labels=present, average="macro", zero_division=0))
    value = threshold.value if isinstance(threshold, Threshold) else threshold
    fur = fkr = None
    if value is not None:
        fur = float((knownness[is_known] < value).mean()) if is_known.any() else None
        fkr = float((knownness[~is_known] >= value).mean()) if (~is_known).any() else None
    return OpenSetResult(
        auroc=auroc,
        eer=eer,
        eer_threshold=thr,
        closed_accuracy=acc,
        closed_macro_f1=f1,
        n_known=int(is_known.sum()),
        n_unknown=int((~is_known).sum()),
        unknown_systems=sorted(set(sys_names[~is_known])),
        scores=knownness,
        predicted=list(pred),
        fpr95=fpr95,
        scorer=scorer.name,
        threshold=None if value is None else float(value),
        false_unknown_rate=fur,
        false_known_rate=fkr,
    )


def openset_metrics(
    ref_embeddings: Any,
    ref_systems: Sequence[str],
    embeddings: Any,
    systems: Sequence[str],
    known_systems: Sequence[str] | None = None,
    *,
    scorer: str | None = None,
    threshold: Threshold | float | None = None,
    **params: Any,
) -> OpenSetResult:
    """Fit ``scorer`` (default ``DEFAULT_SCORER``) on the reference clips of ``known_systems`` (default:
    every reference system) and score ``embeddings``. A clip is "known" when its system is one of them."""
    ref_names = np.asarray(ref_systems).astype(str)
    known = sorted(set(ref_names) if known_systems is None else set(map(str, known_systems)))
    missing = sorted(set(known) - set(ref_names))
    if missing:
        raise ValueError(f"no reference clips for known system(s): {', '.join(missing)}")
    keep = np.isin(ref_names, known)
    fitted = fit_scorer(scorer or DEFAULT_SCORER, np.asarray(ref_embeddings)[keep], ref_names[keep], **params)
    return openset_scores(fitted, embeddings, systems, threshold)
