"""Calibrated outputs: the probability that a clip comes from a known system, and per system.

An open-set scorer's outputs are similarities (a cosine for ``knn`` and ``centroid``), not
probabilities: a near relative of a known system can score 0.98 and still be unknown. Two maps are
fitted at export on the dev split (never on eval) and stored in the bundle's ``calibration.json``:

* **knownness -> p_known**, Platt's logistic calibration ``p_known = 1 / (1 + exp(-(a s + b)))`` of the
  scorer's knownness ``s``, with ``a >= 0`` so that a higher score never lowers the probability. Its
  positives are dev clips of the training systems; its negatives are dev clips of systems absent from
  training (the same known / unknown construction as the "unknown" threshold), or, when dev holds no such
  system, leave-one-system-out: each training system's dev clips scored by the scorer refitted without
  it. Targets are Platt's smoothed ones ((N+ + 1) / (N+ + 2) and 1 / (N- + 2)), which keep the fit
  finite and less overconfident on a small dev set. ``p_known`` is the probability *at the dev split's
  mix of known and unknown clips*: a case file with another prior shifts it.
* **per-system scores -> p**, a softmax of the scores divided by one temperature ``T``, fitted on the dev
  clips of training systems by minimising the negative log-likelihood of their true system. ``p`` of a
  system is the probability that it made the clip *given that the clip comes from a known system*; the
  probability that it made the clip at all is ``p_known * p``.

Both maps are fitted on the training systems; systems enrolled later are scored through the same maps.

Applying a calibration needs numpy only (the trace path stays light); fitting imports scipy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from sourcetrace.errors import SourcetraceError

VERSION = 1
KNOWN_METHOD = "platt"
SYSTEM_METHOD = "temperature softmax"
NEGATIVES_UNSEEN = "dev clips of systems absent from training"
NEGATIVES_LOSO = "leave-one-system-out on dev clips of training systems"
BINS = 10  # equal-width bins of the reliability diagram and the ECE


class CalibrationError(SourcetraceError, ValueError):
    """A calibration that cannot be fitted (no known clips) or a stored one that is not valid."""


def sigmoid(x: Any) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.exp(-np.logaddexp(0.0, -x))  # 1 / (1 + exp(-x)) without overflow


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    z = x - x.max(axis=axis, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axis, keepdims=True)


@dataclass(frozen=True)
class Calibration:
    """Platt's map of knownness and the temperature over systems, with what they were fitted on."""

    scorer: str  # the open-set scorer whose outputs are calibrated
    split: str  # the split they were fitted on (dev)
    slope: float  # a of p_known = sigmoid(a * knownness + b); a >= 0
    intercept: float  # b
    temperature: float  # T of p = softmax(per-system scores / T)
    n_known: int  # dev clips of training systems (Platt's positives; the temperature's clips)
    n_unknown: int  # Platt's negatives
    negatives: str  # how the negatives were made (NEGATIVES_UNSEEN or NEGATIVES_LOSO)
    unknown_systems: list[str] = field(default_factory=list)  # the systems of the negatives
    known_nll: float = 0.0  # mean negative log-likelihood of the fitted p_known on its dev clips
    system_nll: float = 0.0  # mean negative log-likelihood of the true system on the dev known clips

    def p_known(self, knownness: Any) -> np.ndarray:
        """P(the clip comes from a known system | its knownness), per clip."""
        return sigmoid(self.slope * np.asarray(knownness, dtype=np.float64) + self.intercept)

    def system_probabilities(self, per_system: Any) -> np.ndarray:
        """P(system | the clip comes from a known system), [n, k] from per-system scores [n, k]."""
        per = np.asarray(per_system, dtype=np.float64)
        if per.ndim != 2:
            raise CalibrationError(f"per-system scores must be [n, k], got shape {per.shape}")
        return softmax(per / self.temperature, axis=1)

    def describe(self) -> str:
        """The method, named, with its fitted parameters: what output headers and records carry."""
        return (
            f"{KNOWN_METHOD}(knownness; a={self.slope:.4g}, b={self.intercept:.4g}) + "
            f"{SYSTEM_METHOD}(T={self.temperature:.4g}); fitted on {self.split} "
            f"({self.n_known} known / {self.n_unknown} unknown clips)"
        )

    def method(self) -> str:
        """The short name a trace record carries."""
        return f"{KNOWN_METHOD}(knownness) + {SYSTEM_METHOD}(T={self.temperature:.4g})"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["version"] = VERSION
        d["method"] = {"knownness": KNOWN_METHOD, "systems": SYSTEM_METHOD}
        d["description"] = self.describe()
        return d

    @classmethod
    def from_dict(cls, d: Any) -> Calibration:
        """A stored calibration, every field checked; a bad one is one ``CalibrationError`` naming the field."""
        if not isinstance(d, dict):
            raise CalibrationError(f"must be a JSON object, got {type(d).__name__}")
        if d.get("version") != VERSION:
            raise CalibrationError(f"field 'version' must be {VERSION}, got {d.get('version')!r}")

        def number(key: str, lo: float = -math.inf, low_open: bool = False) -> float:
            v = d.get(key)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise CalibrationError(f"field {key!r} must be a finite number, got {v!r}")
            if v < lo or (low_open and v == lo):
                raise CalibrationError(f"field {key!r} must be {'>' if low_open else '>='} {lo:g}, got {v!r}")
            return float(v)

        def count(key: str) -> int:
            v = d.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise CalibrationError(f"field {key!r} must be a count (an integer >= 0), got {v!r}")
            return v

        def text(key: str) -> str:
            v = d.get(key)
            if not isinstance(v, str) or not v:
                raise CalibrationError(f"field {key!r} must be a non-empty string, got {v!r}")
            return v

        systems = d.get("unknown_systems", [])
        if not isinstance(systems, list) or not all(isinstance(s, str) for s in systems):
            raise CalibrationError(f"field 'unknown_systems' must be a list of names, got {systems!r}")
        return cls(
            scorer=text("scorer"),
            split=text("split"),
            slope=number("slope", 0.0),
            intercept=number("intercept"),
            temperature=number("temperature", 0.0, low_open=True),
            n_known=count("n_known"),
            n_unknown=count("n_unknown"),
            negatives=text("negatives"),
            unknown_systems=list(systems),
            known_nll=number("known_nll", 0.0),
            system_nll=number("system_nll", 0.0),
        )


