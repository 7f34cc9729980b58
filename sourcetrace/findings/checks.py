"""The paper's four Table-1 findings as comparisons of a sweep's trials, each with a verdict.

Every trial that finished its budget contributes its best evaluation (``report.trials_frame``) on the eval
split, overall and on the unseen-system conditions; trials that did not finish are left out (their
budget differs) and counted. The comparisons (A vs B, lower EER better; see ``stats`` for the rules):

(a) metric-learning losses beat classification losses: per (dim, seed), the mean EER of the GE2E and
    Angular Prototypical trials (A) vs the mean of the Softmax, AM- and AAM-Softmax trials (B), Thin-ResNet,
    both on the balanced sampler: the metric losses run only with it, so classification trials of the
    random sampler would compare samplers as well as losses. No balanced classification trials: untested.
(b) 10-50 dims suffice, 512 brings nothing: per (recipe, seed), 10 dims (A) vs 512 and 50 (A) vs 512,
    claim "no worse"; every recipe but Softmax/random, which (c) singles out.
(c) Softmax/random fails below 512 dims: per seed, Softmax/random at 512 dims (A) beats it at 10 and at 50.
(d) Thin-ResNet matches wav2vec2-AASIST and generalises better to unseen systems: per (recipe, dim, seed)
    on the recipes both backbones ran, ResNet (A) no worse than AASIST overall, and beats it on the
    unseen-system conditions. Without AASIST trials: untested.

The independent unit of every test is the seed (``stats``): the units of one seed share initial weights
and data order, so their paired differences are averaged within the seed before the t test over seeds.

A finding's verdict combines its comparisons on eval overall ((d): on every condition it claims). When
every cell of the study (backbone, recipe, dim; mean over seeds) is worse on eval overall than the sweep's
featureless baseline, ``verdict_lines`` says so first: the verdicts then describe models that have not
learned (early training), not the paper's findings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sourcetrace.findings.stats import MARGIN, RULES, combine, compare
from sourcetrace.sweep.comparison import VERDICT_KEYS
from sourcetrace.sweep.report import ci95

RESNET, AASIST = "thin_resnet34", "w2v2_aasist"
METRIC_LOSSES = ("ge2e", "angleproto")
CLASSIFICATION_LOSSES = ("softmax", "amsoftmax", "aamsoftmax")
SHARED_SAMPLER = "balanced"  # the only sampler the metric losses run with: (a) compares the losses on it
BLOCK = "seed"  # the independent unit: trials of one seed share initial weights and data order
CONDITIONS = VERDICT_KEYS  # eval overall, then the two unseen-system conditions
FINDINGS = {
    "a": "metric-learning losses (GE2E, Angular Prototypical) beat classification losses",
    "b": "10-50 embedding dimensions suffice; 512 brings nothing",
    "c": "Softmax with the random sampler fails below 512 dimensions",
    "d": "Thin-ResNet matches wav2vec2-AASIST and generalises better to unseen systems",
}
UNTESTED_A = (
    "cannot be tested here: the sweep has no Softmax/AM-/AAM-Softmax trials on the balanced sampler, the only "
    "sampler GE2E and Angular Prototypical run with (losses are compared on the same sampler, never pooled "
    "over both)"
)
UNTESTED_A_METRIC = "cannot be tested here: the sweep has no GE2E or Angular Prototypical trials of the Thin-ResNet"
UNTESTED_D = "untested here (needs XLS-R weights; sweeps/table1_aasist.py runs it on a GPU cluster)"
BELOW_BASELINE = "below the baseline in every cell: verdicts describe models that have not learned"


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


def _comparison(finding, name, a_label, b_label, a_rows, b_rows, units, claims, untested=None) -> dict:
    return {"finding": finding, "name": name, "a_label": a_label, "b_label": b_label, "a_rows": a_rows} | {
        "b_rows": b_rows,
        "units": units,
        "claims": claims,
        "untested": untested,
    }


def comparisons(done: pd.DataFrame) -> list[dict]:
    """Every comparison: finding, name, A and B labels and rows, the unit keys, the claim per condition, and
    ``untested`` (why it cannot be tested, in words) or None."""
    resnet = done[done["backbone"] == RESNET]
    beats, no_worse = dict.fromkeys(CONDITIONS, "beats"), dict.fromkeys(CONDITIONS, "no worse")
    metric = resnet[resnet["loss"].isin(METRIC_LOSSES) & (resnet["sampler"] == SHARED_SAMPLER)]
    classification = resnet[resnet["loss"].isin(CLASSIFICATION_LOSSES) & (resnet["sampler"] == SHARED_SAMPLER)]
    untested = UNTESTED_A_METRIC if metric.empty else UNTESTED_A if classification.empty else None
    name = f"metric vs classification losses, {SHARED_SAMPLER} sampler"
    labels = (f"GE2E+AngleProto/{SHARED_SAMPLER}", f"Softmax+AM+AAM/{SHARED_SAMPLER}")
    out = [_comparison("a", name, *labels, metric, classification, ["dim", BLOCK], beats, untested)]
    others, sr = resnet[resnet["recipe"] != "softmax/random"], resnet[resnet["recipe"] == "softmax/random"]
    for d in (10, 50):
        a, b = others[others["dim"] == d], others[others["dim"] == 512]
        out.append(_comparison("b", f"{d} vs 512 dims", f"{d} dims", "512 dims", a, b, ["recipe", BLOCK], no_worse))
    for d in (10, 50):
        a, b = sr[sr["dim"] == 512], sr[sr["dim"] == d]
        out.append(_comparison("c", f"softmax/random: 512 vs {d} dims", "512 dims", f"{d} dims", a, b, [BLOCK], beats))
    aasist = done[done["backbone"] == AASIST]
    shared = set(aasist["recipe"]) & set(resnet["recipe"])
    a, b = resnet[resnet["recipe"].isin(shared)], aasist[aasist["recipe"].isin(shared)]
    claims = {c: "no worse" if c == "all" else "beats" for c in CONDITIONS}
    name, by = "Thin-ResNet vs wav2vec2-AASIST", ["recipe", "dim", BLOCK]
    out.append(
        _comparison("d", name, "Thin-ResNet", "wav2vec2-AASIST", a, b, by, claims, None if len(aasist) else UNTESTED_D)
    )
    return out


def best_cell(done: pd.DataFrame, col: str) -> dict:
    """The cell (backbone, recipe, dim) of the lowest mean EER over its seeds in ``col``: label, mean, 95 % CI
    half-width and seeds; NaN without one."""
    rows = done[done[col].notna()] if col in done else done[:0]
    if rows.empty:
        return {"best_cell": None, "best_cell_eer": np.nan, "best_cell_ci95": np.nan, "best_cell_n": 0}
    cells = rows.groupby(["backbone", "recipe", "dim"])[col].agg(list)
    means = cells.map(np.mean)
    key = means.idxmin()
    values = np.asarray(cells[key], dtype=float)
    label = f"{key[0]} {key[1]} at {key[2]} dims"
    return {"best_cell": label, "best_cell_eer": float(means[key]), "best_cell_ci95": ci95(values)} | {
        "best_cell_n": len(values)
    }


def findings_table(trials: pd.DataFrame, baseline: dict | None = None, margin: float = MARGIN) -> pd.DataFrame:
    """One row per comparison and condition: both sides, A-B with its 95 % CI and test over seeds, the
    baseline's EER of the condition and the study's best cell beside it, the row's verdict and its finding's."""
    done, left_out = scored(trials)
    base = (baseline or {}).get("metrics", {})
    best = {condition: best_cell(done, column(condition)) for condition in CONDITIONS}
    rows = []
    for c in comparisons(done):
        for condition in CONDITIONS:
            col, by = column(condition), c["units"]
            head = {"finding": c["finding"], "comparison": c["name"], "condition": condition}
            tail = {"baseline_eer": float(base.get(col, np.nan))} | best[condition] | {"left_out": left_out}
            if c["untested"]:
                rows.append(head | {"verdict": c["untested"]} | tail)
                continue
            a, b = _units(c["a_rows"], by, col), _units(c["b_rows"], by, col)
            row = compare(a, b, c["claims"][condition], margin, block=BLOCK)
            row["rule"] = RULES[row["claim"]].format(m=margin)  # stored: a table read back keeps its own rules
            rows.append(
                head | {"a_label": c["a_label"], "b_label": c["b_label"]} | row | {"units": "+".join(by)} | tail
            )
    table = pd.DataFrame(rows)
    table["finding_verdict"] = table["finding"].map(finding_verdicts(table))
    return table


def _tested(rows: pd.DataFrame) -> pd.Series:
    return rows["claim"].notna() if "claim" in rows else pd.Series(False, index=rows.index)


def finding_verdicts(table: pd.DataFrame) -> dict[str, str]:
    """Per finding, the combined verdict of its deciding rows (eval overall; (d): every condition); a finding
    that cannot be tested keeps the words that say why."""
    out = {}
    for finding, rows in table.groupby("finding", sort=True):
        if not _tested(rows).any():
            out[finding] = rows["verdict"].iloc[0]
            continue
        deciding = rows if finding == "d" else rows[rows["condition"] == "all"]
        out[finding] = combine(deciding["verdict"])
    return out


def _independent(rows: pd.DataFrame) -> str:
    """How many independent units (seeds) the deciding tests rest on, in words."""
    if "n_independent" not in rows or not rows["n_independent"].notna().any():
        return ""  # a table written before the count was stored
    block = rows["block"].dropna().iloc[0] if "block" in rows and rows["block"].notna().any() else "unit"
    rows = rows[rows["test"] != "none"]
    if rows.empty:
        return f" (no test: fewer than two {block}s hold both sides)"
    counts = sorted({int(n) for n in rows["n_independent"]})
    n = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    paired = rows[(rows["test"] == "paired t") & (rows["n_pairs"] > rows["n_independent"])]
    units = sorted({int(u) for u in paired["n_pairs"]})
    more = f"; their {'/'.join(map(str, units))} paired units averaged within {block} first" if units else ""
    return f" (tests rest on {n} independent {block}s{more})"


def baseline_line(table: pd.DataFrame) -> str | None:
    """The warning line when every cell of the study is worse on eval overall than the featureless baseline."""
    if "best_cell_eer" not in table:
        return None
    rows = table[table["condition"] == "all"]
    if rows.empty:
        return None
    r = rows.iloc[0]
    if not (
        np.isfinite(r["best_cell_eer"]) and np.isfinite(r["baseline_eer"]) and r["best_cell_eer"] > r["baseline_eer"]
    ):
        return None
    ci = f" ± {r['best_cell_ci95']:.2f}" if np.isfinite(r.get("best_cell_ci95", np.nan)) else ""
    return (
        f"{BELOW_BASELINE}. The best cell ({r['best_cell']}) reaches {r['best_cell_eer']:.2f}{ci} % EER on eval "
        f"overall (mean over {int(r['best_cell_n'])} seed(s)) against the featureless baseline's "
        f"{r['baseline_eer']:.2f} %: these findings are about early training, not the paper's findings"
    )


def verdict_lines(table: pd.DataFrame) -> list[str]:
    """One line per finding: its claim, verdict, how many seeds it rests on, the unseen-system verdicts
    beside, and the rule applied; first, when every cell is worse than the baseline, a line that says so."""
    below = baseline_line(table)
    lines = [below] if below else []
    for finding, rows in table.groupby("finding", sort=True):
        overall = rows["finding_verdict"].iloc[0]
        tested = _tested(rows)
        if not tested.any():
            lines.append(f"({finding}) {FINDINGS[finding]}: {overall}")
            continue
        head = f"({finding}) {FINDINGS[finding]}: {overall.upper()}"
        deciding = rows if finding == "d" else rows[rows["condition"] == "all"]
        scope = "on eval overall" if finding != "d" else "over all three (overall: no worse; unseen: beats)"
        head += f" {scope}{_independent(deciding)}"
        unseen = rows[rows["condition"] != "all"].groupby("condition", sort=False)["verdict"].agg(combine)
        head += "; unseen systems: " + ", ".join(f"{c}: {v}" for c, v in unseen.items())
        if "rule" in rows and rows["rule"].notna().any():
            rules = list(dict.fromkeys(rows["rule"].dropna()))
        else:  # a table written before the rules were stored in it: they may differ from today's
            rules = ["not stored in this table (written by an older sourcetrace); run `sourcetrace findings` again"]
        head += " [rule: " + "; ".join(rules) + "]"
        lines.append(head)
    return lines
