"""``sourcetrace findings SWEEP_RUN --out DIR``: the findings report of a finished sweep, written to a folder.

The sweep is read as ``sourcetrace report`` reads it (``report.write_reports``: Tune's ExperimentAnalysis,
no Ray started), and its parquet reports (trials, Table-1 cells with the featureless baseline's row,
the best trial vs the baseline) are written into DIR beside the findings:

* ``findings.parquet``: one row per comparison and condition (``checks.findings_table``), with the verdict
  of the row and of its finding;
* ``findings.md``: how it was produced (command, commit, the sweep's launch), the verdict per finding (first,
  when every cell is worse than the featureless baseline, a line that says so), the comparisons' table,
  and Table 1 at this budget;
* ``findings.png``: A-B with its 95 % interval per comparison and condition, against 0 and the margin.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.findings.checks import CONDITIONS, findings_table, verdict_lines
from sourcetrace.findings.stats import MARGIN
from sourcetrace.sweep import RECORD
from sourcetrace.sweep.comparison import read_baseline
from sourcetrace.sweep.report import format_table1, write_reports


def _commit() -> str:
    """The commit of the sourcetrace checkout this runs from (``+ local changes`` when dirty), else unknown."""
    root = Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" + local changes" if dirty.stdout.strip() else "")


def _shown(path: str | None) -> str | None:
    """A path as the user would type it: relative to the working directory when under it."""
    if not path:
        return path
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def sweep_command(exp: Path) -> str:
    """The ``sourcetrace sweep`` command the sweep's record says launched it."""
    record = json.loads((exp / RECORD).read_text()) if (exp / RECORD).is_file() else {}
    launch = record.get("launch") or {}
    if not record.get("sweep_file"):
        return "(no sweep record)"
    parts = ["sourcetrace sweep", _shown(record["sweep_file"]), "--root", _shown(launch.get("root")) or "?"]
    parts += ["--protocol", _shown(launch["protocol"])] if launch.get("protocol") else []
    parts += ["--smoke"] if launch.get("smoke") else []
    parts += [f"--set {s}" for s in launch.get("set", [])]
    return " ".join(parts) + f"   (sweep file sha256 {launch.get('sweep_sha256', '?')[:12]})"


def _ci(mean: float, half: float) -> str:
    if not np.isfinite(mean):
        return "—"
    return f"{mean:.2f}" + (f" ± {half:.2f}" if np.isfinite(half) else "")


def markdown_table(table: pd.DataFrame) -> str:
    columns = ["finding", "comparison (A vs B)", "condition", "A: EER % (seeds)", "B: EER % (seeds)", "A−B [95 % CI]"]
    columns += ["test, p", "baseline", "verdict"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in table.itertuples():
        if not isinstance(getattr(r, "claim", None), str):
            lines.append(
                f"| ({r.finding}) | {r.comparison} | {r.condition} | | | | | {r.baseline_eer:.2f} | {r.verdict} |"
            )
            continue
        diff = "—" if not np.isfinite(r.diff) else f"{r.diff:+.2f} [{r.diff_lo:+.2f}, {r.diff_hi:+.2f}]"
        block = getattr(r, "block", "unit")
        n = getattr(r, "n_independent", r.n_pairs)
        test = r.test if r.test == "none" else f"{r.test} ({n:.0f} {block}s, {r.n_pairs:.0f} units), p={r.p:.3g}"
        claim = "A beats B" if r.claim == "beats" else "A no worse than B"
        lines.append(
            f"| ({r.finding}) | {r.comparison} ({claim}) | {r.condition} "
            f"| {_ci(r.a_mean, r.a_ci95)} ({r.a_n:.0f}) | {_ci(r.b_mean, r.b_ci95)} ({r.b_n:.0f}) | {diff} | {test} "
            f"| {r.baseline_eer:.2f} | {r.verdict} |"
        )
    return "\n".join(lines)


def summary(table: pd.DataFrame, reports, exp: Path, command: str) -> str:
    left_out = int(table["left_out"].dropna().max()) if "left_out" in table and table["left_out"].notna().any() else 0
    return "\n".join(
        [
            f"# The paper's findings, checked: sweep {reports.name}",
            "",
            f"- report: `{command}` at commit `{_commit()}`",
            f"- sweep: `{sweep_command(exp)}`",
            "- EER % on the eval split (overall and the unseen-system conditions) at each finished trial's best "
            f"evaluation; mean ± 95 % t interval over seeds (the units of one seed, which share initial weights and "
            f"data order, averaged first); {left_out} unfinished/failed trial(s) left out",
            "",
            "## Verdicts",
            "",
            *[f"- {line}" for line in verdict_lines(table)],
            "",
            "## Comparisons",
            "",
            markdown_table(table),
            "",
            "## Table 1 at this budget",
            "",
            "```",
            format_table1(reports).replace(str(exp.resolve()), str(exp)),  # the folder as given, not this machine's
            "```",
            "",
        ]
    )


def figure(table: pd.DataFrame, path: Path) -> None:
    """A-B with its 95 % CI per comparison (rows) and condition (panels); 0 and the margin marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tested = table[table["claim"].notna()] if "claim" in table else table[:0]
    names = list(dict.fromkeys(f"({r.finding}) {r.comparison}" for r in tested.itertuples())) or ["(no comparison)"]
    colour = {"holds": "tab:green", "does not hold": "tab:red"}
    fig, axes = plt.subplots(1, len(CONDITIONS), figsize=(5 * len(CONDITIONS), 0.5 * len(names) + 1.5), sharey=True)
    for ax, condition in zip(axes, CONDITIONS):
        part = tested[tested["condition"] == condition]
        for r in part.itertuples():
            y = names.index(f"({r.finding}) {r.comparison}")
            err = [[r.diff - r.diff_lo], [r.diff_hi - r.diff]] if np.isfinite(r.diff_lo) else None
            ax.errorbar(r.diff, y, xerr=err, fmt="o", capsize=3, color=colour.get(r.verdict, "tab:grey"))
        margin = float(part["margin"].iloc[0]) if len(part) else MARGIN
        ax.axvline(0, color="k", lw=1)
        for m in (-margin, margin):
            ax.axvline(m, color="k", lw=0.8, ls=":")
        ax.set(title=f"eval: {condition}", xlabel="A − B, EER pp (95 % CI)")
    fig.suptitle("green: holds, red: does not hold, grey: cannot tell; dotted: ± the margin", fontsize=9)
    axes[0].set_yticks(range(len(names)), names)
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_findings(exp: str | Path, out: str | Path, margin: float = MARGIN, command: str = "") -> pd.DataFrame:
    """The sweep's parquet reports and its findings (parquet, markdown, figure) into ``out``; the findings table."""
    exp, out = Path(exp), Path(out)
    reports = write_reports(exp, out, mlflow=False)
    table = findings_table(reports.trials, read_baseline(exp), margin)
    table.to_parquet(out / "findings.parquet", index=False)
    command = command or "sourcetrace findings " + " ".join(sys.argv[2:])
    (out / "findings.md").write_text(summary(table, reports, exp, command))
    figure(table, out / "findings.png")
    return table
