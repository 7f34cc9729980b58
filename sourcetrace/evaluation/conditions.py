"""Scores of one split: the paper's all-pairs EER overall and per seen/unseen condition, plus minDCF.

Per-condition EER follows MLAAD's ``fine/`` protocol: all pairs among the clips of that condition.
A condition with fewer than two systems (no non-target pairs), or with one clip per system (no target
pairs), is left out (not reported as 0).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from sourcetrace.evaluation.eer import all_pairs_eer, all_pairs_metrics


def split_metrics(prefix: str, emb: np.ndarray, table: pd.DataFrame) -> dict[str, float]:
    """``{prefix}_eer``, ``{prefix}_min_dcf`` and ``{prefix}_eer.<condition>`` for a split's embeddings."""
    systems = table["system"].to_numpy()
    overall = all_pairs_metrics(emb, systems)
    out = {f"{prefix}_eer": float(overall.eer), f"{prefix}_min_dcf": float(overall.min_dcf)}
    for condition, rows in table.groupby("condition", sort=True).indices.items():
        _, counts = np.unique(systems[rows], return_counts=True)
        if len(counts) >= 2 and counts.max() >= 2:  # needs non-target and target pairs
            out[f"{prefix}_eer.{condition}"] = float(all_pairs_eer(emb[rows], systems[rows]))
    return out


def condition_table(metrics: dict[str, float]) -> pd.DataFrame:
    """Long table (split, condition, eer) of the per-condition metrics in ``metrics``."""
    rows = []
    for key, value in metrics.items():
        name, _, condition = key.partition(".")
        if name.endswith("_eer"):
            rows.append({"split": name[: -len("_eer")], "condition": condition or "all", "eer": value})
    return pd.DataFrame(rows, columns=["split", "condition", "eer"])
