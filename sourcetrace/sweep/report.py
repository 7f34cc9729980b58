"""A sweep's Tune experiment folder -> Table-1 parquet reports (no Ray started, MLflow optional).

``trials.parquet``: one row per trial x evaluation (a trial with no evaluation keeps one row of NaNs),
with its recipe, settings (``cfg:<key>`` columns), status (finished | early_stopped | failed |
interrupted | pending) and why, every dev/test metric of the evaluation, ``best``/``best_epoch`` and,
from the sweep's MLflow store, the trial's ``run_id``.
``table1_cells.parquet``: per backbone/loss/sampler/dim and split, the mean and 95 % CI over seeds of
each trial's best evaluation (chosen by dev EER). ``table1.parquet``: those cells pivoted like the
paper (rows backbone/loss/sampler, columns dev/test x dim). Unfinished and failed trials stay visible.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.errors import SourcetraceError
from sourcetrace.sweep import RECORD
from sourcetrace.sweep.comparison import (
    baseline_cells,
    compare_best,
    format_comparison,
    fusion_label,
    read_baseline,
)
from sourcetrace.sweep.handover import handed_over, read_sweep_fusion
from sourcetrace.sweep.spec import TrialSpec, recipes_of
from sourcetrace.sweep.status import UNFINISHED, error_reason, trial_status
from sourcetrace.validation import used_params

KEYS = ["backbone", "loss", "sampler", "dim"]
# Keys that are cell coordinates or replicate seeds, or that leave a trial's results as they are (threads,
# resume points): trials differing only in these share a Table-1 cell.
_NOT_VARIANT = {"model.name", "loss.name", "sampler.name", "model.embedding_dim", "train.seed", "train.num_threads"}
_NOT_VARIANT |= {"train.checkpoint_every"}


@dataclass
class Reports:
    trials: pd.DataFrame
    cells: pd.DataFrame
    table1: pd.DataFrame
    out_dir: Path
    name: str
    comparison: pd.DataFrame | None = None  # best trial vs the featureless baseline, per split and condition


def _read_results(path: Path) -> list[dict]:
    """result.json rows, one per epoch (a retried epoch keeps its newest report)."""
    if not path.is_file():
        return []
    rows = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row.get("epoch", row.get("training_iteration"))] = row
    return [rows[k] for k in sorted(rows, key=float)]


def _trials(exp: Path) -> list:
    """Tune's trials of the experiment folder, read with its public ``ExperimentAnalysis`` (no Ray started)."""
    from ray.tune import ExperimentAnalysis  # seconds to import: only once a report is built

    if not any(Path(exp).glob("experiment_state-*.json")):
        raise SourcetraceError(f"{exp} holds no Tune experiment (no experiment_state-*.json)")
    try:  # absolute: Ray hands the path to pyarrow, which takes a relative one for a URI without a scheme
        return ExperimentAnalysis(str(Path(exp).resolve())).trials
    except ValueError:  # no experiment snapshot in the folder
        raise SourcetraceError(f"{exp} holds no Tune experiment (no experiment_state-*.json)") from None


