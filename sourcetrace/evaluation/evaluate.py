"""``sourcetrace evaluate``: score a trained model on any corpus in MLAAD layout, beside the baseline.

The corpus need share nothing with the model's training data (cross-corpus generalisation): every
label comes from the corpus itself. Scores of the chosen split: all-pairs EER / minDCF overall and per
condition (from the corpus's ``fine/`` files when present, else derived from its ``train.csv``), and
open-set metrics where "known" means the corpus's training systems, with references (centroids) from
its train split. A corpus without ``train.csv`` gets the verification metrics only. The featureless
baseline (``evaluation/baseline.py``) is scored on the same decoded clips, so each number has its
reference beside it. Every input is checked before anything is computed or written.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from sourcetrace.data.protocol import CONDITIONS, protocol_folder, read_protocol, read_split_file, require_files
from sourcetrace.errors import ProtocolError
from sourcetrace.evaluation.bootstrap import interval
from sourcetrace.evaluation.conditions import UNSEEN_SYSTEM_CONDITIONS, split_metrics
from sourcetrace.evaluation.openset import openset_metrics

MIN_WINDOW_S, MAX_WINDOW_S = 0.1, 600.0  # an evaluation window: a few STFT frames at least, 10 minutes at most


def split_csv(folder: Path, split: str) -> Path:
    """The CSV of ``split`` in the protocol ``folder``: a split is a name (``dev``, ``eval``), never a path, so a
    value with a path separator or a leading dot (``..``) is refused, with the splits the folder has."""
    if not split or split.startswith(".") or any(sep in split for sep in ("/", "\\", os.sep)):
        have = ", ".join(sorted(p.stem for p in Path(folder).glob("*.csv"))) or "none: it holds no CSV files"
        if not Path(folder).is_dir():
            have = "none: it does not exist"
        raise ProtocolError(f"--split {split!r} names a split, not a path; the splits of {folder}: {have}")
    return Path(folder) / f"{split}.csv"


def read_corpus(root: str, protocol: str | None, split: str) -> tuple[pd.DataFrame, pd.DataFrame | None, str, list]:
    """(split table, train table or None, where conditions come from, notes); checks every file exists."""
    folder = protocol_folder(root, protocol)
    if not split_csv(folder, split).is_file():
        have = ", ".join(sorted(p.name for p in folder.glob("*.csv"))) or "no CSV files"
        raise ProtocolError(f"no {split!r} split: {folder / f'{split}.csv'} does not exist ({folder} has: {have})")
    notes = []
    if (folder / "train.csv").is_file() and split != "train":
        proto = read_protocol(root, protocol, splits=("train", split))
        table, train = proto.tables[split], proto.tables["train"]
        source = "derived from train.csv"
    else:
        table, train, source = read_split_file(folder / f"{split}.csv", root), None, "none"
        notes.append("no train split: verification metrics only (no conditions from train, no open set)")
    fine = _fine_conditions(folder, split, root)
    if fine:
        mapped = table["file"].map(fine)
        table = table.assign(condition=mapped.fillna(table["condition"]).astype("str"))
        source = "fine/ files"
        if mapped.isna().any():
            notes.append(f"{int(mapped.isna().sum())} clips are in no fine/ file: condition derived from train.csv")
    tables = {split: table} | ({"train": train} if train is not None else {})
    require_files(tables)
    counts = table["system"].value_counts()
    if len(counts) < 2 or counts.max() < 2:
        raise ProtocolError(
            f"split {split!r} of {root} holds {len(counts)} system(s) with at most {counts.max()} clip(s) each; "
            "all-pairs scoring needs at least 2 systems and a system with 2 clips"
        )
    return table, train, source, notes


def _fine_conditions(folder: Path, split: str, root: str) -> dict[str, str]:
    """file -> condition from ``fine/<split>___<condition>.csv`` (empty when the corpus has none)."""
    out = {}
    for cond in CONDITIONS:
        csv = folder / "fine" / f"{split}___{cond}.csv"
        if csv.is_file():
            out.update(dict.fromkeys(read_split_file(csv, root)["file"], cond))
    return out


def sample_per_system(table: pd.DataFrame, k: int) -> pd.DataFrame:
    """At most ``k`` clips of each system, the same ones every time (a seeded shuffle, then the first k)."""
    return table.sample(frac=1, random_state=0).groupby("system").head(k).sort_index().reset_index(drop=True)


def _metrics(emb: dict, table: pd.DataFrame, train: pd.DataFrame | None, conditions: bool) -> dict[str, float]:

    m = split_metrics("", emb["split"], table)
    m = {k.lstrip("_"): v for k, v in m.items() if conditions or "." not in k}
    if train is not None:
        res = openset_metrics(emb["train"], train["system"].to_numpy(dtype=str), emb["split"], table["system"])
        m.update(res.metrics("openset_"))
    return m


def long_table(metrics: dict[str, dict[str, float]], degraded: dict | None = None) -> pd.DataFrame:
    """(degradation, scorer, metric, condition, value) rows; ``condition`` is ``all`` for split-wide metrics,
    ``degradation`` is ``clean`` for the clips as they are."""
    rows = []
    for degradation, by_scorer in {"clean": metrics, **(degraded or {})}.items():
        for scorer, values in by_scorer.items():
            for key, value in values.items():
                name, _, cond = key.partition(".")
                row = {"scorer": scorer, "metric": name, "condition": cond or "all", "value": float(value)}
                rows.append({"degradation": degradation} | row)
    return pd.DataFrame(rows, columns=["degradation", "scorer", "metric", "condition", "value"])


def eer_intervals(model_emb, base_emb, table: pd.DataFrame, metrics: dict, n_boot: int) -> dict[str, dict]:
    """{"all" and each unseen-system condition scored: the bootstrap interval of model - baseline EER}."""
    systems = table["system"].to_numpy(dtype=str)
    out = {}
    for cond in ("all", *UNSEEN_SYSTEM_CONDITIONS):
        key = "eer" if cond == "all" else f"eer.{cond}"
        if key not in metrics["model"] or key not in metrics["baseline"]:
            continue
        rows = slice(None) if cond == "all" else (table["condition"] == cond).to_numpy()
        point = metrics["model"][key] - metrics["baseline"][key]
        res = interval(model_emb[rows], base_emb[rows], systems[rows], n_boot=n_boot, point=point)
        if res is not None:
            out[cond] = res.to_dict()
    return out


def verdict(model: dict[str, float], baseline: dict[str, float], intervals: dict[str, dict] | None = None) -> str:
    """One line: does the model beat the baseline (lower EER) overall and on the unseen-system conditions? With
    ``intervals`` (``eer_intervals``) a condition is won only when its whole 95 % interval is below zero."""
    keys = ["eer"] + [f"eer.{c}" for c in UNSEEN_SYSTEM_CONDITIONS if f"eer.{c}" in model and f"eer.{c}" in baseline]
    keys = [k for k in keys if k in model and k in baseline]
    name = {k: "overall" if k == "eer" else k.partition(".")[2] for k in keys}
    if not intervals:
        wins = {k: model[k] < baseline[k] for k in keys}
        named = ", ".join(name[k] for k in wins)
        if wins and all(wins.values()):
            return f"verdict: the model beats the baseline (lower EER, point estimates) on: {named}"
        lost = ", ".join(name[k] for k, w in wins.items() if not w)
        return f"verdict: the model does NOT beat the baseline on: {lost} (compared: {named}; point estimates)"
    said = []
    for k in keys:
        iv = intervals.get("all" if k == "eer" else k.partition(".")[2])
        if iv is None:
            said.append((name[k], "cannot tell", "no interval"))
        else:
            said.append((name[k], iv["verdict"], f"{iv['diff']:+.2f} pp [{iv['lo']:+.2f}, {iv['hi']:+.2f}]"))
    detail = "; ".join(f"{n} {d} ({why})" for n, d, why in said)
    if said and all(d == "beats" for _, d, _ in said):
        head = "the model BEATS the baseline"
    elif any(d == "loses" for _, d, _ in said):
        head = "the model LOSES to the baseline somewhere"
    else:
        head = "the model does NOT clearly beat the baseline"
    return f"verdict: {head}: {detail} (model - baseline EER, 95 % bootstrap interval over systems and clips)"


def format_table(result: dict[str, Any]) -> str:
    """Metric rows x (model, baseline) columns, then the verdict."""
    m, b = result["metrics"]["model"], result["metrics"]["baseline"]
    lines = [
        f"{result['split']} of {result['corpus']}: {result['n_clips']} clips, {result['n_systems']} systems; "
        f"conditions: {result['conditions_from']}",
        f"{'metric':<48}{'model':>10}{'baseline':>10}",
    ]
    for key in sorted(set(m) | set(b), key=lambda k: (not k.startswith(("eer", "min_dcf")), k)):
        if key.endswith(("n_known", "n_unknown")):
            continue
        pct = key.startswith("eer") or key == "openset_eer"
        cell = [f"{d[key]:.2f}" + ("%" if pct else "") if key in d else "—" for d in (m, b)]
        lines.append(f"{key:<48}{cell[0]:>10}{cell[1]:>10}")
    lines.append(verdict(m, b, result.get("intervals", {}).get("clean")))
    return "\n".join(lines)
