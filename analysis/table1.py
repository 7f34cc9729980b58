# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Table 1: source-tracing EER by backbone, loss, sampler and embedding size
#
# Reads the parquet reports of a sweep (written at the end of `sourcetrace sweep` into
# `STORAGE/NAME/report/`, or by `sourcetrace report RUN --out DIR`): `trials.parquet` (one row per trial
# and evaluation), `table1_cells.parquet` (mean and 95 % CI over seeds per cell, the featureless
# baseline's row included, and the row of the sweep's fusion when it made one) and `comparison.parquet` (the
# model the sweep hands over beside the baseline).
#
# It opens from any working directory. `REPORT_DIR` (environment variable `SOURCETRACE_REPORT`) names
# the report folder; a relative path that does not exist from the working directory is taken from the
# repository root, found by walking up from the working directory (or from the installed package).
# Figures are shown here and written only to `FIGURES_DIR` (`SOURCETRACE_FIGURES`; empty: not written).

# %% tags=["parameters"]
import os

REPORT_DIR = os.environ.get("SOURCETRACE_REPORT", "ray_results/demo/report")
FIGURES_DIR = os.environ.get("SOURCETRACE_FIGURES", "analysis/figures")

# %%
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in matplotlib.get_backend():
    matplotlib.use("Agg")  # run as a script without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import display

import sourcetrace
from sourcetrace.evaluation.baseline import NAME as BASELINE
from sourcetrace.sweep.comparison import baseline_cells
from sourcetrace.sweep.report import RECORD, ci95, table1_cells


def repository_root() -> Path | None:
    """The sourcetrace checkout above the working directory, else the one the package was imported from."""
    for start in (Path.cwd().resolve(), Path(sourcetrace.__file__).resolve().parent):
        for folder in (start, *start.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "sourcetrace" / "__init__.py").is_file():
                return folder
    return None


ROOT = repository_root()


def resolve(path: str) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() or ROOT is None else ROOT / p


report = resolve(REPORT_DIR)
if not (report / "trials.parquet").is_file():
    raise FileNotFoundError(
        f"no sweep report in {report} (no trials.parquet): run `make demo`, or set SOURCETRACE_REPORT "
        "(or REPORT_DIR above) to a report folder, STORAGE/NAME/report"
    )
figures = resolve(FIGURES_DIR) if FIGURES_DIR else None


def save(fig, name: str) -> None:
    """Write a figure only when FIGURES_DIR is set (never into the report folder unless asked to)."""
    if figures is not None:
        figures.mkdir(parents=True, exist_ok=True)
        fig.savefig(figures / name, dpi=120)


trials = pd.read_parquet(report / "trials.parquet")
cells = pd.read_parquet(report / "table1_cells.parquet")
comparison = pd.read_parquet(report / "comparison.parquet") if (report / "comparison.parquet").is_file() else None
per_trial = trials.drop_duplicates("trial_id")


def run_labels(per_trial: pd.DataFrame) -> dict:
    """trial id -> a label from the values of the keys the sweep varied (its SPACE), in the form of the MLflow
    run names: ``front=log-mel+bands/d50/s0`` in the demo, ``ge2e/balanced/d10/s2`` in Table 1."""
    sizes = ("param:model.embedding_dim", "param:train.seed")
    swept = [
        c for c in per_trial if c.startswith("param:") and c not in sizes and per_trial[c].astype(str).nunique() > 1
    ]
    out = {}
    for _, r in per_trial.iterrows():
        keys = [c.removeprefix("param:") for c in swept]
        parts = [
            str(r[f"param:{k}"])
            if k in ("recipe", "bundle") or k.endswith(".name")
            else f"{k.split('.')[-1]}={r[f'param:{k}']}"
            for k in keys
        ]
        out[r["trial_id"]] = "/".join(parts + [f"d{r['dim']}", f"s{r['seed']}"])
    return out