# -- fitting (at export; imports scipy) -----------------------------------------------------------
def fit_platt(scores: Any, positive: Any) -> tuple[float, float, float]:
    """(slope a >= 0, intercept b, mean NLL) of Platt's ``sigmoid(a s + b)`` with smoothed targets."""
    from scipy.optimize import minimize

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(positive, dtype=bool)
    if s.ndim != 1 or s.shape != y.shape or not np.isfinite(s).all():
        raise CalibrationError(f"Platt calibration needs matching finite 1-D scores and labels, got {s.shape}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        raise CalibrationError(f"Platt calibration needs known and unknown clips, got {n_pos} known / {n_neg} unknown")
    t = np.where(y, (n_pos + 1.0) / (n_pos + 2.0), 1.0 / (n_neg + 2.0))
    mu, sd = float(s.mean()), float(s.std()) or 1.0
    z = (s - mu) / sd  # fitted on standardised scores: cosines differ in the third decimal

    def nll(w: np.ndarray) -> tuple[float, np.ndarray]:
        x = w[0] * z + w[1]
        loss = t * np.logaddexp(0.0, -x) + (1 - t) * np.logaddexp(0.0, x)
        g = sigmoid(x) - t
        return float(loss.mean()), np.array([(g * z).mean(), g.mean()])

    prior = math.log((n_pos + 1.0) / (n_neg + 1.0))
    res = minimize(nll, np.array([1.0, prior]), jac=True, method="L-BFGS-B", bounds=[(0.0, None), (None, None)])
    a_z, b_z = (float(v) for v in res.x)
    slope, intercept = a_z / sd, b_z - a_z * mu / sd
    p = sigmoid(slope * s + intercept)
    eps = 1e-12
    hard = -(y * np.log(np.maximum(p, eps)) + (~y) * np.log(np.maximum(1 - p, eps))).mean()
    return slope, intercept, float(hard)


def fit_temperature(per_system: Any, true_index: Any) -> tuple[float, float]:
    """(temperature T, mean NLL) of ``softmax(scores / T)`` for the true systems ``true_index`` [n].

    The NLL is convex in 1/T; it is minimised over log(1/T) within a range wide for the scores' spread
    (separable dev clips would drive T to 0: the range's end stops it)."""
    from scipy.optimize import minimize_scalar

    per, idx = np.asarray(per_system, dtype=np.float64), np.asarray(true_index, dtype=np.int64)
    if per.ndim != 2 or len(per) == 0 or idx.shape != (len(per),) or not np.isfinite(per).all():
        raise CalibrationError(f"a temperature needs finite scores [n, k] with n >= 1, got shape {per.shape}")
    if per.shape[1] < 2:
        return 1.0, 0.0  # one system: its probability is 1 at any temperature
    spread = float(per.std()) or 1.0
    rows = np.arange(len(per))

    def nll(log_beta: float) -> float:
        x = per * math.exp(log_beta)
        x = x - x.max(1, keepdims=True)
        return float((np.log(np.exp(x).sum(1)) - x[rows, idx]).mean())

    lo, hi = math.log(1e-3 / spread), math.log(1e4 / spread)
    res = minimize_scalar(nll, bounds=(lo, hi), method="bounded", options={"xatol": 1e-6})
    return float(math.exp(-res.x)), float(res.fun)


def fit_calibration(
    scorer: str,
    ref_embeddings: Any,
    ref_systems: Sequence[str],
    dev_embeddings: Any,
    dev_systems: Sequence[str],
    split: str = "dev",
    fitted=None,
) -> Calibration:
    """Fit both maps of ``scorer`` (fitted on the reference clips, or ``fitted``) on a dev split's clips.

    Negatives for Platt: the dev clips of systems absent from the references; when there are none,
    leave-one-system-out (each training system's dev clips scored by the scorer refitted without it).
    """
    from sourcetrace.evaluation.scorers import fit_scorer

    ref_names = np.asarray(ref_systems).astype(str)
    dev_names = np.asarray(dev_systems).astype(str)
    if fitted is None:
        fitted = fit_scorer(scorer, ref_embeddings, ref_names)
    dev_emb = np.asarray(dev_embeddings)
    knownness, per = fitted.score(dev_emb)
    is_known = np.isin(dev_names, fitted.systems)
    if not is_known.any():
        raise CalibrationError(f"cannot calibrate on {split}: it has no clips of the training systems")
    if (~is_known).any():
        negatives, how = knownness[~is_known], NEGATIVES_UNSEEN
        unknown = sorted(set(dev_names[~is_known].tolist()))
    else:
        negatives, unknown = [], []
        for s in fitted.systems:
            rows = dev_names == s
            keep = ref_names != s
            if not rows.any() or len(set(ref_names[keep].tolist())) < 1:
                continue
            held_out = fit_scorer(scorer, np.asarray(ref_embeddings)[keep], ref_names[keep])
            negatives.append(held_out.score(dev_emb[rows])[0])
            unknown.append(s)
        if not negatives:
            raise CalibrationError(
                f"cannot calibrate knownness on {split}: no system absent from training, and one training system "
                "leaves none to hold out"
            )
        negatives, how = np.concatenate(negatives), NEGATIVES_LOSO
    positives = knownness[is_known]
    slope, intercept, known_nll = fit_platt(
        np.concatenate([positives, negatives]),
        np.concatenate([np.ones(len(positives), bool), np.zeros(len(negatives), bool)]),
    )
    index = {s: j for j, s in enumerate(fitted.systems)}
    true = np.array([index[s] for s in dev_names[is_known]], np.int64)
    temperature, system_nll = fit_temperature(per[is_known], true)
    return Calibration(
        scorer=fitted.name,
        split=split,
        slope=slope,
        intercept=intercept,
        temperature=temperature,
        n_known=int(len(positives)),
        n_unknown=int(len(negatives)),
        negatives=how,
        unknown_systems=unknown,
        known_nll=known_nll,
        system_nll=system_nll,
    )


# -- reliability ----------------------------------------------------------------------------------
@dataclass
class Reliability:
    """A reliability diagram's bins and the expected calibration error of probabilities vs outcomes."""

    what: str  # "knownness" | "top-1 system"
    ece: float  # expected calibration error: sum over bins of (clips in bin / n) |accuracy - confidence|
    n: int
    edges: list[float]  # bin edges, len = bins + 1
    count: list[int]  # clips per bin
    confidence: list[float | None]  # mean probability in the bin (None: empty bin)
    accuracy: list[float | None]  # fraction of positive outcomes in the bin
    max_gap: float = 0.0  # largest |accuracy - confidence| over non-empty bins (maximum calibration error)

    def to_dict(self) -> dict:
        return asdict(self)


def reliability(prob: Any, outcome: Any, what: str, bins: int = BINS) -> Reliability:
    """Reliability of probabilities ``prob`` for binary ``outcome`` with ``bins`` equal-width bins of [0, 1]."""
    p, y = np.asarray(prob, dtype=np.float64), np.asarray(outcome, dtype=bool)
    if p.ndim != 1 or p.shape != y.shape or len(p) == 0:
        raise CalibrationError(f"reliability needs matching non-empty 1-D probabilities and outcomes, got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise CalibrationError("reliability needs probabilities in [0, 1]")
    if not isinstance(bins, int) or bins < 1:
        raise CalibrationError(f"bins must be a positive integer, got {bins!r}")
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.minimum((p * bins).astype(np.int64), bins - 1)  # 1.0 falls in the last bin
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=p, minlength=bins)
    acc_sum = np.bincount(which, weights=y.astype(np.float64), minlength=bins)
    full = count > 0
    conf = np.divide(conf_sum, count, out=np.zeros(bins), where=full)
    acc = np.divide(acc_sum, count, out=np.zeros(bins), where=full)
    gaps = np.abs(acc - conf)
    return Reliability(
        what=what,
        ece=float((count / len(p) * gaps).sum()),
        n=int(len(p)),
        edges=edges.tolist(),
        count=count.tolist(),
        confidence=[float(c) if f else None for c, f in zip(conf, full)],
        accuracy=[float(a) if f else None for a, f in zip(acc, full)],
        max_gap=float(gaps[full].max()),
    )


def split_reliability(
    calibration: Calibration, knownness: Any, per_system: Any, systems: Sequence[str], scorer_systems: Sequence[str]
) -> dict[str, Reliability]:
    """Reliability of a split: ``knownness`` (p_known vs "the clip's system is known", when the split has both
    kinds) and ``top-1 system`` (top-1 p vs "the top system is the true one", on the known clips)."""
    names = np.asarray(systems).astype(str)
    is_known = np.isin(names, list(scorer_systems))
    out = {}
    if is_known.any() and (~is_known).any():
        out["knownness"] = reliability(calibration.p_known(knownness), is_known, "knownness")
    if is_known.any():
        probs = calibration.system_probabilities(np.asarray(per_system)[is_known])
        top = probs.argmax(1)
        correct = np.asarray(scorer_systems)[top] == names[is_known]
        out["top1"] = reliability(probs.max(1), correct, "top-1 system")
    return out
