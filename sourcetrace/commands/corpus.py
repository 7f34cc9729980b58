"""``sourcetrace corpus build`` and ``corpus check``."""

from __future__ import annotations

import sys
import time

from sourcetrace.data.bank import thread_map
from sourcetrace.data.check import PROGRESS_FROM, check_corpus, validate_file
from sourcetrace.data.corpus.build import build_corpus, format_summary
from sourcetrace.errors import DataCheckError


def run_build(args) -> int:
    """``sourcetrace corpus build``: build, then print the summary (exit 130 when interrupted)."""
    try:
        summary = build_corpus(
            args.out,
            preset=args.preset,
            seed=args.seed,
            workers=args.workers,
            fmt=args.format,
            progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print("corpus build interrupted: finished clips are kept; run the same command to resume", file=sys.stderr)
        return 130
    print(format_summary(summary))
    return 0


def run_check(args) -> int:
    """``sourcetrace corpus check --root DIR [--protocol DIR] [--min-seconds S]``."""
    report = check_corpus(args.root, args.protocol, args.min_seconds)
    print(report.format())
    return 0 if report.ok else 1


def preflight(configs: list, workers: int = 0) -> float:
    """Every audio file the trials of a sweep (or one ``train``) read, validated once; all problems at once.

    Runs in the driver before Ray starts, so a bad file is one ``DataCheckError`` listing every problem
    instead of every trial failing on it. Files are checked as ``corpus check`` does, at each config's
    sample rate; clips shorter than the crop count only for training splits with
    ``data.short_clips=error``. A dev/test split without both target and non-target pairs is named too.
    Returns the wall time in seconds.
    """
    from sourcetrace.evaluation.conditions import has_both_pair_kinds
    from sourcetrace.training.data import read_tables

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
