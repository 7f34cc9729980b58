"""``sourcetrace analyze``: the paper's analyses of one trained model on one split.

Embeds the split (and the training split, whose centroids define the known systems) and writes to
``out``: the linear probe (``probe.json``, ``confusion.parquet`` + ``confusion.png``), the UMAP
(``umap.parquet`` with the 2-D coordinates + ``umap.png``), the all-pairs DET curve (``det.png``),
the open-set metrics with a calibrated "unknown" threshold (``openset.json``) and every flat metric
(``metrics.json``). No MLflow here: ``analyze`` returns the artefact paths for the caller to log.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sourcetrace.errors import ProtocolError, SourcetraceError


def embed_table(loaded, table: pd.DataFrame, device, batch_size: int = 64) -> np.ndarray:
    """Embeddings [n, D] of a protocol table's clips: decoded once, one centred crop each."""
    from sourcetrace.data.bank import WaveBank
    from sourcetrace.evaluation.embed import embed_waves
    from sourcetrace.training.loop import autocast_dtype

    cfg = loaded.config
    bank = WaveBank.load(
        list(table["file"]), sample_rate=cfg.data.sample_rate, cache_dir=os.environ.get("SOURCETRACE_CACHE") or None
    )
    return embed_waves(
        loaded.model, bank, cfg.data.eval_seconds, batch_size, device, cfg.data.sample_rate, autocast_dtype(cfg, device)
    )


def data_location(loaded, root: str | os.PathLike | None, protocol: str | os.PathLike | None) -> tuple[str, str | None]:
    """(root, protocol) as given, else from the model's config; a clear error when neither says."""
    source = "--root" if root else f"data.root of {loaded.path / 'config.json'}"
    root = str(root) if root else loaded.config.data.root
    if not root:
        raise SourcetraceError(
            f"the model at {loaded.path} does not record its data root (config data.root is empty); pass --root DIR"
        )
    if not Path(root).is_dir():
        raise ProtocolError(f"data root {root!r} (from {source}) is not a folder")
    return root, (str(protocol) if protocol else loaded.config.data.protocol or None)


def read_split_tables(root: str, protocol: str | None, splits: tuple[str, ...]):
    """Protocol and tables of ``splits``, with every audio file checked to exist."""
    from sourcetrace.data.protocol import check_files, read_protocol

    proto = read_protocol(root, protocol, splits=tuple(dict.fromkeys(splits)))
    missing = check_files(proto)
    if missing:
        shown = "\n  ".join(missing[:20]) + (f"\n  ... and {len(missing) - 20} more" if len(missing) > 20 else "")
        raise ProtocolError(f"{len(missing)} protocol rows point at missing files:\n  {shown}")
    return proto


