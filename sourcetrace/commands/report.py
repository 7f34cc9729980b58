"""``sourcetrace report`` (Table 1 of a sweep) and ``findings`` (the paper's findings checked on a sweep)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sourcetrace.findings.checks import FINDINGS, verdict_lines
from sourcetrace.findings.output import write_findings
from sourcetrace.findings.stats import MARGIN
from sourcetrace.sweep.report import format_table1, write_reports


def run_report(args) -> int:
    """``sourcetrace report SWEEP_RUN [--out DIR] [--tracking-uri URI]``."""
    from sourcetrace.storage import local_path, writable_folder

    out = local_path(args.out, "--out") if args.out else None
    exp = local_path(args.sweep_run, "SWEEP_RUN")
    if exp.is_dir():  # the report folder is checked before the trials and the MLflow store are read
        writable_folder(out or exp / "report", "the report folder", "choose another --out")
    reports = write_reports(exp, out, args.tracking_uri)
    print(format_table1(reports))
    print(f"reports: {reports.out_dir}")
    return 0


def run_findings(args) -> int:
    """``sourcetrace findings SWEEP_RUN --out DIR [--margin PP]``."""
    from sourcetrace.errors import ConfigError
    from sourcetrace.storage import local_path

    if not (np.isfinite(args.margin) and args.margin > 0):
        raise ConfigError(f"--margin {args.margin} must be a positive number of EER percentage points")
    exp = local_path(args.sweep_run, "SWEEP_RUN")
    command = f"sourcetrace findings {args.sweep_run} --out {args.out}" + (
        f" --margin {args.margin:g}" if args.margin != MARGIN else ""
    )
    table = write_findings(exp, local_path(args.out, "--out"), args.margin, command)
    for line in verdict_lines(table):
        print(line)
    print(f"findings ({', '.join(FINDINGS)}): {Path(args.out) / 'findings.md'}")
    return 0
