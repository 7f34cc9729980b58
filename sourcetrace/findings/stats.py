"""Two sets of EERs compared at 95 %: a paired or Welch t test over independent units, and the verdict rules.

A side of a comparison is a Series of EERs (%) indexed by *unit*: the seed, or (embedding size, seed) and
so on. Units are not all independent: the trials of one seed share their initial network weights and
their data order (``training/loop.py`` seeds both from ``train.seed``), so 21 (recipe, seed) units of
three seeds are three independent observations, not 21. With ``block="seed"`` every statistic counts the
blocks: the paired differences A - B of the units both sides hold are averaged within each seed first,
and the test is a paired t test over those per-seed means (``scipy.stats.ttest_rel``; the interval is the t
interval of the per-seed differences, with seeds - 1 degrees of freedom). Without ``block`` (or when the
index has no such level) every unit is its own block. Where fewer than two blocks hold both sides, Welch's
t test compares the sides' per-block means (``ttest_ind(equal_var=False)``). Lower EER is better. Each side
also gets its own mean and t interval over its blocks.

The verdict rules read the 95 % interval [lo, hi] of A - B against a practical margin MARGIN (pp of EER):
a difference smaller than the margin is no finding either way, so a claim's boundary is the margin, not 0.

* claim "A beats B" (A - B < -margin):    holds when hi < -margin (the whole interval is an advantage of A
                                           larger than the margin); does not hold when lo > -margin (the
                                           whole interval is inside the margin, or beyond it on B's side);
                                           otherwise, the interval overlaps -margin: cannot tell.
* claim "A is no worse" (A - B < margin): holds when hi < margin (A is at most the margin worse); does not
                                           hold when lo > margin (A is worse by more than the margin);
                                           otherwise, the interval overlaps +margin: cannot tell.

Never "holds" when the interval overlaps the margin.

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
    "beats": (
        "A beats B: holds if the 95 % CI of A-B lies below -{m:g} pp; does not hold if it lies above -{m:g} pp "
        "(inside the margin or B better); cannot tell if it overlaps -{m:g} pp"
    ),
    "no worse": (
        "A no worse than B: holds if the 95 % CI of A-B lies below +{m:g} pp; does not hold if it lies above "
        "+{m:g} pp; cannot tell if it overlaps +{m:g} pp"
    ),
}


def blocks(values: pd.Series, block: str | None = None) -> pd.Series:
    """The values averaged within each block (independent unit: e.g. the seed); no such block: as they are."""
    v = values.dropna()
    if block is None or block not in [n for n in v.index.names if n is not None]:
        return v
    return v.groupby(level=block).mean()


def side(values: pd.Series, block: str | None = None) -> dict:
    """Mean, 95 % CI half-width and count of one side's independent units (blocks), and its count of units."""
    v = blocks(values, block).to_numpy(dtype=float)
    mean = float(v.mean()) if len(v) else np.nan
    return {"mean": mean, "ci95": ci95(v), "n": len(v), "n_units": int(values.notna().sum())}


def t_test(a: pd.Series, b: pd.Series, block: str | None = None) -> dict:
    """``test`` (paired t | Welch t | none), ``n_pairs`` (units both sides hold), ``n_independent`` (the
    blocks the test rests on), ``diff`` (mean of A-B over blocks), its 95 % CI and ``p``."""
    from scipy import stats

    a, b = a.dropna(), b.dropna()
    shared = a.index.intersection(b.index)
    out = {"test": "none", "n_pairs": len(shared), "n_independent": 0}
    out |= {"diff": np.nan, "diff_lo": np.nan, "diff_hi": np.nan, "p": np.nan}
    paired_a, paired_b = blocks(a[shared], block), blocks(b[shared], block)
    with warnings.catch_warnings():  # identical values: scipy warns, the interval is still exact
        warnings.simplefilter("ignore", RuntimeWarning)
        if len(paired_a) >= 2:
            x, y = paired_a.to_numpy(dtype=float), paired_b[paired_a.index].to_numpy(dtype=float)
            res, name, diff = stats.ttest_rel(x, y), "paired t", float((x - y).mean())
            n = len(x)
        else:
            x, y = blocks(a, block).to_numpy(dtype=float), blocks(b, block).to_numpy(dtype=float)
            if len(x) < 2 or len(y) < 2:
                return out
            res, name, diff = stats.ttest_ind(x, y, equal_var=False), "Welch t", float(x.mean() - y.mean())
            n = len(x) + len(y)
        lo, hi = res.confidence_interval(0.95)
    out |= {"test": name, "n_independent": n, "diff": diff, "diff_lo": float(lo), "diff_hi": float(hi)}
    return out | {"p": float(res.pvalue)}


def verdict(claim: str, lo: float, hi: float, margin: float = MARGIN) -> str:
    """The verdict of ``claim`` (one of CLAIMS) from the 95 % interval of A-B; no interval: cannot tell.

    The claim's boundary is -margin ("beats") or +margin ("no worse"): holds when the whole interval lies
    on the claim's side of it, does not hold when the whole interval lies on the other side, else cannot tell.
    """
    if claim not in CLAIMS:
        raise ValueError(f"unknown claim {claim!r}; claims: {', '.join(CLAIMS)}")
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return UNSURE
    bound = -margin if claim == "beats" else margin
    return HOLDS if hi < bound else FAILS if lo > bound else UNSURE


def combine(verdicts) -> str:
    """A finding made of several comparisons: holds if all hold, does not hold if any does not, else cannot tell."""
    verdicts = list(verdicts)
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    return FAILS if FAILS in verdicts else UNSURE


def compare(a: pd.Series, b: pd.Series, claim: str, margin: float = MARGIN, block: str | None = None) -> dict:
    """Both sides' summaries (``a_mean`` ...), the test of A-B over ``block``s and the claim's verdict, as one row."""
    row = {f"a_{k}": v for k, v in side(a, block).items()} | {f"b_{k}": v for k, v in side(b, block).items()}
    row |= {"claim": claim, "margin": margin, "block": block or "unit"} | t_test(a, b, block)
    return row | {"verdict": verdict(claim, row["diff_lo"], row["diff_hi"], margin)}
