"""A sweep's Tune experiment folder -> Table-1 parquet reports (no Ray started, MLflow optional).

``trials.parquet``: one row per trial x evaluation (a trial with no evaluation keeps one row of NaNs),
with its recipe, status (finished | early_stopped | failed | interrupted | pending) and why.
``table1_cells.parquet``: per backbone/loss/sampler/dim and split, the mean and 95 % CI over seeds of
each trial's best evaluation (chosen by dev EER). ``table1.parquet``: those cells pivoted like the
paper (rows backbone/loss/sampler, columns dev/test x dim). Unfinished and failed trials stay visible.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.errors import SourcetraceError
from sourcetrace.evaluation.baseline import NAME as BASELINE
from sourcetrace.evaluation.comparison import baseline_cells, compare_best, format_comparison, read_baseline
from sourcetrace.training.trainable import TrialSpec

RECORD = "sourcetrace_sweep.json"
KEYS = ["backbone", "loss", "sampler", "dim"]
# Keys that are cell coordinates or replicate seeds: trials differing only in these share a Table-1 cell.
_NOT_VARIANT = {"model.name", "loss.name", "sampler.name", "model.embedding_dim", "train.seed", "train.num_threads"}
UNFINISHED = ("interrupted", "pending")


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


def _trial_states(exp: Path) -> list[dict]:
    """Trials of the newest experiment snapshot: id, folder, config, Tune status, failures."""
    # The newest session by name: a resumed sweep re-syncs every snapshot file, so mtimes tie.
    snaps = sorted(exp.glob("experiment_state-*.json"), key=lambda p: p.name)
    if not snaps:
        raise SourcetraceError(f"{exp} holds no Tune experiment (no experiment_state-*.json)")
    out = []
    for state_json, meta_json in json.loads(snaps[-1].read_text())["trial_data"]:
        state, meta = json.loads(state_json), json.loads(meta_json)
        out.append(
            {
                "trial_id": state["trial_id"],
                "dir": exp / state["relative_logdir"],
                "tune_status": state["status"],
                "num_failures": meta.get("num_failures", 0),
                "error_file": meta.get("error_filename"),
            }
        )
    return out


def _status(tune_status: str, reached: int, epochs: int, has_results: bool, error: str | None) -> tuple[str, str]:
    if tune_status == "TERMINATED":
        if reached >= epochs:
            return "finished", f"all {epochs} epochs"
        return "early_stopped", f"stopped by the scheduler at epoch {reached} of {epochs}"
    if tune_status == "ERROR":
        return "failed", error or "failed"
    if has_results:
        return "interrupted", f"sweep stopped at epoch {reached} of {epochs}; --resume continues it"
    return "pending", "never started; --resume runs it"


def trials_frame(exp: str | Path) -> pd.DataFrame:
    """The long table: one row per trial x evaluation of a Tune experiment folder."""
    exp = Path(exp)
    record = json.loads((exp / RECORD).read_text()) if (exp / RECORD).is_file() else {}
    spec = TrialSpec(record.get("base", {}), record.get("bundles", {}))
    rows = []
    for t in _trial_states(exp):
        params = json.loads((t["dir"] / "params.json").read_text()) if (t["dir"] / "params.json").is_file() else {}
        cfg = spec.config(params)
        results = _read_results(t["dir"] / "result.json")
        reached = int(results[-1]["epoch"]) if results else 0
        error = None
        if t["error_file"] and (t["dir"] / t["error_file"]).is_file():
            lines = [ln for ln in (t["dir"] / t["error_file"]).read_text(errors="replace").splitlines() if ln.strip()]
            error = lines[-1].strip()[:500] if lines else None
        status, reason = _status(t["tune_status"], reached, cfg.train.epochs, bool(results), error)
        base = {
            "sweep": record.get("name", exp.name),
            "trial_id": t["trial_id"],
            "trial_name": t["dir"].name,
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
            "num_failures": t["num_failures"],
            "wall_s": float(results[-1]["time_total_s"]) if results else np.nan,
        }
        base |= {f"param:{k}": v for k, v in params.items()}
        flat = {k: v for k, v in cfg.to_flat().items() if k not in _NOT_VARIANT}
        base["config"] = json.dumps(flat, sort_keys=True)
        evals = [r for r in results if "dev_eer" in r]
        for r in evals or [{}]:
            row = dict(base, epoch=int(r["epoch"]) if r else np.nan)
            row |= {
                k: float(v)
                for k, v in r.items()
                if k.split(".")[0] in ("dev_eer", "test_eer", "dev_min_dcf", "test_min_dcf")
            }
            ckpt = t["dir"] / r["checkpoint_dir_name"] if r.get("checkpoint_dir_name") else None
            row["checkpoint"] = str(ckpt) if ckpt is not None and ckpt.is_dir() else None
            rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        raise SourcetraceError(f"{exp} has no trials yet")
    if "dev_eer" not in frame:
        frame["dev_eer"] = np.nan
    best = frame.dropna(subset=["dev_eer"]).groupby("trial_id")["dev_eer"].idxmin()
    frame["best"] = frame.index.isin(best.values) | frame["dev_eer"].isna()
    return frame


def _ci95(values: np.ndarray) -> float:
    if len(values) < 2:
        return np.nan
    from scipy import stats

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
                    eer_ci95=_ci95(vals),
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


def write_reports(exp: str | Path, out: str | Path | None = None, tracking_uri: str | None = None) -> Reports:
    """Build the three tables (with MLflow run ids when ``tracking_uri`` is given) and write them as parquet."""
    exp = Path(exp)
    trials = trials_frame(exp)
    if tracking_uri:
        from sourcetrace.tracking import runs_frame

        record = json.loads((exp / RECORD).read_text()) if (exp / RECORD).is_file() else {}
        runs = runs_frame(tracking_uri, record.get("experiment", exp.name)).drop_duplicates("trial_id")
        trials = trials.merge(runs, on="trial_id", how="left")
    cells = table1_cells(trials)
    baseline = read_baseline(exp)
    if baseline is not None:
        cells = pd.concat([cells, baseline_cells(baseline, sorted(cells["dim"].unique()))], ignore_index=True)
    wide = table1_wide(cells)
    comparison = compare_best(trials, baseline) if baseline is not None else None
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
        text = f"{key[0]:<15}{key[1]:<12}{key[2]:<10}" if key[0] != BASELINE else f"{key[0]:<37}"
        for split in ("dev", "test"):
            for dim in dims:
                c = group[(group["split"] == split) & (group["dim"] == dim)]
                text += f"{_cell(c.iloc[0]) if len(c) else '':>13}"
        lines.append(text + (f"  {key[3]}" if key[3] else ""))
    lines.append(
        "marks: * early-stopped by ASHA  ! failed  ? unfinished (cell mean over the trials that have an evaluation)"
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


def cli_report(args) -> int:
    """``sourcetrace report SWEEP_RUN [--out DIR] [--tracking-uri URI]``."""
    from sourcetrace.storage import local_path

    out = local_path(args.out, "--out") if args.out else None
    reports = write_reports(local_path(args.sweep_run, "SWEEP_RUN"), out, args.tracking_uri)
    print(format_table1(reports))
    print(f"reports: {reports.out_dir}")
    return 0