labels = run_labels(per_trial)
trials["label"] = trials["trial_id"].map(labels)
per_trial = trials.drop_duplicates("trial_id")
print(f"report: {report}")
print(f"{len(per_trial)} trials:", per_trial["status"].value_counts().to_dict())

# %% [markdown]
# ## Table 1 (EER %, dev and test)
# Each trial contributes its best evaluation (lowest dev EER); a cell is the mean over seeds, ± the 95 %
# confidence interval when it has two or more. The best of each column is in **bold**. The sweep's fusion
# (when it made one) and the featureless baseline (per clip MFCC statistics, no training; last row, in
# italics) have no embedding size of their own: their EER sits in each split's "—" column.

# %%
ROWS = ["backbone", "loss", "sampler", "variant"]


def cell_text(c: pd.Series) -> str:
    if c["n"] == 0:
        return "failed" if c["n_failed"] else "—"
    return f"{c['eer_mean']:.2f}" + (f" ± {c['eer_ci95']:.2f}" if c["n"] > 1 and np.isfinite(c["eer_ci95"]) else "")


def without_size(backbone) -> bool:
    """Rows that have no embedding size of their own: the featureless baseline and the sweep's fusion."""
    return backbone == BASELINE or str(backbone).startswith("fusion")


def styled_table(cells: pd.DataFrame, caption: str):
    """Rows backbone/loss/sampler(/variant), columns split x embedding size, best per column bold; the baseline
    and the fusion have no size: each is one row with its value in the split's "—" column (baseline last)."""
    cells = cells.assign(text=cells.apply(cell_text, axis=1))
    fixed = cells["backbone"].map(without_size)
    cells["size"] = cells["dim"].astype(str).where(~fixed, "—")
    cells = cells.drop_duplicates(ROWS + ["split", "size"])
    wide = cells.pivot(index=ROWS, columns=["split", "size"], values=["eer_mean", "text"])
    order = sorted(wide.index, key=lambda key: (key[0] == BASELINE, without_size(key[0]), key))
    means, texts = wide["eer_mean"].loc[order].astype(float), wide["text"].loc[order].fillna("")
    sizes = sorted(cells.loc[~fixed, "size"].unique(), key=int) + (["—"] if fixed.any() else [])
    columns = [(s, d) for s in ("dev", "test") for d in sizes if (s, d) in texts.columns]
    means, texts = means[columns], texts[columns]
    best = (means.eq(means.min(axis=0)) & means.notna()).to_numpy()
    baseline = np.array([key[0] == BASELINE for key in order])[:, None]
    texts.columns = pd.MultiIndex.from_tuples(columns, names=["split", "embedding size"])
    css = pd.DataFrame(
        np.char.add(np.where(best, "font-weight: bold;", ""), np.where(baseline, "font-style: italic;", "")),
        index=texts.index,
        columns=texts.columns,
    )
    return texts.style.apply(lambda _: css, axis=None).set_caption(caption)


styled_table(cells, "Table 1: EER % at each trial's best dev evaluation (mean ± 95 % CI over seeds)")

# %% [markdown]
# Trials that did not run their full budget (stopped early by the sweep's scheduler, failed, interrupted)
# are listed here, never dropped: their cells use the best evaluation they reached. The scheduler is the one
# the sweep file's `TUNE` named (printed below when the sweep's folder is beside the report).

# %%
sweep_record = report.parent / RECORD
if sweep_record.is_file():
    import json

    tune_settings = json.loads(sweep_record.read_text()).get("tune", {})
    print(f"scheduler: {tune_settings.get('scheduler', 'unknown')}")
per_trial.loc[per_trial["status"] != "finished", ["label", "status", "stop_reason"]]

# %% [markdown]
# ## Per condition
# The same table for each seen/unseen language x system condition (MLAAD's `fine/` protocol), at the
# same best evaluation of each trial; the baseline's row, and the fusion's when the sweep handed one over,
# come from `comparison.parquet`.

