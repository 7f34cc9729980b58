"""``sourcetrace analyze``: the paper's analyses of one trained model on one split.

Embeds the split (and the training split, whose centroids define the known systems) and writes to
``out``: the linear probe (``probe.json``, ``confusion.parquet`` + ``confusion.png``), the UMAP
(``umap.parquet`` with the 2-D coordinates + ``umap.png``), the all-pairs DET curve (``det.png``),
the open-set metrics with a calibrated "unknown" threshold (``openset.json``), the reliability of the
calibrated probabilities with their expected calibration error (``calibration.json`` +
``reliability.png``) and every flat metric (``metrics.json``). No MLflow here: ``analyze`` returns the
artefact paths for the caller to log.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np


def calibration_summary(res: dict[str, Any], split: str) -> str:
    """What ``analyze --calibration-only`` prints."""
    lines = []
    cal = res["calibration"]
    if cal is not None:
        lines.append(f"calibration ({res['source']}): {cal.describe()}")
    for key, what in (("knownness", "P(known)"), ("top1", "top-1 p")):
        value = res["metrics"].get(f"calibration_ece_{key}")
        if value is not None:
            lines.append(f"{split}: expected calibration error of {what}: {value:.4f}")
    lines += [f"note: {note}" for note in res["notes"]]
    lines.append(f"wrote {len(res['artifacts'])} files to {res['out']}")
    return "\n".join(lines)


def write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain))
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def summary(res: dict[str, Any], split: str) -> str:
    """What ``analyze`` found, as the lines ``sourcetrace analyze`` prints."""
    m, lines = res["metrics"], []
    lines.append(
        f"{split}: all-pairs EER {m['eer']:.2f}%  minDCF {m['min_dcf']:.3f}"
        f"  (baseline (MFCC stats): EER {m['baseline_eer']:.2f}%  minDCF {m['baseline_min_dcf']:.3f})"
    )
    lines.append(
        f"linear probe: accuracy {100 * m['probe_accuracy']:.1f}%  macro-F1 {m['probe_macro_f1']:.3f}  "
        f"({int(m['probe_n_classes'])} systems, at most {int(m['probe_per_class'])} clips each; "
        f"chance {100 * m['probe_chance']:.1f}%)"
    )
    if "openset_auroc" in m:
        lines.append(
            f"unknown-system detection: AUROC {m['openset_auroc']:.3f}  EER {m['openset_eer']:.2f}%  "
            f"FPR95 {100 * m['openset_fpr95']:.1f}%"
            + (f"  (baseline AUROC {m['baseline_openset_auroc']:.3f})" if "baseline_openset_auroc" in m else "")
        )
    if "openset_closed_accuracy" in m:
        lines.append(
            f"best-matching system ({res['scorer']} scorer) on known systems: "
            f"accuracy {100 * m['openset_closed_accuracy']:.1f}%  "
            f"macro-F1 {m['openset_closed_macro_f1']:.3f}"
        )
    if res["threshold"] is not None:
        lines.append(res["threshold"].describe())
        if split != res["threshold"].split and "openset_false_unknown_rate" in m:
            fkr = m.get("openset_false_known_rate")
            lines.append(
                f"  applied to {split}: false-unknown {100 * m['openset_false_unknown_rate']:.1f}%"
                + (f", false-known {100 * fkr:.1f}%" if fkr is not None else "")
            )
    if "calibration_ece_knownness" in m or "calibration_ece_top1" in m:
        parts = [
            f"{what} {m[key]:.3f}"
            for what, key in (("P(known)", "calibration_ece_knownness"), ("top-1 p", "calibration_ece_top1"))
            if key in m
        ]
        lines.append(f"expected calibration error ({res['calibration'].method()}): " + "  ".join(parts))
    lines += [f"note: {note}" for note in res["notes"]]
    lines.append(f"wrote {len(res['artifacts'])} files to {res['out']}")
    return "\n".join(lines)
