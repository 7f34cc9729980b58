"""``sourcetrace analyze``: linear probe, confusion matrix, UMAP, DET and open-set metrics of a trained model, or
only the reliability of its calibrated probabilities (the plots and metrics: ``evaluation/``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import numpy as np

from sourcetrace.artefacts import load_any, resolve_model
from sourcetrace.bundle import files
from sourcetrace.data.protocol import read_checked
from sourcetrace.device import flag_device
from sourcetrace.evaluation.analyze import calibration_summary, summary, write_json
from sourcetrace.evaluation.baseline import table_baseline
from sourcetrace.evaluation.eer import all_pairs_metrics, det_points
from sourcetrace.evaluation.embed import embed_table
from sourcetrace.evaluation.openset import (
    DEFAULT_SCORER,
    SCORERS,
    calibrate_threshold,
    openset_metrics,
    reference_table,
)
from sourcetrace.evaluation.plots import plot_confusion, plot_det, plot_umap, umap_coordinates
from sourcetrace.evaluation.probe import confusion_long, linear_probe
from sourcetrace.registry import lookup
from sourcetrace.storage import writable_folder


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

    scorer = scorer or DEFAULT_SCORER
    lookup(SCORERS, scorer, "open-set scorer")  # a bad name fails before anything is embedded
    resolve_model(model_path)  # a model that does not exist is named before an output folder is made in it
    out = Path(out) if out else Path(model_path) / f"analysis_{split}"
    writable_folder(out, "the output folder", "choose another --out")  # before the model loads or a clip decodes
    dev = flag_device(device)
    loaded = load_any(model_path, dev)
    root, protocol = loaded.data_location(root, protocol)
    train_split = loaded.config.data.train_split
    proto = read_checked(root, protocol, (train_split, split))
    notes = []
    known = list(loaded.known_systems)
    if tuple(known) != proto.known_systems:
        notes.append(
            f"the protocol's training systems differ from the model's ({len(proto.known_systems)} vs {len(known)}); "
            "'known' means known to the model"
        )
    table = proto.tables[split]
    emb = embed_table(loaded, table, dev, batch_size)
    ref_table = reference_table(proto.tables[train_split], known)  # the references training's metrics use
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
    artifacts.append(write_json(out / "probe.json", {**pr.metrics(), "systems": pr.systems, "dropped": pr.dropped}))
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
    cal_data = (emb, systems)  # the dev split's embeddings and systems, for the calibration
    if split == cal_split and osr.n_known:
        thr = calibrate_threshold(osr.scores, seen, operating_point, target, split=split, scorer=scorer)
    elif split != cal_split:  # the threshold is chosen on dev and applied here: honest error rates
        cal = read_checked(root, protocol, (train_split, cal_split)).tables[cal_split]
        cal_data = (embed_table(loaded, cal, dev, batch_size), cal["system"].to_numpy(dtype=str))
        cal_osr = openset_metrics(
            ref,
            ref_table["system"].to_numpy(dtype=str),
            cal_data[0],
            cal_data[1],
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
    rel = calibration_reliability(
        loaded.path, scorer, ref, ref_table["system"].to_numpy(dtype=str), emb, systems, split, cal_split, cal_data, out
    )
    metrics.update(rel["metrics"])
    artifacts += rel["artifacts"]
    notes += rel["notes"]
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
    artifacts.append(write_json(out / "openset.json", openset))
    artifacts.append(write_json(out / "metrics.json", {"metrics": metrics, "notes": notes, "model": str(loaded.path)}))
    return {
        "out": out,
        "artifacts": artifacts,
        "metrics": metrics,
        "notes": notes,
        "threshold": thr,
        "scorer": scorer,
        "calibration": rel["calibration"],
    }


def calibration_reliability(
    model_path: Path,
    scorer: str,
    ref: np.ndarray,
    ref_systems: np.ndarray,
    emb: np.ndarray,
    systems: np.ndarray,
    split: str,
    cal_split: str,
    cal_data: tuple[np.ndarray, np.ndarray],
    out: Path,
) -> dict[str, Any]:
    """Reliability of the calibrated probabilities on ``split``: ``calibration.json`` (the calibration used,
    the bins and the ECE of knownness and of the top-1 system) and ``reliability.png``.

    The calibration is the bundle's (``calibration.json``, fitted on dev at export) when the model is a
    bundle that has one for ``scorer``; otherwise it is fitted here on ``cal_data`` (the dev split), as
    export would."""
    from sourcetrace.evaluation.calibration import (
        NEGATIVES_UNSEEN,
        Calibration,
        CalibrationError,
        fit_calibration,
        split_reliability,
    )
    from sourcetrace.evaluation.openset import fit_scorer
    from sourcetrace.evaluation.plots import plot_reliability

    notes: list[str] = []
    fitted = fit_scorer(scorer, ref, ref_systems)
    knownness, per = fitted.score(emb)
    stored = Path(model_path) / files.CALIBRATION
    cal, source = None, f"fitted on {cal_split} by analyze"
    if files.is_bundle(model_path) and stored.is_file():
        try:
            cal = Calibration.from_dict(files.read_json(Path(model_path), files.CALIBRATION))
        except CalibrationError as err:
            raise files.BundleError(f"{stored}: {err}") from None
        if cal.scorer == scorer:
            source = f"the bundle's {files.CALIBRATION}"
        else:
            notes.append(
                f"the bundle's calibration is for the {cal.scorer} scorer; refitted for {scorer} on {cal_split}"
            )
            cal = None
    if cal is None:
        try:
            cal = fit_calibration(scorer, ref, ref_systems, cal_data[0], cal_data[1], cal_split, fitted)
        except CalibrationError as err:
            notes.append(f"no calibrated probabilities: {err}")
            return {"calibration": None, "metrics": {}, "artifacts": [], "notes": notes, "source": None}
    if split == cal.split:
        notes.append(f"calibration error on {split}, the split the calibration was fitted on: in-sample, optimistic")
    rels = split_reliability(cal, knownness, per, systems, fitted.systems)
    if "knownness" in rels and cal.negatives == NEGATIVES_UNSEEN:
        here = float(np.isin(systems, fitted.systems).mean())
        there = cal.n_known / (cal.n_known + cal.n_unknown)
        if abs(here - there) > 0.1:
            notes.append(
                f"P(known) is calibrated at {cal.split}'s mix ({100 * there:.0f}% known clips); {split} has "
                f"{100 * here:.0f}%, which alone moves its calibration error"
            )
    metrics = {f"calibration_ece_{k}": r.ece for k, r in rels.items()}
    report = {
        "split": split,
        "source": source,
        "calibration": cal.to_dict(),
        "bins": len(next(iter(rels.values())).count) if rels else None,
        "reliability": {k: r.to_dict() for k, r in rels.items()},
    }
    artifacts = [write_json(out / "calibration.json", report)]
    if rels:
        artifacts.append(
            plot_reliability(rels.values(), out / "reliability.png", f"Reliability on {split} ({cal.method()})")
        )
    return {"calibration": cal, "metrics": metrics, "artifacts": artifacts, "notes": notes, "source": source}


def analyze_calibration(
    model_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    protocol: str | os.PathLike | None = None,
    split: str = "eval",
    out: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    scorer: str | None = None,
) -> dict[str, Any]:
    """Only the reliability of the calibrated probabilities on ``split`` (``analyze`` does it among the rest):
    ``calibration.json`` and ``reliability.png`` in ``out``. For a bundle, ``scorer`` defaults to the bundle's."""

    dev = flag_device(device)
    loaded = load_any(model_path, dev)
    if scorer is None:
        scorer = str(loaded.meta.get("scorer") or DEFAULT_SCORER) if files.is_bundle(loaded.path) else DEFAULT_SCORER
    lookup(SCORERS, scorer, "open-set scorer")
    root, protocol = loaded.data_location(root, protocol)
    train_split, cal_split = loaded.config.data.train_split, loaded.config.data.dev_split
    proto = read_checked(root, protocol, tuple(dict.fromkeys((train_split, cal_split, split))))
    out = Path(out) if out else Path(model_path) / f"analysis_{split}"
    out.mkdir(parents=True, exist_ok=True)
    ref_table = reference_table(proto.tables[train_split], list(loaded.known_systems))
    ref = embed_table(loaded, ref_table, dev, batch_size)
    table = proto.tables[split]
    emb, systems = embed_table(loaded, table, dev, batch_size), table["system"].to_numpy(dtype=str)
    if split == cal_split:
        cal_data = (emb, systems)
    else:
        cal = proto.tables[cal_split]
        cal_data = (embed_table(loaded, cal, dev, batch_size), cal["system"].to_numpy(dtype=str))
    res = calibration_reliability(
        loaded.path, scorer, ref, ref_table["system"].to_numpy(dtype=str), emb, systems, split, cal_split, cal_data, out
    )
    return res | {"out": out, "scorer": scorer}


def run(args) -> int:
    """``sourcetrace analyze MODEL [--root DIR] [--protocol P] [--split dev|eval] [--out DIR]``."""
    if getattr(args, "calibration_only", False):
        res = analyze_calibration(args.model, args.root, args.protocol, args.split, args.out)
        print(calibration_summary(res, args.split))
        return 0
    res = analyze(args.model, args.root, args.protocol, args.split, args.out)
    print(summary(res, args.split))
    return 0