# %%
conditions = sorted({c.partition(".")[2] for c in trials.columns if c.startswith(("dev_eer.", "test_eer."))})
dims = sorted(cells.loc[cells["backbone"] != BASELINE, "dim"].unique())
per_condition = {}
for condition in conditions:
    t = trials.copy()
    for split in ("dev", "test"):
        t[f"{split}_eer"] = trials.get(f"{split}_eer.{condition}", np.nan)
    part = table1_cells(t)
    if comparison is not None:
        base = comparison[comparison["condition"] == condition]
        metrics = {f"{r.split}_eer": r.baseline_eer for r in base.itertuples()}
        part = pd.concat([part, baseline_cells({"metrics": metrics}, dims)], ignore_index=True)
        if len(base) and str(base["trial_name"].iloc[0]).startswith("fusion"):  # the model handed over
            fused = {f"{r.split}_eer": r.model_eer for r in base.itertuples()}
            part = pd.concat([part, baseline_cells({"metrics": fused}, dims, "fusion")], ignore_index=True)
    per_condition[condition] = part
    display(styled_table(part, f"{condition}: EER % (mean ± 95 % CI over seeds)"))

# %% [markdown]
# ## The model handed over beside the featureless baseline
# What the sweep hands over (its fusion when it made one, else the checkpoint with the lowest dev EER)
# against the baseline, per split and condition.

# %%
comparison.drop(columns=["checkpoint"]).round(2) if comparison is not None else "no baseline in this report"

# %% [markdown]
# ## Learning curves
# Dev and test EER at every evaluation of every trial (the per-epoch metrics the trials reported to Tune),
# one colour per run (its label is built from the keys the sweep varied, as its MLflow run name is); the
# circle is the evaluation the trial contributes to Table 1.

# %%
evals = trials.dropna(subset=["epoch"]).sort_values(["trial_id", "epoch"])
run_order = sorted(labels.values())
colour = {label: plt.cm.tab20(i % 20) if len(run_order) > 10 else f"C{i}" for i, label in enumerate(run_order)}
fig, axes = plt.subplots(1, 2, figsize=(12, 4), sharey=True)
for ax, split in zip(axes, ("dev", "test")):
    for _, g in evals.groupby("trial_id"):
        g = g.dropna(subset=[f"{split}_eer"]) if f"{split}_eer" in g else g.iloc[:0]
        if g.empty:  # test EER is measured at fewer epochs than dev: drawn through the epochs it has
            continue
        label = g["label"].iloc[0]
        ax.plot(g["epoch"], g[f"{split}_eer"], ".-", color=colour[label], alpha=0.8, lw=1, label=label)
        ax.plot(g.loc[g["best"], "epoch"], g.loc[g["best"], f"{split}_eer"], "o", color=colour[label])
    ax.set(xlabel="epoch", title=f"{split} EER %")
axes[0].set_ylabel("EER %")
axes[1].legend(fontsize=7, loc="best")
fig.tight_layout()
save(fig, "learning_curves.png")

# %% [markdown]
# Training loss at every epoch, from the trials' own results: Tune's `ExperimentAnalysis` reads the sweep
# folder that holds this report (no Ray is started). A report written elsewhere (`--out`) has no such folder.