def analyze(
    model_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    protocol: str | os.PathLike | None = None,
    split: str = "dev",
    out: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    seed: int = 0,
    per_class: int | None = 300,
    operating_point: str = "fur",
    target: float = 0.05,
    scorer: str | None = None,
) -> dict[str, Any]:
    """Run every analysis; returns ``{"out", "artifacts": [Path], "metrics": {name: float}, "notes"}``."""
    from sourcetrace.bundle.export import load_any  # a bundle, run, checkpoint or sweep folder
    from sourcetrace.evaluation.eer import all_pairs_metrics, det_points
    from sourcetrace.evaluation.openset import (
        DEFAULT_SCORER,
        SCORERS,
        calibrate_threshold,
        openset_metrics,
        reference_rows,
    )
    from sourcetrace.evaluation.plots import plot_confusion, plot_det, plot_umap, umap_coordinates
    from sourcetrace.evaluation.probe import confusion_long, linear_probe
    from sourcetrace.registry import lookup
    from sourcetrace.training.loop import resolve_device

    scorer = scorer or DEFAULT_SCORER
    lookup(SCORERS, scorer, "open-set scorer")  # a bad name fails before anything is embedded
    dev = resolve_device(device, f"--device {device!r}")
    loaded = load_any(model_path, dev)
    root, protocol = data_location(loaded, root, protocol)
    train_split = loaded.config.data.train_split
    proto = read_split_tables(root, protocol, (train_split, split))
    out = Path(out) if out else Path(model_path) / f"analysis_{split}"
    out.mkdir(parents=True, exist_ok=True)
    notes = []
    known = list(loaded.known_systems)
    if tuple(known) != proto.known_systems:
        notes.append(
            f"the protocol's training systems differ from the model's ({len(proto.known_systems)} vs {len(known)}); "
            "'known' means known to the model"
        )
    table = proto.tables[split]
    emb = embed_table(loaded, table, dev, batch_size)
    ref_table = proto.tables[train_split]
    ref_table = ref_table.iloc[reference_rows(ref_table)]  # the same references as training's metrics
    ref = embed_table(loaded, ref_table, dev, batch_size)
    systems = table["system"].to_numpy(dtype=str)
    seen = np.isin(systems, known)
    metrics: dict[str, float] = {}
    artifacts: list[Path] = []

    # linear probe (paper): accuracy, macro-F1, confusion matrix
    pr = linear_probe(emb, systems, per_class=per_class, seed=seed)
    metrics.update(pr.metrics())
    if pr.dropped:
        notes.append(f"probe: left out systems with < 2 clips: {pr.dropped}")
    artifacts.append(_write_json(out / "probe.json", {**pr.metrics(), "systems": pr.systems, "dropped": pr.dropped}))
    confusion_long(pr.confusion).to_parquet(out / "confusion.parquet", index=False)
    artifacts.append(out / "confusion.parquet")
    title = (
        f"Linear probe on {split}: acc {100 * pr.accuracy:.1f}%, macro-F1 {pr.macro_f1:.3f} "
        f"(at most {pr.per_class}/class)"
    )
    artifacts.append(plot_confusion(pr.confusion, out / "confusion.png", title))

    # UMAP of the split's embeddings, coloured by system, seen vs unseen
    xy = umap_coordinates(emb, seed=seed)
    coords = table[["path", "system", "language", "system_seen", "language_seen", "condition"]].copy()
    coords["seen"], coords["x"], coords["y"] = seen, xy[:, 0], xy[:, 1]
    coords.to_parquet(out / "umap.parquet", index=False)
    artifacts.append(out / "umap.parquet")
    artifacts.append(plot_umap(xy, systems, seen, out / "umap.png", f"UMAP of {split} embeddings"))

    # DET of the all-pairs cosine scores with EER and minDCF
    pm = all_pairs_metrics(emb, systems)
    metrics.update({"eer": pm.eer, "min_dcf": pm.min_dcf})
    fpr, fnr = det_points(emb, systems)
    artifacts.append(plot_det(fpr, fnr, out / "det.png", pm.eer, pm.min_dcf, label=split))

    # open set: known (model's training systems) vs systems absent from train
    osr = openset_metrics(ref, ref_table["system"].to_numpy(dtype=str), emb, systems, known, scorer=scorer)
    metrics.update(osr.metrics())
    thr, cal_split = None, loaded.config.data.dev_split
    if split == cal_split and osr.n_known:
        thr = calibrate_threshold(osr.scores, seen, operating_point, target, split=split, scorer=scorer)
    elif split != cal_split:  # the threshold is chosen on dev and applied here: honest error rates
        cal = read_split_tables(root, protocol, (train_split, cal_split)).tables[cal_split]
        cal_osr = openset_metrics(
            ref,
            ref_table["system"].to_numpy(dtype=str),
            embed_table(loaded, cal, dev, batch_size),
            cal["system"].to_numpy(dtype=str),
            known_systems=known,
            scorer=scorer,
        )
        thr = calibrate_threshold(
            cal_osr.scores, cal["system"].isin(known).to_numpy(), operating_point, target, cal_split, scorer
        )
    if thr is not None:
        metrics["openset_threshold"] = thr.value
        if seen.any():
            metrics["openset_false_unknown_rate"] = float((osr.scores[seen] < thr.value).mean())
        if (~seen).any():
            metrics["openset_false_known_rate"] = float((osr.scores[~seen] >= thr.value).mean())
    from sourcetrace.evaluation.baseline import table_baseline  # the featureless reference column

    cfg = loaded.config
    metrics.update(table_baseline("baseline", table, ref_table, known, cfg.data.eval_seconds, cfg.data.sample_rate))
    openset = {k: v for k, v in dataclasses.asdict(osr).items() if k not in ("scores", "predicted")}
    openset.update(
        {
            "threshold": thr.to_dict() if thr else None,
            "operating_point": thr.describe() if thr else None,
            "reference_split": train_split,
            "split": split,
            **{
                k: metrics[f"openset_{k}"]
                for k in ("false_unknown_rate", "false_known_rate")
                if f"openset_{k}" in metrics
            },
        }
    )
    artifacts.append(_write_json(out / "openset.json", openset))
    artifacts.append(_write_json(out / "metrics.json", {"metrics": metrics, "notes": notes, "model": str(loaded.path)}))
    return {"out": out, "artifacts": artifacts, "metrics": metrics, "notes": notes, "threshold": thr, "scorer": scorer}


def _write_json(path: Path, obj: Any) -> Path:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_plain))
    return path


def _plain(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def cli_analyze(args) -> int:
    """``sourcetrace analyze MODEL [--root DIR] [--protocol P] [--split dev|eval] [--out DIR]``."""
    res = analyze(args.model, args.root, args.protocol, args.split, args.out)
    m = res["metrics"]
    print(f"{args.split}: all-pairs EER {m['eer']:.2f}%  minDCF {m['min_dcf']:.3f}", end="")
    print(f"  (baseline (MFCC stats): EER {m['baseline_eer']:.2f}%  minDCF {m['baseline_min_dcf']:.3f})")
    print(
        f"linear probe: accuracy {100 * m['probe_accuracy']:.1f}%  macro-F1 {m['probe_macro_f1']:.3f}  "
        f"({int(m['probe_n_classes'])} systems, at most {int(m['probe_per_class'])} clips each; "
        f"chance {100 * m['probe_chance']:.1f}%)"
    )
    if "openset_auroc" in m:
        print(
            f"unknown-system detection: AUROC {m['openset_auroc']:.3f}  EER {m['openset_eer']:.2f}%  "
            f"FPR95 {100 * m['openset_fpr95']:.1f}%",
            end="",
        )
        print(f"  (baseline AUROC {m['baseline_openset_auroc']:.3f})" if "baseline_openset_auroc" in m else "")
    if "openset_closed_accuracy" in m:
        print(
            f"best-matching system ({res['scorer']} scorer) on known systems: "
            f"accuracy {100 * m['openset_closed_accuracy']:.1f}%  "
            f"macro-F1 {m['openset_closed_macro_f1']:.3f}"
        )
    if res["threshold"] is not None:
        print(res["threshold"].describe())
        if args.split != res["threshold"].split and "openset_false_unknown_rate" in m:
            fkr = m.get("openset_false_known_rate")
            print(
                f"  applied to {args.split}: false-unknown {100 * m['openset_false_unknown_rate']:.1f}%"
                + (f", false-known {100 * fkr:.1f}%" if fkr is not None else "")
            )
    for note in res["notes"]:
        print(f"note: {note}")
    print(f"wrote {len(res['artifacts'])} files to {res['out']}")
    return 0
