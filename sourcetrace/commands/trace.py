"""``sourcetrace trace`` and ``enroll`` on the command line (rendering and inputs: ``attribution.py``)."""

from __future__ import annotations

import sys
from datetime import UTC, datetime

from sourcetrace.attribution import PROGRESS_FROM, escape, expand_inputs, render
from sourcetrace.errors import SourcetraceError


def _tracer(args):
    from sourcetrace.artefacts import load

    return load(args.model, args.device, root=args.root, protocol=args.protocol)


def run_trace(args) -> int:
    """``sourcetrace trace --model M [--format table|json|csv] [--crop ...] [--device D] INPUT...``."""
    if args.top_k < 1:
        raise SourcetraceError(f"--top-k must be >= 1, got {args.top_k}")
    clips = expand_inputs(args.clips)
    tracer = _tracer(args)
    crop = args.crop or "center"
    when = datetime.now(UTC)
    bar = None
    if len(clips) >= PROGRESS_FROM and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), unit="clip", file=sys.stderr, desc="trace")
    try:
        results = tracer.trace(clips, args.top_k, crop, progress=bar, strict=args.strict)
    finally:
        if bar is not None:
            bar.close()
    print(render(results, tracer, args.format, crop, args.crop is not None, when), flush=True)
    return 1 if any(r.error for r in results) else 0


def run_enroll(args) -> int:
    """``sourcetrace enroll --model M --system NAME CLIP...`` | ``--list`` | ``--remove NAME``."""
    tracer = _tracer(args)
    if args.list:
        print("# system\tsource\tclips")
        for name in tracer.known_systems:
            print(f"{escape(name)}\ttraining\t")
        for name, n in tracer.enrolled_systems():
            print(f"{escape(name)}\tenrolled\t{n}")
        return 0
    if args.remove is not None:
        n = tracer.remove(args.remove)
        print(f"removed {escape(args.remove)} ({n} clips); {len(tracer.systems)} systems in {tracer.path}")
        return 0
    if not args.system or not args.clips:
        raise SourcetraceError("enroll needs --system NAME and clips (or --list, or --remove NAME)")
    res = tracer.enroll(args.system, expand_inputs(args.clips), args.crop or "center")
    for msg in res.failed.values():
        print(f"skipped: {escape(msg)}")
    if res.overlap is not None:
        ov = res.overlap
        print(f"{escape(res.system)}: {escape(ov.describe())}")
        if ov.overlaps:
            print(
                f"warning: {escape(res.system)} overlaps {escape(ov.nearest)}: the bundle already attributed "
                f"{ov.known_as} of its {ov.n_clips} clips to {escape(ov.nearest)} as known; clips of either "
                "may now be traced to the other",
                file=sys.stderr,
            )
    if res.duplicates:
        print(f"already enrolled for {escape(res.system)} (nothing to do): {len(res.duplicates)} clips")
    print(
        f"{escape(res.system)}: {res.added} clips added, {res.n_clips} in total; "
        f"{len(tracer.systems)} systems in {tracer.path}"
    )
    return 1 if res.failed else 0
