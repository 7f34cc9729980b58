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

import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from sourcetrace.bundle.export import load_any
from sourcetrace.data.bank import WaveBank
from sourcetrace.data.protocol import CONDITIONS, protocol_folder, read_protocol, read_split_file, require_files
from sourcetrace.degrade import check_names, rendered_parts, split_condition
from sourcetrace.degrade.codecs import require
from sourcetrace.device import autocast_dtype, flag_device
from sourcetrace.errors import ConfigError, ProtocolError, SourcetraceError
from sourcetrace.evaluation.baseline import clip_features, standardise
from sourcetrace.evaluation.bootstrap import MARGIN_PP, N_BOOT, interval
from sourcetrace.evaluation.conditions import split_metrics
from sourcetrace.evaluation.degraded import format_degraded, summary
from sourcetrace.evaluation.embed import embed_waves
from sourcetrace.evaluation.openset import openset_metrics
from sourcetrace.storage import writable_folder

MIN_WINDOW_S, MAX_WINDOW_S = 0.1, 600.0  # an evaluation window: a few STFT frames at least, 10 minutes at most
UNSEEN_SYSTEM_CONDITIONS = ("lang_seen___model_not_seen", "lang_not_seen___model_not_seen")


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


def score(
    model_path: str | os.PathLike,
    root: str | os.PathLike,
    protocol: str | os.PathLike | None = None,
    split: str = "eval",
    out: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    degrade: str | list[str] | None = None,
    degrade_seed: int = 0,
    eval_seconds: float | None = None,
    max_clips_per_system: int = 0,
    n_boot: int = N_BOOT,
    command: str | None = None,
) -> dict[str, Any]:
    """Score the model and the baseline on ``split`` of the corpus at ``root``; write metrics.json/.parquet.

    Every model-vs-baseline EER difference (overall and on the unseen-system conditions, clean and under each
    degradation) gets a paired bootstrap 95 % interval over systems and clips within them (``n_boot``
    resamples, ``evaluation/bootstrap.py``; 0: none), stored under ``intervals``; the verdicts read them.

    ``max_clips_per_system`` k > 0 scores a seeded sample of at most k clips of each system of the split (the
    same clips every time), for a quicker check; 0 scores them all.

    ``command``: the command line that asked for it, recorded in metrics.json with the version and git commit.

    ``eval_seconds``: the centred window both embed (0 = the whole clip); default the model's
    ``data.eval_seconds``, the window it was selected on.

    ``degrade`` (names or "mp3_32,replay"): also score the split's clips after each degradation (rendered
    and cached by ``sourcetrace.degrade``), against the same clean training references. A chain
    (``replay+amr_nb``) is rendered left to right; the set ``everyday`` expands in place. An evaluation
    window (``short_1s``, ``short_2s``, or ending a chain: ``amr_nb+short_1s``) is no rendering: the model and
    the baseline embed the (rendered) split's clips with that centred window instead of ``eval_seconds``
    (shorter clips stay whole, wrap-padded as in every window); the training references keep the clean
    ``eval_seconds`` window. The result's ``degraded_summary`` holds, per scorer, the mean and the worst EER
    over the degraded conditions, and the conditions where the model does / does not beat the baseline.
    """
    from sourcetrace.degrade.render import render_files

    root = str(root)
    if eval_seconds is not None and not (
        math.isfinite(eval_seconds) and (eval_seconds == 0 or MIN_WINDOW_S <= eval_seconds <= MAX_WINDOW_S)
    ):
        raise ConfigError(
            f"--eval-seconds {eval_seconds!r} is not a window of {MIN_WINDOW_S:g} to {MAX_WINDOW_S:g} s "
            "(0 = whole clip)"
        )
    if n_boot < 0:
        raise ConfigError(f"--bootstrap {n_boot} is negative; 0 computes no interval")
    if max_clips_per_system < 0:
        raise ConfigError(f"--max-clips-per-system {max_clips_per_system} is negative; 0 scores every clip")
    names = check_names(degrade) if degrade else []
    require(rendered_parts(names))  # a missing encoder is named before the model is loaded or a clip decoded
    if not Path(root).is_dir():
        raise ProtocolError(f"corpus root {root!r} is not a folder")
    try:
        folder = protocol_folder(root, str(protocol) if protocol else None)
    except ProtocolError:  # a missing protocol folder is named after the model, as it always was
        folder = Path(root) / "protocol"
    split_csv(folder, split)  # --split is a name, not a path: refused before the model loads
    dev = flag_device(device)
    loaded = load_any(model_path, dev)  # a folder without a model fails here, before any decoding
    table, train, source, notes = read_corpus(root, str(protocol) if protocol else None, split)
    if max_clips_per_system:
        table = sample_per_system(table, max_clips_per_system)
        notes.append(f"a seeded sample of at most {max_clips_per_system} clips per system: {len(table)} clips")
    out = Path(out) if out else Path(loaded.path) / f"evaluate_{Path(root).resolve().name}_{split}"
    writable_folder(out, "the output folder", "choose another --out")  # before anything is decoded or scored

    cfg = loaded.config
    seconds = cfg.data.eval_seconds if eval_seconds is None else float(eval_seconds)
    sr, cache = cfg.data.sample_rate, os.environ.get("SOURCETRACE_CACHE") or None
    amp = autocast_dtype(cfg.train.precision, dev)
    banks = {"split": WaveBank.load(list(table["file"]), sample_rate=sr, cache_dir=cache)}
    if train is not None:
        banks["train"] = WaveBank.load(list(train["file"]), sample_rate=sr, cache_dir=cache)
    model_train = (
        embed_waves(loaded.model, banks["train"], seconds, batch_size, dev, sr, amp) if train is not None else None
    )
    raw_train = clip_features(banks["train"], seconds, sr) if train is not None else None

    intervals: dict[str, dict[str, dict]] = {}

    def measure(bank, window: float, name: str = "clean") -> dict[str, dict[str, float]]:
        """Model and baseline metrics of the split's clips in ``bank`` embedded with a centred ``window`` (s),
        references from the clean train split (``seconds``); the paired bootstrap interval of their EER
        difference goes to ``intervals[name]``."""
        model_emb = {"split": embed_waves(loaded.model, bank, window, batch_size, dev, sr, amp), "train": model_train}
        raw = clip_features(bank, window, sr)
        base_emb = {"split": standardise(raw), "train": None if train is None else standardise(raw_train, raw)}
        out = {
            "model": _metrics(model_emb, table, train, source != "none"),
            "baseline": _metrics(base_emb, table, train, source != "none"),  # z-scored on the scored split
        }
        if n_boot:
            intervals[name] = eer_intervals(model_emb["split"], base_emb["split"], table, out, n_boot)
        return out

    metrics = measure(banks["split"], seconds)
    degraded, windows, kept = {}, {}, {}
    conditions = [split_condition(name) for name in names]
    for i, (name, (chain, window)) in enumerate(zip(names, conditions)):
        if chain is None:
            bank = banks["split"]
        else:  # a chain scored with and without a window is loaded once, and held only while still needed
            bank = kept.pop(chain, None)
            if bank is None:
                rendered = render_files(list(table["file"]), chain, degrade_seed, sr, progress=True)
                bank = WaveBank.load(rendered, sample_rate=sr, cache_dir=cache)
            if any(c == chain for c, _ in conditions[i + 1 :]):
                kept[chain] = bank
        if window is not None:
            windows[name] = window
        degraded[name] = measure(bank, seconds if window is None else window, name)
    out.mkdir(parents=True, exist_ok=True)
    from sourcetrace import __version__
    from sourcetrace.bundle.card import git_commit

    result = {
        "sourcetrace_version": __version__,
        "git_commit": git_commit(),
        "command": command,
        "machine": machine(),
        "model": str(loaded.path),
        "corpus": str(Path(root).resolve()),
        "split": split,
        "n_clips": int(len(table)),
        "eval_seconds": seconds,
        "n_systems": int(table["system"].nunique()),
        "conditions_from": source,
        "notes": notes,
        "metrics": metrics,
    }
    if intervals:
        result["intervals"] = intervals
        result["bootstrap"] = {"n_boot": n_boot, "margin_pp": MARGIN_PP, "over": "systems, then clips within them"}
    if names:
        result |= {"degraded": degraded, "degrade_seed": degrade_seed, "degrade_windows": windows}
        result["degraded_summary"] = summary(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    long_table(metrics, degraded).to_parquet(out / "metrics.parquet", index=False)
    return result | {"out": out}


def machine() -> str:
    """What computed the numbers: CPU model and count (CPU training and scoring reproduce on one machine)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


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


def cli_evaluate(args) -> int:
    """``sourcetrace evaluate --model MODEL --root DIR [--protocol P] [--split eval] [--out DIR]``."""
    if not args.model:
        raise SourcetraceError("--model is required (a run or checkpoint folder)")
    res = score(
        args.model,
        args.root,
        args.protocol,
        args.split,
        args.out,
        degrade=args.degrade,
        eval_seconds=args.eval_seconds,
        max_clips_per_system=args.max_clips_per_system,
        n_boot=args.bootstrap,
        command=shlex.join(["sourcetrace", *sys.argv[1:]]),
    )
    print(format_table(res))
    if res.get("degraded"):
        print(format_degraded(res))
    for note in res["notes"]:
        print(f"note: {note}")
    print(f"wrote {res['out'] / 'metrics.json'} and metrics.parquet")
    return 0
