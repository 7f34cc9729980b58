# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Table 1: source-tracing EER by backbone, loss, sampler and embedding size
#
# Reads the parquet reports of a sweep (`sourcetrace report RUN` or the end of `sourcetrace sweep`):
# `trials.parquet` (trial x evaluation), `table1_cells.parquet` (mean and 95 % CI per cell) and
# `table1.parquet` (the paper's layout). Set the report folder with the `SOURCETRACE_REPORT`
# environment variable or the papermill parameter below.

# %% tags=["parameters"]
import os

REPORT_DIR = os.environ.get("SOURCETRACE_REPORT", "ray_results/demo/report")

# %%
from pathlib import Path

import matplotlib

if not os.environ.get("MPLBACKEND") and "ipykernel" not in matplotlib.get_backend():
    matplotlib.use("Agg")  # run as a script without a display
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

report = Path(REPORT_DIR)
trials = pd.read_parquet(report / "trials.parquet")
cells = pd.read_parquet(report / "table1_cells.parquet")
table1 = pd.read_parquet(report / "table1.parquet")
figures = report / "figures"
figures.mkdir(exist_ok=True)
per_trial = trials.drop_duplicates("trial_id")
print(f"{per_trial['trial_id'].nunique()} trials:", per_trial["status"].value_counts().to_dict())
table1

# %% [markdown]
# Trials that did not run their full budget (stopped by ASHA, failed, interrupted) are listed here,
# never dropped: their cells use the best evaluation they reached.

# %%
per_trial.loc[per_trial["status"] != "finished", ["trial_name", "loss", "sampler", "dim", "status", "stop_reason"]]

# %% [markdown]
# ## Heat map (mean EER %, best dev evaluation of each trial)

# %%
cells["row"] = (
    cells["backbone"]
    + " | "
    + cells["loss"]
    + " | "
    + cells["sampler"]
    + np.where(cells["variant"] != "", " | " + cells["variant"].str.slice(0, 30), "")
)
fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * cells["row"].nunique() + 2), squeeze=False)
for ax, split in zip(axes[0], ("dev", "test")):
    grid = cells[cells["split"] == split].pivot(index="row", columns="dim", values="eer_mean")
    im = ax.imshow(grid.to_numpy(dtype=float), cmap="viridis_r", aspect="auto")
    ax.set_xticks(range(grid.shape[1]), [str(d) for d in grid.columns])
    ax.set_yticks(range(grid.shape[0]), grid.index if split == "dev" else [""] * grid.shape[0])
    ax.set_xlabel("embedding size")
    ax.set_title(f"{split} EER %")
    for (i, j), v in np.ndenumerate(grid.to_numpy(dtype=float)):
        if np.isfinite(v):
            ax.text(j, i, f"{v:.1f}", ha="center", va="center", fontsize=8, bbox={"fc": "w", "alpha": 0.6, "lw": 0})
    fig.colorbar(im, ax=ax, shrink=0.8)
fig.tight_layout()
fig.savefig(figures / "table1_heatmap.png", dpi=120)

# %% [markdown]
# ## EER vs embedding size, per loss and sampler (error bars: 95 % CI over seeds)

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
for ax, split in zip(axes, ("dev", "test")):
    part = cells[cells["split"] == split]
    for label, g in part.groupby("row"):
        g = g.sort_values("dim")
        ax.errorbar(g["dim"], g["eer_mean"], yerr=g["eer_ci95"].fillna(0), marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("embedding size")
    ax.set_title(f"{split} EER %")
axes[0].set_ylabel("EER %")
axes[1].legend(fontsize=7, loc="best")
fig.tight_layout()
fig.savefig(figures / "eer_vs_dim.png", dpi=120)

# %% [markdown]
# ## Generalisation: dev vs test EER of each trial's best evaluation
# Test holds systems and languages dev never showed; points above the diagonal generalise worse.

# %%
best = trials[trials["best"]].dropna(subset=["dev_eer", "test_eer"])
fig, ax = plt.subplots(figsize=(5, 5))
for loss, g in best.groupby("loss"):
    ax.scatter(g["dev_eer"], g["test_eer"], label=loss)
lim = [0, max(1.0, float(np.nanmax(best[["dev_eer", "test_eer"]].to_numpy())) * 1.1)] if len(best) else [0, 1]
ax.plot(lim, lim, "k--", lw=1)
ax.set(xlim=lim, ylim=lim, xlabel="dev EER %", ylabel="test EER %")
ax.legend()
fig.tight_layout()
fig.savefig(figures / "dev_vs_test.png", dpi=120)
conditions = [c for c in best.columns if c.startswith("test_eer.")]
best.groupby("loss")[conditions].mean().round(2) if conditions else None

# %% [markdown]
# ## Against the paper's Table 1 (Koutsianos et al., Interspeech 2025)
# The cells the paper's text and design notes give (EER %). Our numbers come from whatever budget
# this sweep had: a smoke or demo sweep is far from the paper's 300 GPU epochs.

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
ours = cells[cells["variant"] == ""][["backbone", "loss", "sampler", "split", "dim", "eer_mean", "eer_ci95", "n"]]
comparison = PAPER.merge(ours, on=["backbone", "loss", "sampler", "split", "dim"], how="left")
comparison["difference"] = comparison["eer_mean"] - comparison["paper_eer"]
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
comparison
