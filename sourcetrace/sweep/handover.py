"""What a sweep hands over: the one rule that the fusion, the export, the comparison and the reports follow.

A sweep hands over the evaluation with the lowest dev EER among those whose checkpoint still exists (Tune keeps
the best ones; an evaluation whose checkpoint is gone cannot be handed over, so the comparison does not describe
it either), unless its measured fusion (``EXP/fusion``, made by ``sweep/fuse.py``) has a lower dev EER still.
Dev decides, as it decides everything else: a fusion that does not beat its best member on dev is reported
beside the trials but not handed over.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from sourcetrace.errors import SourcetraceError

FUSION_DIR = "fusion"  # EXP/fusion/fusion.json


@dataclass(frozen=True)
class HandedOver:
    """The model a sweep hands over: a checkpoint folder (its best trial's) or its fusion folder."""

    folder: str
    run_id: str | None  # its MLflow run, when one was logged
    name: str  # the trial's folder name, or the fusion's name
    kind: str  # "trial" | "fusion"
    metrics: dict = field(default_factory=dict)  # its dev_* / test_* metrics, as measured

    @property
    def what(self) -> str:
        """One phrase for notes: ``trial NAME, dev EER x.xx%`` or ``NAME, dev EER x.xx%``."""
        dev = self.metrics.get("dev_eer", float("nan"))
        return f"{'trial ' if self.kind == 'trial' else ''}{self.name}, dev EER {dev:.2f}%"


def read_sweep_fusion(exp: str | Path) -> dict | None:
    """The measured fusion record of a sweep folder, or None (a damaged record is a note: the best trial
    is then reported and handed over, and the next run of the sweep fuses again)."""
    from sourcetrace.fusion import is_fusion, read_fusion

    folder = Path(exp) / FUSION_DIR
    if not is_fusion(folder):
        return None
    try:
        record = read_fusion(folder)
    except SourcetraceError as err:
        print(f"note: {err}", file=sys.stderr)
        return None
    return record | {"folder": str(folder)} if record.get("metrics") else None


def handed_over(exp: str | Path, trials: pd.DataFrame) -> HandedOver | None:
    """What the sweep in ``exp`` (its trials' long table ``trials``) hands over; None before any evaluation
    with a checkpoint (or a measured fusion)."""
    fusion, best = read_sweep_fusion(exp), best_trial(trials)
    if fusion is not None:
        fused = HandedOver(fusion["folder"], fusion.get("run_id"), fusion["name"], "fusion", dict(fusion["metrics"]))
        if best is None or fused.metrics.get("dev_eer", float("inf")) < best.metrics.get("dev_eer", float("inf")):
            return fused
    return best


def best_trial(trials: pd.DataFrame) -> HandedOver | None:
    """The evaluation with the lowest dev EER whose checkpoint still exists; None before there is one."""
    rows = trials.dropna(subset=["dev_eer", "checkpoint"]) if "checkpoint" in trials else trials.iloc[:0]
    if rows.empty:
        return None
    best = rows.loc[rows["dev_eer"].idxmin()]
    run_id = best.get("run_id") if isinstance(best.get("run_id"), str) else None
    metrics = {k: float(v) for k, v in best.items() if k.startswith(("dev_", "test_")) and pd.notna(v)}
    return HandedOver(str(best["checkpoint"]), run_id, str(best["trial_name"]), "trial", metrics)
