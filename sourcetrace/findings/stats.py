"""Two sets of EERs compared at 95 %: a paired or Welch t test, and the verdict rules of the findings report.

A side of a comparison is a Series of EERs (%) indexed by *unit*: the seed, or (embedding size, seed) and
so on. Where at least two units hold both sides, the test is paired on those units (``scipy.stats.ttest_rel``;
the interval is the t interval of the differences A - B): cells that share a seed share their initial
network weights. Otherwise Welch's t test over all values (``ttest_ind(equal_var=False)``). Lower EER is
better. Each side also gets its own mean and t interval over its units.

The verdict rules read the 95 % interval [lo, hi] of A - B against a practical margin MARGIN (pp of EER):

* claim "A beats B":       holds when hi < 0; does not hold when lo > -margin (any advantage of A is
                           smaller than the margin, or B is better); otherwise cannot tell.
* claim "A is no worse":   holds when hi < margin (A is at most the margin worse); does not hold when
                           lo > 0 (B is better); otherwise cannot tell.

>>> beat = compare(pd.Series([5.0, 5.2, 4.9]), pd.Series([20.0, 21.0, 19.5]), "beats")
>>> beat["test"], beat["verdict"]
('paired t', 'holds')
>>> compare(pd.Series([10.0, 15.0, 20.0]), pd.Series([12.0, 16.0, 19.0]), "beats")["verdict"]
'cannot tell at this budget'
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from sourcetrace.sweep.report import ci95

MARGIN = 1.0  # pp of EER: a difference smaller than this is no finding either way
HOLDS, FAILS, UNSURE = "holds", "does not hold", "cannot tell at this budget"
CLAIMS = ("beats", "no worse")
RULES = {
    "beats": "A beats B: holds if the 95 % CI of A-B lies below 0; does not hold if it lies above -{m:g} pp",
    "no worse": "A no worse than B: holds if the 95 % CI of A-B lies below +{m:g} pp; does not hold if above 0",
}


def side(values: pd.Series) -> dict:
    """Mean, 95 % CI half-width and count of one side's unit values."""
    v = values.dropna().to_numpy(dtype=float)
    return {"mean": float(v.mean()) if len(v) else np.nan, "ci95": ci95(v), "n": len(v)}


def t_test(a: pd.Series, b: pd.Series) -> dict:
    """``test`` (paired t | Welch t | none), ``n_pairs``, ``diff`` (mean of A-B), its 95 % CI and ``p``."""
    from scipy import stats

    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    out = {"test": "none", "n_pairs": len(shared), "diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan, "p": np.nan}
    with warnings.catch_warnings():  # identical values: scipy warns, the interval is still exact
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(shared) >= 2:
            x, y = a[shared].to_numpy(dtype=float), b[shared].to_numpy(dtype=float)
            res, name, diff = stats.ttest_rel(x, y), "paired t", float((x - y).mean())
        elif len(a) >= 2 and len(b) >= 2:
            x, y = a.to_numpy(dtype=float), b.to_numpy(dtype=float)
            res, name, diff = stats.ttest_ind(x, y, equal_var=False), "Welch t", float(x.mean() - y.mean())
        else:
            return out
        lo, hi = res.confidence_interval(0.95)
    return out | {"test": name, "diff": diff, "diff_lo": float(lo), "diff_hi": float(hi), "p": float(res.pvalue)}


def verdict(claim: str, lo: float, hi: float, margin: float = MARGIN) -> str:
    """The verdict of ``claim`` (one of CLAIMS) from the 95 % interval of A-B; no interval: cannot tell."""
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; claims: {', '.join(CLAIMS)}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNSURE
    if claim == "beats":
        return HOLDS if hi < 0 else FAILS if lo > -margin else UNSURE
    return HOLDS if hi < margin else FAILS if lo > 0 else UNSURE


def combine(verdicts) -> str:
    """A finding made of several comparisons: holds if all hold, does not hold if any does not, else cannot tell."""
    verdicts = list(verdicts)
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else UNSURE


def compare(a: pd.Series, b: pd.Series, claim: str, margin: float = MARGIN) -> dict:
    """Both sides' summaries (``a_mean`` ...), the test of A-B and the claim's verdict, as one row."""
    row = {f"a_{k}": v for k, v in side(a).items()} | {f"b_{k}": v for k, v in side(b).items()}
    row |= {"claim": claim, "margin": margin} | t_test(a, b)
    return row | {"verdict": verdict(claim, row["diff_lo"], row["diff_hi"], margin)}
