"""The data a training run or a sweep will read, checked once before any training starts."""

from __future__ import annotations

import sys
import time

from sourcetrace.data.bank import thread_map
from sourcetrace.data.check import PROGRESS_FROM, validate_file
from sourcetrace.errors import DataCheckError
from sourcetrace.evaluation.conditions import has_both_pair_kinds
from sourcetrace.training.data import read_tables


def preflight(configs: list, workers: int = 0) -> float:
    """Every audio file the trials of a sweep (or one ``train``) read, validated once; all problems at once.

    Runs in the driver before Ray starts, so a bad file is one ``DataCheckError`` listing every problem
    instead of every trial failing on it. Files are checked as ``corpus check`` does, at each config's
    sample rate; clips shorter than the crop count only for training splits with
    ``data.short_clips=error``. A dev/test split without both target and non-target pairs is named too.
    Returns the wall time in seconds.
    """
    start = time.perf_counter()
    jobs: dict[tuple[str, int, float], None] = {}
    problems: list[str] = []
    for cfg in configs:
        d = cfg.data
        _, tables = read_tables(cfg)
        for split, table in tables.items():
            train_split = split == d.train_split
            short = d.crop_seconds if train_split and d.short_clips == "error" else 0.0
            for f in table["file"]:
                jobs[(f, d.sample_rate, short)] = None
            if not train_split and not has_both_pair_kinds(table["system"].to_numpy()):
                problems.append(
                    f"split {split!r} of {d.root}: no EER can be scored (it needs two systems and a system "
                    "with two clips)"
                )
    keys = list(jobs)
    progress = len(keys) >= PROGRESS_FROM and sys.stderr.isatty()
    results = thread_map(lambda k: validate_file(*k)[1], keys, workers, progress, "check")
    problems = list(dict.fromkeys(problems + [p for found in results for p in found]))
    if problems:
        raise DataCheckError(
            f"{len(problems)} problem(s) in the data, found before any training started "
            f"({len({k[0] for k in keys})} files checked):\n  " + "\n  ".join(problems)
        )
    return time.perf_counter() - start
