"""The degraded conditions of ``sourcetrace evaluate --degrade``: one column per degradation beside clean.

``format_degraded`` prints, for the model and the baseline, the all-pairs EER overall and per condition
and the open-set AUROC / FPR95 on the clean clips and after each degradation, then the mean
degraded-minus-clean EER gap (percentage points): how much attribution a channel costs, the mean EER over
the degraded conditions and the worst one. A last line counts the conditions where the model beats the
baseline (lower EER) and names those where it does not. ``summary`` gives those numbers (``sourcetrace
evaluate`` stores them as ``degraded_summary`` in metrics.json).
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


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Over the degraded conditions: per scorer the mean EER and the worst condition (highest EER), and where
    the model's EER is below the baseline's (``model_beats_baseline``) and where not (``model_not_better``).

    ``{"model": {"mean_eer", "worst", "worst_eer"}, "baseline": {...}, "n_conditions", "model_beats_baseline",
    "model_not_better"}``; EERs in %, condition names in the order scored.
    """
    out: dict[str, Any] = {}
    eers = {}
    for scorer in ("model", "baseline"):
        eers[scorer] = {n: m["eer"] for n, m in columns(result, scorer).items() if n != "clean"}
        values = eers[scorer]
        worst = max(values, key=values.get) if values else None
        out[scorer] = {
            "mean_eer": sum(values.values()) / len(values) if values else float("nan"),
            "worst": worst,
            "worst_eer": values[worst] if worst is not None else float("nan"),
        }
    names = list(eers["model"])
    beats = [n for n in names if n in eers["baseline"] and wins(result, n, eers["model"][n], eers["baseline"][n])]
    return out | {
        "n_conditions": len(names),
        "model_beats_baseline": beats,
        "model_not_better": [n for n in names if n not in beats],
        "decided_by": "95 % bootstrap intervals" if result.get("intervals") else "point estimates",
    }


def interval_of(result: dict[str, Any], name: str) -> dict | None:
    """The bootstrap interval of model - baseline EER (overall) under condition ``name`` ('clean' or a degradation)."""
    return result.get("intervals", {}).get(name, {}).get("all")


def wins(result: dict[str, Any], name: str, model_eer: float, baseline_eer: float) -> bool:
    """The model beats the baseline under ``name``: its whole interval below zero when the result has intervals,
    else a lower point estimate."""
    iv = interval_of(result, name)
    if result.get("intervals"):
        return iv is not None and iv["verdict"] == "beats"
    return model_eer < baseline_eer


def format_degraded(result: dict[str, Any]) -> str:
    lines = []
    summ = summary(result)
    for scorer in ("model", "baseline"):
        cols = columns(result, scorer)
        keys = [k for k in ROWS if k in cols["clean"]]
        keys[1:1] = sorted(k for k in cols["clean"] if k.startswith("eer."))
        width = [max(10, len(name) + 2) for name in cols]  # chains have long names
        lines.append(f"{scorer}: " + ("EER % and open-set metrics, clean and degraded"))
        lines.append(f"  {'metric':<46}" + "".join(f"{name:>{w}}" for name, w in zip(cols, width)))
        for key in keys:
            pct = key.startswith("eer")
            cells = [f"{m[key]:.2f}" + ("%" if pct else "") if key in m else "—" for m in cols.values()]
            lines.append(f"  {key:<46}" + "".join(f"{c:>{w}}" for c, w in zip(cells, width)))
        lines.append(f"  mean degraded - clean EER: {eer_gap(result, scorer):+.2f} pp")
        s = summ[scorer]
        if s["worst"] is not None:
            lines.append(
                f"  mean EER over the {summ['n_conditions']} degraded conditions: {s['mean_eer']:.2f}%; "
                f"worst: {s['worst']} ({s['worst_eer']:.2f}%)"
            )
    if summ["n_conditions"]:
        lost = summ["model_not_better"]
        tail = f"; not on: {', '.join(lost)}" if lost else " (all of them)"
        lines.append(
            f"degraded: the model beats the baseline (lower EER, by {summ['decided_by']}) on "
            f"{len(summ['model_beats_baseline'])} of {summ['n_conditions']} conditions{tail}"
        )
    return "\n".join(lines)


def format_field(result: dict[str, Any]) -> str:
    """The model beside the baseline, one row per condition (clean, each degraded one), then the mean and the
    worst of the degraded ones, then one verdict line: does the model beat the baseline on every condition,
    and is its worst degraded EER within twice its clean EER?"""
    summ = summary(result)
    model, base = columns(result, "model"), columns(result, "baseline")
    width = max(16, *(len(n) + 2 for n in model))  # 'worst degraded' and chain names keep their columns
    have = bool(result.get("intervals"))
    lines = [
        f"{result['split']} split, {result['n_clips']} clips; all-pairs EER %"
        + ("; model - baseline with its 95 % bootstrap interval over systems and clips" if have else ""),
        f"  {'condition':<{width}}{'model':>9}{'baseline':>10}" + ("   model - baseline" if have else ""),
    ]
    for name in model:
        b = base.get(name, {}).get("eer", float("nan"))
        iv = interval_of(result, name)
        said = f"   {iv['diff']:+.2f} [{iv['lo']:+.2f}, {iv['hi']:+.2f}] {iv['verdict']}" if iv else ""
        lines.append(f"  {name:<{width}}{model[name]['eer']:>9.2f}{b:>10.2f}{said}")
    m, b = summ["model"], summ["baseline"]
    lines.append(f"  {'mean degraded':<{width}}{m['mean_eer']:>9.2f}{b['mean_eer']:>10.2f}")
    lines.append(f"  {'worst degraded':<{width}}{m['worst_eer']:>9.2f}{b['worst_eer']:>10.2f}")
    lines.append(f"  (worst: model {m['worst']}, baseline {b['worst']})")
    clean = model["clean"]["eer"]
    ratio = m["worst_eer"] / clean if clean > 0 else float("inf")
    won = ["clean"] * wins(result, "clean", model["clean"]["eer"], base["clean"]["eer"]) + summ["model_beats_baseline"]
    losses = [n for n in model if n not in won]
    verdict = (
        "BEATS the baseline on every condition"
        if not losses
        else f"does NOT clearly beat the baseline on: {', '.join(losses)}"
    )
    lines.append(
        f"field verdict ({summ['decided_by']}): the model {verdict}; worst degraded / clean EER = {ratio:.1f}x"
    )
    return "\n".join(lines)