def trials_frame(exp: str | Path) -> pd.DataFrame:
    """The long table: one row per trial x evaluation of a Tune experiment folder."""
    exp = Path(exp)
    record = json.loads((exp / RECORD).read_text()) if (exp / RECORD).is_file() else {}
    spec = TrialSpec(record.get("base", {}), recipes_of(record))
    rows = []
    for t in _trials(exp):
        folder = Path(t.path)
        cfg = spec.config(t.config)
        results = _read_results(folder / "result.json")
        reached = int(results[-1]["epoch"]) if results else 0
        error_file = t.run_metadata.error_filename  # (``Trial.error_file`` needs a running Ray)
        error = error_reason(folder / error_file) if t.status == "ERROR" and error_file else None
        status, reason = trial_status(t.status, reached, cfg.train.epochs, error)
        base = {
            "sweep": record.get("name", exp.name),
            "trial_id": t.trial_id,
            "trial_name": folder.name,
            "backbone": cfg.model.name,
            "loss": cfg.loss.name,
            "sampler": cfg.sampler.name,
            "dim": cfg.model.embedding_dim,
            "seed": cfg.train.seed,
            "batch_size": cfg.train.batch_size,
            "epochs": cfg.train.epochs,
            "status": status,
            "stop_reason": reason,
            "epoch_reached": reached,
            "num_failures": t.num_failures,
            "wall_s": float(results[-1]["time_total_s"]) if results else np.nan,
        }
        base |= {f"param:{k}": v for k, v in t.config.items()}
        base |= {f"cfg:{k}": v for k, v in used_params(cfg).items()}  # the settings, one column each
        flat = {k: v for k, v in cfg.to_flat().items() if k not in _NOT_VARIANT}
        base["config"] = json.dumps(flat, sort_keys=True)
        evals = [r for r in results if "dev_eer" in r]
        for r in evals or [{}]:
            row = dict(base, epoch=int(r["epoch"]) if r else np.nan)
            # every evaluation metric: EER and minDCF overall and per condition, open set, probe
            row |= {k: float(v) for k, v in r.items() if k.startswith(("dev_", "test_")) and _is_number(v)}
            ckpt = folder / r["checkpoint_dir_name"] if r.get("checkpoint_dir_name") else None
            row["checkpoint"] = str(ckpt) if ckpt is not None and ckpt.is_dir() else None
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise SourcetraceError(f"{exp} has no trials yet")
    if "dev_eer" not in frame:
        frame["dev_eer"] = np.nan
    best = frame.dropna(subset=["dev_eer"]).groupby("trial_id")["dev_eer"].idxmin()
    frame["best"] = frame.index.isin(best.values) | frame["dev_eer"].isna()
    frame["best_epoch"] = frame["trial_id"].map(frame.loc[best.values].set_index("trial_id")["epoch"])
    return frame


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return np.nan
    from scipy import stats  # only for cells with two or more seeds

    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values)))


def _variants(best: pd.DataFrame) -> pd.Series:
    """Per trial, the settings that tell it apart from other trials of its cell besides the seed ("" in a grid)."""
    out = pd.Series("", index=best.index)
    for _, group in best.groupby(KEYS[:3], sort=False):
        configs = {i: json.loads(c) for i, c in group["config"].items()}
        keys = sorted(
            {k for c in configs.values() for k in c if len({json.dumps(d.get(k)) for d in configs.values()}) > 1}
        )
        for i, c in configs.items():
            out[i] = ", ".join(
                f"{k}={c.get(k):.4g}" if isinstance(c.get(k), float) else f"{k}={c.get(k)}" for k in keys
            )
    return out


def table1_cells(trials: pd.DataFrame) -> pd.DataFrame:
    """Per cell (backbone, loss, sampler, variant, dim) and split: mean and 95 % CI over seeds, status counts."""
    best = trials[trials["best"]].copy()
    best["variant"] = _variants(best)
    rows = []
    for key, group in best.groupby(KEYS[:3] + ["variant", "dim"], sort=True):
        counts = group["status"].value_counts()
        for split in ("dev", "test"):
            col = f"{split}_eer"
            vals = group[col].dropna().to_numpy(dtype=float) if col in group else np.array([])
            rows.append(
                dict(
                    zip(KEYS[:3] + ["variant", "dim"], key),
                    split=split,
                    eer_mean=float(vals.mean()) if len(vals) else np.nan,
                    eer_ci95=ci95(vals),
                    n=len(vals),
                    n_trials=len(group),
                    **{f"n_{s}": int(counts.get(s, 0)) for s in ("finished", "early_stopped", "failed")},
                    n_unfinished=int(sum(counts.get(s, 0) for s in UNFINISHED)),
                )
            )
    return pd.DataFrame(rows)


def table1_wide(cells: pd.DataFrame) -> pd.DataFrame:
    """The paper's layout: rows backbone/loss/sampler; columns ``dev@10`` ... ``test@512`` (+ ``_ci95``)."""
    wide = cells.pivot(index=KEYS[:3] + ["variant"], columns=["split", "dim"], values=["eer_mean", "eer_ci95"])
    out = pd.DataFrame(index=wide.index)
    for split in ("dev", "test"):
        for dim in sorted(cells["dim"].unique()):
            out[f"{split}@{dim}"] = wide[("eer_mean", split, dim)]
            out[f"{split}@{dim}_ci95"] = wide[("eer_ci95", split, dim)]
    return out.reset_index()


