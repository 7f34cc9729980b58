"""The sweep's fusion (TUNE ``fuse``): the best trial of each fused value, scored as one model.

After the trials end, each value of the fused key (a front end, a backbone ...) contributes its best
trial, the lowest dev EER at its best evaluation, the checkpoint the reports name. They become the
members of ``EXP/fusion`` with equal weights (``sourcetrace/fusion.py``). No weight is tuned: the dev
split would choose it on the very clips that chose the members. The fused network is evaluated exactly
as a trial evaluates (``training.loop.score_splits``: dev and test, the same crops, references and open-set
scorer), logged as a run of the sweep's MLflow experiment, and recorded in ``fusion.json``. The reports set
it beside the trials and the baseline, and the sweep hands it over (``best_model``) when it beats its best
member on dev (``sweep/handover.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from sourcetrace.errors import SourcetraceError
from sourcetrace.sweep.handover import FUSION_DIR


def fusion_name(labels: list[str]) -> str:
    return "fusion: " + " + ".join(labels)


def pick_members(trials: pd.DataFrame, key: str, values: list) -> list[pd.Series]:
    """The best evaluation with a checkpoint of each value of ``key``, in the SPACE's order."""
    col = f"param:{key}"
    if col not in trials:
        return []
    rows = trials[trials["best"]].dropna(subset=["dev_eer", "checkpoint"])
    out = []
    for value in values:
        group = rows[rows[col].astype(str) == str(value)]
        if not group.empty:
            out.append(group.loc[group["dev_eer"].idxmin()])
    return out


def sweep_fusion(exp_dir: Path, trials: pd.DataFrame, key: str, values: list, tracking_uri=None, experiment=None):
    """Write (or reuse) ``EXP/fusion/fusion.json`` with the fusion's dev/test metrics; None when fewer than
    two values have a trial with a checkpoint (the best trial is then handed over, as without ``fuse``)."""
    from sourcetrace.fusion import FUSION_FILE, read_fusion, write_fusion

    members = pick_members(trials, key, values)
    if len(members) < 2:
        print(f"note: fewer than two values of {key} have a trained trial: nothing to fuse", file=sys.stderr)
        return None
    folder = Path(exp_dir) / FUSION_DIR
    checkpoints = [str(Path(m["checkpoint"]).absolute()) for m in members]
    if (folder / FUSION_FILE).is_file():
        try:
            record = read_fusion(folder)
        except SourcetraceError:  # damaged: made again below
            record = {"members": []}
        if [m["checkpoint"] for m in record["members"]] == checkpoints and record.get("metrics"):
            if record.get("run_id") or not (tracking_uri and experiment):
                return record  # a report run again, or a resumed sweep that changed nothing
            extra = {k: record[k] for k in ("name", "key", "labels", "trials", "metrics")}  # its run: the store
            return _log_fusion(folder, checkpoints, extra, tracking_uri, experiment)  # had failed
    labels = [f"{key}={m[f'param:{key}']}" for m in members]
    name = fusion_name(labels)
    trial_names = [str(m["trial_name"]) for m in members]
    write_fusion(folder, checkpoints, name=name, key=key, labels=labels, trials=trial_names)
    metrics = measure(folder)
    extra = {"name": name, "key": key, "labels": labels, "trials": trial_names, "metrics": metrics}
    write_fusion(folder, checkpoints, check=False, **extra)  # measured: kept before MLflow is tried
    if tracking_uri and experiment:
        return _log_fusion(folder, checkpoints, extra, tracking_uri, experiment)
    return read_fusion(folder)


def _log_fusion(folder: Path, checkpoints: list[str], extra: dict, tracking_uri: str, experiment: str) -> dict:
    """Log a measured fusion as a run of the sweep's experiment; its id goes into ``fusion.json``."""
    from sourcetrace.fusion import read_fusion, write_fusion
    from sourcetrace.tracking.store import log_reference_run, run_tags

    key, labels, trial_names = extra["key"], extra["labels"], extra["trials"]
    configs = member_configs(checkpoints)
    params = member_params(configs) | {"fusion.key": key, "fusion.weights": "equal"}
    params |= {f"fusion.member{i}": f"{label} ({t})" for i, (label, t) in enumerate(zip(labels, trial_names))}
    tags = run_tags(configs[0].data.root, configs[0].data.protocol or None)
    run_id = log_reference_run(tracking_uri, experiment, extra["name"], params, extra["metrics"], "fusion", tags)
    write_fusion(folder, checkpoints, check=False, **extra, run_id=run_id)  # checked by the first write
    return read_fusion(folder)


def member_configs(checkpoints: list[str]) -> list:
    """The ``Config`` of each member checkpoint (its ``config.json``)."""
    from sourcetrace.config import Config
    from sourcetrace.training.checkpoint import resolve_checkpoint

    return [Config.from_json((resolve_checkpoint(c) / "config.json").read_text()) for c in checkpoints]


def member_params(configs: list) -> dict[str, str]:
    """The settings the members use (``used_params``), one value where they agree and ``a + b`` where they
    differ (``model.embedding_dim`` = ``50 + 10``), so the fusion's run compares with the trials' runs."""
    from sourcetrace.validation import used_params

    used = [used_params(cfg) for cfg in configs]
    out = {}
    for key in sorted({k for u in used for k in u}):
        values = [str(u.get(key, "-")) for u in used]
        out[key] = values[0] if len(set(values)) == 1 else " + ".join(values)
    return out


def measure(folder: Path) -> dict[str, float]:
    """dev_* and test_* metrics of a fusion folder, computed as a trial's evaluation computes its own, on the
    driver's GPU when it has one (as ``export`` does)."""
    from sourcetrace.device import resolve_device
    from sourcetrace.fusion import load_model
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import score_splits

    device = resolve_device("auto")
    loaded = load_model(folder, device)
    try:
        data = prepare_data(loaded.config)
    except SourcetraceError as err:
        raise SourcetraceError(f"the fusion {folder} cannot be scored on its training corpus: {err}") from None
    metrics = score_splits(loaded.model, data, loaded.config, device)
    return {k: float(v) for k, v in metrics.items()}
