"""``sourcetrace corpus build`` and ``corpus check``."""

from __future__ import annotations

import sys

from sourcetrace.data.check import check_corpus
from sourcetrace.data.corpus.build import build_corpus, format_summary


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