def write_reports(
    exp: str | Path, out: str | Path | None = None, tracking_uri: str | None = None, mlflow: bool = True
) -> Reports:
    """Build the three tables and write them as parquet, with MLflow run ids (from ``tracking_uri``, else the
    store the sweep recorded) unless ``mlflow`` is False."""
    exp = Path(exp)
    trials = trials_frame(exp)
    record = json.loads((exp / RECORD).read_text()) if (exp / RECORD).is_file() else {}
    tracking_uri = tracking_uri or record.get("tracking_uri")  # the store the sweep logged to
    if mlflow and tracking_uri:
        from sourcetrace.tracking.store import runs_frame  # MLflow only when a store is read

        runs = runs_frame(tracking_uri, record.get("experiment", exp.name)).drop_duplicates("trial_id")
        trials = trials.merge(runs, on="trial_id", how="left")
    cells = table1_cells(trials)
    baseline, fusion = read_baseline(exp), read_sweep_fusion(exp)
    dims = sorted(cells["dim"].unique())
    if fusion is not None:
        cells = pd.concat([cells, baseline_cells(fusion, dims, fusion_label(fusion))], ignore_index=True)
    if baseline is not None:
        cells = pd.concat([cells, baseline_cells(baseline, dims)], ignore_index=True)
    wide = table1_wide(cells)
    comparison = compare_best(handed_over(exp, trials), baseline) if baseline is not None else None
    out_dir = Path(out) if out else exp / "report"
    out_dir.mkdir(parents=True, exist_ok=True)
    trials.to_parquet(out_dir / "trials.parquet", index=False)
    cells.to_parquet(out_dir / "table1_cells.parquet", index=False)
    wide.to_parquet(out_dir / "table1.parquet", index=False)
    if comparison is not None:
        comparison.to_parquet(out_dir / "comparison.parquet", index=False)
    return Reports(trials, cells, wide, out_dir, str(trials["sweep"].iloc[0]), comparison)


def format_table1(reports: Reports) -> str:
    """Table 1 as text: ``mean±ci`` per cell, marked when a trial in it did not finish its budget."""
    cells, trials = reports.cells, reports.trials
    dims = sorted(cells["dim"].unique())
    head = f"{'backbone':<15}{'loss':<12}{'sampler':<10}" + "".join(
        f"{s + ' ' + str(d):>13}" for s in ("dev", "test") for d in dims
    )
    lines = [
        f"Table 1 of sweep {reports.name}: EER % at each trial's best dev evaluation (mean±95% CI over seeds)",
        head,
    ]
    for key, group in cells.groupby(KEYS[:3] + ["variant"], sort=True):
        text = f"{key[0]:<15}{key[1]:<12}{key[2]:<10}" if key[1] else f"{key[0]:<37}"  # baseline, fusion: no loss
        for split in ("dev", "test"):
            for dim in dims:
                c = group[(group["split"] == split) & (group["dim"] == dim)]
                text += f"{_cell(c.iloc[0]) if len(c) else '':>13}"
        lines.append(text + (f"  {key[3]}" if key[3] else ""))
    lines.append(
        "marks: * early-stopped by the scheduler  ! failed  ? unfinished "
        "(cell mean over the trials that have an evaluation)"
    )
    odd = trials[trials["best"] & (trials["status"] != "finished")].drop_duplicates("trial_id")
    for _, row in odd.iterrows():
        lines.append(f"  {row['status']:<13} {row['trial_name'][:40]:<41} {row['stop_reason']}")
    counts = trials.drop_duplicates("trial_id")["status"].value_counts()
    lines.append("trials: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    if reports.comparison is not None:
        lines.append(format_comparison(reports.comparison))
    return "\n".join(lines)


def _cell(c: pd.Series) -> str:
    if c["n"] == 0:
        return "failed" if c["n_failed"] else "—"
    text = f"{c['eer_mean']:.2f}" + (f"±{c['eer_ci95']:.2f}" if c["n"] > 1 else "")
    marks = "*" * bool(c["n_early_stopped"]) + "!" * bool(c["n_failed"]) + "?" * bool(c["n_unfinished"])
    return text + marks


def report_with_or_without_mlflow(exp_dir: Path, store):
    """The sweep's reports with MLflow run ids; without them (one note) if the store cannot be read."""
    try:
        return write_reports(exp_dir, tracking_uri=store.uri)
    except OSError:
        raise
    except Exception as err:  # a broken store must not cost the report: Tune's files hold every result
        first = (str(err).strip().splitlines() or [""])[0][:200]
        print(
            f"note: MLflow store {store.uri} cannot be read ({type(err).__name__}: {first}); "
            "report written without run ids",
            file=sys.stderr,
        )
        return write_reports(exp_dir, mlflow=False)
