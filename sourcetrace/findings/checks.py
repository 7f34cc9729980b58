"""The paper's four Table-1 findings as comparisons of a sweep's trials, each with a verdict.

Every trial that finished its budget contributes its best evaluation (``report.trials_frame``) on the eval
split, overall and on the unseen-system conditions; trials that did not finish are left out (their
budget differs) and counted. The comparisons (A vs B, lower EER better; see ``stats`` for the rules):

(a) metric-learning losses beat classification losses: per (dim, seed), the mean EER of the GE2E and
    Angular Prototypical trials (A) vs the mean of the Softmax, AM- and AAM-Softmax trials (B), Thin-ResNet.
(b) 10-50 dims suffice, 512 brings nothing: per (recipe, seed), 10 dims (A) vs 512 and 50 (A) vs 512,
    claim "no worse"; every recipe but Softmax/random, which (c) singles out.
(c) Softmax/random fails below 512 dims: per seed, Softmax/random at 512 dims (A) beats it at 10 and at 50.
(d) Thin-ResNet matches wav2vec2-AASIST and generalises better to unseen systems: per (recipe, dim, seed)
    on the recipes both backbones ran, ResNet (A) no worse than AASIST overall, and beats it on the
    unseen-system conditions. Without AASIST trials: untested.

A finding's verdict combines its comparisons on eval overall ((d): on every condition it claims).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sourcetrace.findings.stats import MARGIN, RULES, combine, compare
from sourcetrace.sweep.comparison import VERDICT_KEYS

RESNET, AASIST = "thin_resnet34", "w2v2_aasist"
METRIC_LOSSES = ("ge2e", "angleproto")
CLASSIFICATION_LOSSES = ("softmax", "amsoftmax", "aamsoftmax")
CONDITIONS = VERDICT_KEYS  # eval overall, then the two unseen-system conditions
FINDINGS = {
    "a": "metric-learning losses (GE2E, Angular Prototypical) beat classification losses",
    "b": "10-50 embedding dimensions suffice; 512 brings nothing",
    "c": "Softmax with the random sampler fails below 512 dimensions",
    "d": "Thin-ResNet matches wav2vec2-AASIST and generalises better to unseen systems",
}
UNTESTED_D = "untested here (needs XLS-R weights; sweeps/table1_aasist.py runs it on a GPU cluster)"


def column(condition: str) -> str:
    return "test_eer" if condition == "all" else f"test_eer.{condition}"


def scored(trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """(one row per finished trial at its best evaluation, with ``recipe``; how many trials were left out)."""
    best = trials[trials["best"]].drop_duplicates("trial_id")
    done = best[(best["status"] == "finished") & best["test_eer"].notna()].copy() if "test_eer" in best else best[:0]
    done["recipe"] = done["loss"] + "/" + done["sampler"]
    return done, len(best) - len(done)


def _units(rows: pd.DataFrame, by: list[str], col: str) -> pd.Series:
    """EER per unit (mean over the rows that share it: e.g. the recipes of a group at one dim and seed)."""
    if rows.empty or col not in rows:
        return pd.Series(dtype=float)
    return rows.groupby(by)[col].mean()


def _comparison(finding, name, a_label, b_label, a_rows, b_rows, units, claims) -> dict:
    return {"finding": finding, "name": name, "a_label": a_label, "b_label": b_label, "a_rows": a_rows} | {
        "b_rows": b_rows,
        "units": units,
        "claims": claims,
    }


def comparisons(done: pd.DataFrame) -> list[dict]:
    """Every comparison: finding, name, A and B labels and rows, the unit keys, the claim per condition."""
    resnet = done[done["backbone"] == RESNET]
    beats, no_worse = dict.fromkeys(CONDITIONS, "beats"), dict.fromkeys(CONDITIONS, "no worse")
    metric = resnet[resnet["loss"].isin(METRIC_LOSSES)]
    classification = resnet[resnet["loss"].isin(CLASSIFICATION_LOSSES)]
    name, labels = "metric vs classification losses", ("GE2E+AngleProto", "Softmax+AM+AAM")
    out = [_comparison("a", name, *labels, metric, classification, ["dim", "seed"], beats)]
    others, sr = resnet[resnet["recipe"] != "softmax/random"], resnet[resnet["recipe"] == "softmax/random"]
    for d in (10, 50):
        a, b = others[others["dim"] == d], others[others["dim"] == 512]
        out.append(_comparison("b", f"{d} vs 512 dims", f"{d} dims", "512 dims", a, b, ["recipe", "seed"], no_worse))
    for d in (10, 50):
        a, b = sr[sr["dim"] == 512], sr[sr["dim"] == d]
        out.append(_comparison("c", f"softmax/random: 512 vs {d} dims", "512 dims", f"{d} dims", a, b, ["seed"], beats))
    aasist = done[done["backbone"] == AASIST]
    if len(aasist):
        shared = set(aasist["recipe"]) & set(resnet["recipe"])
        a, b = resnet[resnet["recipe"].isin(shared)], aasist[aasist["recipe"].isin(shared)]
        claims = {c: "no worse" if c == "all" else "beats" for c in CONDITIONS}
        name = "Thin-ResNet vs wav2vec2-AASIST"
        out.append(_comparison("d", name, "Thin-ResNet", "wav2vec2-AASIST", a, b, ["recipe", "dim", "seed"], claims))
    return out


def findings_table(trials: pd.DataFrame, baseline: dict | None = None, margin: float = MARGIN) -> pd.DataFrame:
    """One row per comparison and condition: both sides, A-B with its 95 % CI and test, the baseline's EER of
    the condition, the row's verdict and its finding's."""
    done, left_out = scored(trials)
    base = (baseline or {}).get("metrics", {})
    rows = []
    for c in comparisons(done):
        for condition in CONDITIONS:
            col, by = column(condition), c["units"]
            row = compare(_units(c["a_rows"], by, col), _units(c["b_rows"], by, col), c["claims"][condition], margin)
            head = {"finding": c["finding"], "comparison": c["name"], "condition": condition}
            rows.append(
                head
                | {"a_label": c["a_label"], "b_label": c["b_label"]}
                | row
                | {"units": "+".join(by), "baseline_eer": float(base.get(col, np.nan)), "left_out": left_out}
            )
    if not any(r["finding"] == "d" for r in rows):
        for condition in CONDITIONS:
            rows.append({"finding": "d", "comparison": "Thin-ResNet vs wav2vec2-AASIST", "condition": condition})
            rows[-1] |= {"verdict": UNTESTED_D, "baseline_eer": float(base.get(column(condition), np.nan))}
    table = pd.DataFrame(rows)
    table["finding_verdict"] = table["finding"].map(finding_verdicts(table))
    return table


def finding_verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Per finding, the combined verdict of its deciding rows (eval overall; (d): every condition)."""
    out = {}
    for finding, rows in table.groupby("finding", sort=True):
        if (rows["verdict"] == UNTESTED_D).all():
            out[finding] = UNTESTED_D
            continue
        deciding = rows if finding == "d" else rows[rows["condition"] == "all"]
        out[finding] = combine(deciding["verdict"])
    return out


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """One line per finding: its claim, verdict, the unseen-system verdicts beside, and the rule applied."""
    lines = []
    for finding, rows in table.groupby("finding", sort=True):
        overall = rows["finding_verdict"].iloc[0]
        head = f"({finding}) {FINDINGS[finding]}: {overall if overall == UNTESTED_D else overall.upper()}"
        if finding != "d" or "claim" in rows and rows["claim"].notna().any():
            unseen = rows[rows["condition"] != "all"].groupby("condition", sort=False)["verdict"].agg(combine)
            scope = "on eval overall" if finding != "d" else "over all three (overall: no worse; unseen: beats)"
            head += f" {scope}; unseen systems: " + ", ".join(f"{c}: {v}" for c, v in unseen.items())
            claims = sorted(set(rows["claim"].dropna()))
            m = float(rows["margin"].dropna().iloc[0]) if rows["margin"].notna().any() else MARGIN
            head += " [rule: " + "; ".join(RULES[c].format(m=m) for c in claims) + "]"
        lines.append(head)
    return lines
