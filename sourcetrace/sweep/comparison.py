"""The featureless baseline inside a sweep's reports: its Table-1 row and the best trial measured against it.

``baseline_cells``: the baseline as a Table-1 row (its EER does not depend on the embedding size, so the
same value stands in every dim column). ``compare_best``: the model the sweep hands over (``sweep/handover.py``)
beside the baseline, per split and condition,
with a verdict on the eval split overall and on the unseen-system conditions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.evaluation.baseline import BASELINE_FILE, NAME
from sourcetrace.evaluation.conditions import UNSEEN_SYSTEM_CONDITIONS
from sourcetrace.sweep.handover import HandedOver

VERDICT_KEYS = ("all",) + UNSEEN_SYSTEM_CONDITIONS  # conditions of the test split the model must win


def read_baseline(exp: str | Path) -> dict | None:
    path = Path(exp) / BASELINE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def baseline_cells(baseline: dict, dims: list, name: str = NAME) -> pd.DataFrame:
    """Rows shaped like ``table1_cells``' (backbone = ``name``, no loss) for every dim of the table: the
    baseline's, or a sweep fusion's."""
    m, rows = baseline["metrics"], []
    for dim in dims:
        for split in ("dev", "test"):
            value = m.get(f"{split}_eer", np.nan)
            rows.append(
                {
                    "backbone": name,
                    "loss": "",
                    "sampler": "",
                    "variant": "",
                    "dim": dim,
                    "split": split,
                    "eer_mean": float(value),
                    "eer_ci95": np.nan,
                    "n": int(np.isfinite(value)),
                    "n_trials": 0,
                    "n_finished": 0,
                    "n_early_stopped": 0,
                    "n_failed": 0,
                    "n_unfinished": 0,
                }
            )
    return pd.DataFrame(rows)


def fusion_label(fusion: dict) -> str:
    """The Table-1 row of a sweep's fusion: short, the members are named in the comparison."""
    return f"fusion (best per {fusion.get('key', 'group')})"


def compare_best(chosen: HandedOver | None, baseline: dict) -> pd.DataFrame | None:
    """(split, condition, model_eer, baseline_eer, model_wins, trial_name, checkpoint) of the model the sweep
    hands over (``sweep/handover.py``: its best trial with a checkpoint, or its fusion when that is better on dev)."""
    if chosen is None:
        return None
    best = pd.Series({**chosen.metrics, "trial_name": chosen.name, "checkpoint": chosen.folder})
    base, out = baseline["metrics"], []
    for split in ("dev", "test"):
        for key in sorted(k for k in base if k == f"{split}_eer" or k.startswith(f"{split}_eer.")):
            model = best.get(key, np.nan)
            model = float(model) if model is not None and pd.notna(model) else np.nan
            out.append(
                {
                    "split": split,
                    "condition": key.partition(".")[2] or "all",
                    "model_eer": model,
                    "baseline_eer": float(base[key]),
                    "model_wins": bool(model < base[key]),
                    "trial_name": best["trial_name"],
                    "checkpoint": best.get("checkpoint"),
                }
            )
    return pd.DataFrame(out)


def verdict_line(comparison: pd.DataFrame) -> str:
    """Whether the best trial beats the baseline on the test split overall and on both unseen-system conditions."""
    test = comparison[(comparison["split"] == "test") & comparison["condition"].isin(VERDICT_KEYS)]
    if test.empty:
        return "verdict: no test-split scores to compare (train.eval_test=false?)"
    lost = test.loc[~test["model_wins"], "condition"].tolist()
    names = ", ".join(test["condition"])
    said = "point estimates; `sourcetrace evaluate` and the field check give 95 % intervals"
    if not lost:
        return f"verdict: the model handed over BEATS the baseline on eval ({names}; {said})"
    return (
        f"verdict: the model handed over does NOT beat the baseline on eval: {', '.join(lost)} "
        f"(compared: {names}; {said})"
    )


def format_comparison(comparison: pd.DataFrame) -> str:
    """The best trial's EER beside the baseline's, per split and condition, then the verdict."""
    first = comparison.iloc[0]
    lines = [
        (
            f"the sweep's {first['trial_name']} vs {NAME}, EER %:"
            if str(first["trial_name"]).startswith("fusion")
            else f"best trial {first['trial_name']} (lowest dev EER) vs {NAME}, EER %:"
        ),
        f"  {'split':<6}{'condition':<34}{'model':>8}{'baseline':>10}",
    ]
    for _, r in comparison.iterrows():
        mark = "  (baseline better)" if r["baseline_eer"] < r["model_eer"] else "" if r["model_wins"] else "  (tie)"
        lines.append(f"  {r['split']:<6}{r['condition']:<34}{r['model_eer']:>8.2f}{r['baseline_eer']:>10.2f}{mark}")
    lines.append(verdict_line(comparison))
    if first.get("checkpoint"):
        lines.append(f"model handed over: {first['checkpoint']}")
    return "\n".join(lines)
