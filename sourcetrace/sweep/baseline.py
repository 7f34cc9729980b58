"""The featureless baseline as a sweep runs it: scored once on the sweep's corpus, kept in ``baseline.json``
and logged as a run of the sweep's MLflow experiment beside the trials (``evaluation/baseline.py`` scores it)."""

from __future__ import annotations

import json
from pathlib import Path

from sourcetrace.config import Config
from sourcetrace.degrade import renderings_of
from sourcetrace.evaluation.baseline import BASELINE_FILE, N_MFCC, NAME, corpus_baseline


def sweep_baseline(exp_dir, base: dict, tracking_uri: str | None = None, experiment: str | None = None) -> dict:
    """The baseline of a sweep's corpus (dev and eval), once: cached in ``exp_dir/baseline.json`` and, with
    ``tracking_uri``, logged as a run of the sweep's MLflow experiment beside the trials (a cached baseline
    without its run, the store having failed, is logged now). The file is written before MLflow is tried."""
    path = Path(exp_dir) / BASELINE_FILE
    record = json.loads(path.read_text()) if path.is_file() else None
    if record is not None and ("run_id" in record or not (tracking_uri and experiment)):
        return record
    cfg = Config.from_dict(base)  # the trials' settings: data.*, train.eval_test, the renderings' seed
    d = cfg.data
    if record is None:
        splits = {"dev": d.dev_split} | ({"test": d.test_split} if cfg.train.eval_test else {})
        dev_degrade = renderings_of(d.dev_degrade, "data.dev_degrade") if d.dev_degrade else []
        metrics = corpus_baseline(
            d.root,
            d.protocol or None,
            splits,
            d.train_split,
            d.eval_seconds,
            d.sample_rate,
            {"dev": dev_degrade},
            cfg.augment.seed,
        )
        record = {
            "name": NAME,
            "eval_seconds": d.eval_seconds,
            "standardised_on": "scored split",
            "metrics": metrics,
        } | ({"dev_degrade": dev_degrade} if dev_degrade else {})
        _write(path, record)
    if tracking_uri and experiment:
        from sourcetrace.tracking.store import log_reference_run, run_tags

        params = {
            "baseline.features": f"mean+std of {N_MFCC} MFCC + deltas",
            "baseline.standardised_on": "scored split",
            "data.eval_seconds": d.eval_seconds,
            "data.sample_rate": d.sample_rate,
            "data.dev_split": d.dev_split,
            "data.test_split": d.test_split if cfg.train.eval_test else "-",
            "data.dev_degrade": d.dev_degrade or "-",
            "augment.seed": cfg.augment.seed,
        }
        tags = run_tags(d.root, d.protocol or None)
        metrics = record["metrics"]
        record["run_id"] = log_reference_run(tracking_uri, experiment, NAME, params, metrics, "baseline", tags)
        _write(path, record)
    return record


def _write(path: Path, record: dict) -> None:
    from sourcetrace.storage import storage_error

    try:
        path.write_text(json.dumps(record, indent=2, sort_keys=True))
    except OSError as err:  # the results folder: one line naming the file, not a traceback
        raise storage_error(err, path) from None