# %%
experiment = report.parent
if (experiment / RECORD).is_file():
    from ray.tune import ExperimentAnalysis

    epochs = ExperimentAnalysis(str(experiment)).trial_dataframes  # trial id -> one row per reported epoch
    fig, ax = plt.subplots(figsize=(7, 4))
    for trial in per_trial.itertuples():
        frame = epochs.get(trial.trial_id)
        if frame is not None and "train_loss" in frame:
            ax.plot(frame["epoch"], frame["train_loss"], ".-", lw=1, color=colour[trial.label], label=trial.label)
    ax.set(xlabel="epoch", ylabel="training loss", title="training loss (each loss has its own scale)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    save(fig, "training_loss.png")
else:
    print(f"{experiment} is not the sweep's folder (no {RECORD}): no training-loss curves")

# %% [markdown]
# ## EER vs embedding size, per run label (error bars: 95 % CI over seeds)
# One line per run label without its size and seed (what the sweep varied besides them); the fusion is one
# model, so one starred point at its concatenated size.

# %%
best_rows = trials[trials["best"]].dropna(subset=["dev_eer"]).copy()
best_rows["row"] = best_rows["label"].str.rsplit("/", n=2).str[0]  # the run label without its size and seed
rows = []  # per run label (without size and seed), size and split: mean and 95 % CI over seeds
for (row, dim), g in best_rows.groupby(["row", "dim"]):
    for split in ("dev", "test"):
        values = g[f"{split}_eer"].dropna().to_numpy() if f"{split}_eer" in g else np.array([])
        if len(values):
            rows.append(
                {"row": row or "all", "dim": dim, "split": split, "eer_mean": values.mean(), "eer_ci95": ci95(values)}
            )
models = pd.DataFrame(rows, columns=["row", "dim", "split", "eer_mean", "eer_ci95"])
fused = cells[cells["backbone"].str.startswith("fusion")]
fusion_file = report.parent / "fusion" / "fusion.json"
fusion_size = None  # the fusion's embedding: its members' embeddings side by side
if len(fused) and fusion_file.is_file():
    import json

    member_trials = json.loads(fusion_file.read_text()).get("trials", [])
    member_dims = per_trial.set_index("trial_name")["dim"].reindex(member_trials)
    fusion_size = int(member_dims.sum()) if member_dims.notna().all() and len(member_dims) else None
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, split in zip(axes, ("dev", "test")):
    for label, g in models[models["split"] == split].groupby("row"):
        g = g.sort_values("dim")
        yerr = g["eer_ci95"].fillna(0)
        ax.errorbar(g["dim"], g["eer_mean"], yerr=yerr, marker="o", capsize=3, label=label, color=colour.get(label))
    f = fused[fused["split"] == split]
    if len(f):  # one model, one point: at its concatenated size when the fusion's record says it
        x = fusion_size or int(best_rows["dim"].max()) * 2
        ax.plot([x], [f["eer_mean"].iloc[0]], "*", ms=14, color="k", label=f"{f['backbone'].iloc[0]} ({x}-d)")
    base = cells[(cells["backbone"] == BASELINE) & (cells["split"] == split)]
    if len(base):
        ax.axhline(base["eer_mean"].iloc[0], color="k", ls="--", lw=1, label="featureless baseline")
    ax.set_xscale("log")
    ax.set(xlabel="embedding size", title=f"{split} EER %")
axes[0].set_ylabel("EER %")
axes[1].legend(fontsize=7, loc="best")
fig.tight_layout()
save(fig, "eer_vs_dim.png")

# %% [markdown]
# ## Generalisation: dev vs test EER of each trial's best evaluation
# Test holds systems and languages dev never showed; points above the diagonal generalise worse.

# %%
best = trials[trials["best"]].dropna(subset=["dev_eer", "test_eer"])
fig, ax = plt.subplots(figsize=(5, 5))
for label, g in best.groupby("label"):
    ax.scatter(g["dev_eer"], g["test_eer"], label=label, color=colour.get(label))
lim = [0, max(1.0, float(np.nanmax(best[["dev_eer", "test_eer"]].to_numpy())) * 1.1)] if len(best) else [0, 1]
ax.plot(lim, lim, "k--", lw=1)
ax.set(xlim=lim, ylim=lim, xlabel="dev EER %", ylabel="test EER %")
ax.legend(fontsize=7)
fig.tight_layout()
save(fig, "dev_vs_test.png")

# %% [markdown]
# ## Against the paper's Table 1 (Koutsianos et al., Interspeech 2025)
# The cells the paper's text and design notes give (EER %), beside this sweep's cell of the same recipe.
# When this sweep ran none of them (the demo sweeps front ends with Angular Prototypical), the committed
# run of the paper's recipes (`analysis/results/findings_cpu`, the narrow Thin-ResNet at 150 optimiser steps
# on the `full` corpus) stands in, and the table says which. Either is far from the paper's 300 GPU epochs.

# %%
PAPER = pd.DataFrame(
    [("thin_resnet34", "ge2e", "balanced", "dev", d, v) for d, v in zip((10, 50, 200, 512), (4.87, 4.57, 5.07, 4.70))]
    + [
        ("thin_resnet34", "ge2e", "balanced", "test", d, v)
        for d, v in zip((10, 50, 200, 512), (5.42, 5.03, 4.94, 5.17))
    ]
    + [("thin_resnet34", "aamsoftmax", "random", "test", 50, 4.63)],
    columns=["backbone", "loss", "sampler", "split", "dim", "paper_eer"],
)
PAPER_AASIST_AAM_RANDOM_BEST_DEV = 4.49  # best dev EER over the embedding sizes
CELL = ["backbone", "loss", "sampler", "split", "dim"]
FINDINGS_CPU = "analysis/results/findings_cpu"


def paper_cells(cells: pd.DataFrame, source: str) -> pd.DataFrame:
    ours = cells[cells["variant"] == ""][CELL + ["eer_mean", "eer_ci95", "n"]].assign(ours_from=source)
    return PAPER.merge(ours, on=CELL, how="left")


paper = paper_cells(cells, "this sweep")
if paper["eer_mean"].isna().all() and (resolve(FINDINGS_CPU) / "table1_cells.parquet").is_file():
    paper = paper_cells(pd.read_parquet(resolve(FINDINGS_CPU) / "table1_cells.parquet"), FINDINGS_CPU)
    print(f"this sweep has none of the paper's cells: ours come from {FINDINGS_CPU}")
paper["difference"] = paper["eer_mean"] - paper["paper_eer"]
aasist = cells[
    (cells["backbone"] == "w2v2_aasist")
    & (cells["loss"] == "aamsoftmax")
    & (cells["sampler"] == "random")
    & (cells["split"] == "dev")
]
print(
    f"AASIST AAM-Softmax random, best dev EER: paper {PAPER_AASIST_AAM_RANDOM_BEST_DEV}, "
    f"ours {aasist['eer_mean'].min() if len(aasist) else 'not in this sweep'}"
)
paper.round(2)

# %% [markdown]
# ## The paper's findings, checked (`sourcetrace findings`)
# `sourcetrace findings SWEEP_RUN --out DIR` writes these reports and, beside them, `findings.parquet`:
# per finding (a: metric vs classification losses, b: 10-50 vs 512 dims, c: Softmax/random below 512,
# d: ResNet vs wav2vec2-AASIST) and condition of the eval split, both sides' mean ± 95 % CI over seeds,
# A − B with its interval and test (paired on shared seeds), the featureless baseline, and a verdict.
# The committed CPU run: `SOURCETRACE_REPORT=analysis/results/findings_cpu`.

# %%
if (report / "findings.parquet").is_file():
    from sourcetrace.findings.checks import verdict_lines

    findings = pd.read_parquet(report / "findings.parquet")
    print("\n".join(verdict_lines(findings)))
    shown = ["finding", "comparison", "condition", "a_mean", "a_ci95", "b_mean", "b_ci95", "diff", "diff_lo"]
    shown += ["diff_hi", "test", "n_pairs", "p", "baseline_eer", "verdict"]
    display(findings[[c for c in shown if c in findings]].round(3))
else:
    print(f"no findings.parquet in {report}: run `sourcetrace findings SWEEP_RUN --out DIR` on a finished sweep")
