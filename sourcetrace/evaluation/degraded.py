"""The degraded conditions of ``sourcetrace evaluate --degrade``: one column per degradation beside clean.

``format_degraded`` prints, for the model and the baseline, the all-pairs EER overall and per condition
and the open-set AUROC / FPR95 on the clean clips and after each degradation, then the mean
degraded-minus-clean EER gap (percentage points): how much attribution a channel costs.
"""

from __future__ import annotations

from typing import Any

ROWS = ("eer", "min_dcf", "openset_auroc", "openset_fpr95")


def columns(result: dict[str, Any], scorer: str) -> dict[str, dict[str, float]]:
    """{condition name ('clean', then each degradation): metrics of ``scorer``}."""
    return {"clean": result["metrics"][scorer]} | {n: m[scorer] for n, m in result.get("degraded", {}).items()}


def eer_gap(result: dict[str, Any], scorer: str = "model", names=None) -> float:
    """Mean over the degradations (all, or ``names``) of (degraded EER - clean EER), in percentage points."""
    cols = columns(result, scorer)
    gaps = [m["eer"] - cols["clean"]["eer"] for n, m in cols.items() if n != "clean" and (names is None or n in names)]
    return sum(gaps) / len(gaps) if gaps else float("nan")


def format_degraded(result: dict[str, Any]) -> str:
    lines = []
    for scorer in ("model", "baseline"):
        cols = columns(result, scorer)
        keys = [k for k in ROWS if k in cols["clean"]]
        keys[1:1] = sorted(k for k in cols["clean"] if k.startswith("eer."))
        lines.append(f"{scorer}: " + ("EER % and open-set metrics, clean and degraded"))
        lines.append(f"  {'metric':<46}" + "".join(f"{name:>10}" for name in cols))
        for key in keys:
            pct = key.startswith("eer")
            cells = [f"{m[key]:.2f}" + ("%" if pct else "") if key in m else "—" for m in cols.values()]
            lines.append(f"  {key:<46}" + "".join(f"{c:>10}" for c in cells))
        lines.append(f"  mean degraded - clean EER: {eer_gap(result, scorer):+.2f} pp")
    return "\n".join(lines)
