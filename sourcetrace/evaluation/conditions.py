"""Scores of one split: the paper's all-pairs EER overall and per seen/unseen condition, plus minDCF.

Per-condition EER follows MLAAD's ``fine/`` protocol: all pairs among the clips of that condition.
A condition without both kinds of pair (fewer than two systems, or no system with two clips) has no EER
and is left out (not reported as 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sourcetrace.evaluation.eer import all_pairs_eer, all_pairs_metrics

# systems never seen in training, in a seen and an unseen language: where a model must beat the baseline
UNSEEN_SYSTEM_CONDITIONS = ("lang_seen___model_not_seen", "lang_not_seen___model_not_seen")


def split_metrics(prefix: str, emb: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    """``{prefix}_eer``, ``{prefix}_min_dcf`` and ``{prefix}_eer.<condition>`` for a split's embeddings."""
    systems = table["system"].to_numpy()
    overall = all_pairs_metrics(emb, systems)
    out = {f"{prefix}_eer": float(overall.eer), f"{prefix}_min_dcf": float(overall.min_dcf)}
    for condition, rows in table.groupby("condition", sort=True).indices.items():
        if has_both_pair_kinds(systems[rows]):
            out[f"{prefix}_eer.{condition}"] = float(all_pairs_eer(emb[rows], systems[rows]))
    return out


def has_both_pair_kinds(labels: np.ndarray) -> bool:
    """True if ``labels`` give target pairs (a label twice) and non-target pairs (two labels): an EER exists.

    >>> has_both_pair_kinds(np.array(["a", "b"])), has_both_pair_kinds(np.array(["a", "a", "b"]))
    (False, True)
    """
    _, counts = np.unique(labels, return_counts=True)
    return len(counts) >= 2 and bool((counts >= 2).any())
