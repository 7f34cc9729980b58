"""``sourcetrace trace`` and ``enroll``: attribute clips to TTS systems with a bundle, on the command line.

A model argument may be a bundle, a run, checkpoint or sweep folder (see
``sourcetrace.bundle.export.resolve_model``); anything but a bundle is exported to one on first use.
``trace`` takes files, folders (recursively: every audio file), globs and ``@list.txt`` files (one
path per line) and prints a table, JSON or CSV. Exit 0: every clip traced; 1: some clips failed (the
others are still traced); 2: a usage or model problem. Only the light modules are imported here: a
trace never imports Ray, MLflow, pandas' analyses or plotting.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
import sys
from pathlib import Path

from sourcetrace.errors import SourcetraceError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64")
PROGRESS_FROM = 32  # clips: below this no progress bar
_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape(text: str) -> str:
    """A field safe for one line of tab-separated output (tabs, newlines, control characters escaped).

    >>> escape("a\\tb\\nc")
    'a\\\\tb\\\\nc'
    """
    return "".join(_ESCAPES.get(c, c if c.isprintable() else f"\\x{ord(c):02x}") for c in str(text))


def expand_inputs(items: list[str], _reading: tuple[Path, ...] = ()) -> list[str]:
    """Files as given; folders -> their audio files (recursive, sorted); globs; ``@list`` files (which may
    name other lists, but not one that is being read: a cycle is one error naming the list).

    A path that does not exist stays in the list, so that its clip reports "does not exist".
    """
    out: list[str] = []
    for item in items:
        if item.startswith("@"):
            listing = Path(item[1:])
            if not listing.is_file():
                raise SourcetraceError(f"list file {listing} (from {item!r}) does not exist")
            if listing.resolve() in _reading:
                raise SourcetraceError(f"list file {listing} includes itself (through {item!r}): a list cannot")
            lines = listing.read_text(errors="replace").splitlines()
            named = [ln.strip() for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
            out += expand_inputs(named, (*_reading, listing.resolve()))
        elif os.path.isdir(item):
            found = sorted(
                str(p) for p in Path(item).rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
            )
            if not found:
                raise SourcetraceError(f"folder {item} holds no audio files ({', '.join(AUDIO_EXTENSIONS)})")
            out += found
        elif not os.path.exists(item) and glob.has_magic(item):
            found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
            if not found:
                raise SourcetraceError(f"pattern {item!r} matches no file")
            out += found
        else:
            out.append(item)
    return out


def _header(tracer, crop: str, crop_given: bool) -> list[str]:
    n_enr = len(tracer.enrolled_systems())
    note = "" if crop_given else " (default; --crop multi averages windows over long clips)"
    return [
        f"# model: {escape(tracer.path)}; {len(tracer.systems)} systems "
        f"({len(tracer.systems) - n_enr} from training, {n_enr} enrolled)",
        f"# operating point: {escape(tracer.describe_threshold())}",
        f"# crop: {crop}{note}",
    ]


def render(results, tracer, fmt: str, crop: str, crop_given: bool = True) -> str:
    """The traced clips as ``table`` (tab-separated, escaped), ``json`` (a list of objects) or ``csv``."""
    thr, point = float(tracer.threshold["value"]), tracer.describe_threshold()
    if fmt == "json":
        rows = [r.to_dict() | {"threshold": thr, "operating_point": point, "crop": crop} for r in results]
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        k = max((len(r.top) for r in results), default=0)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            ["path", "decision", *[f"{c}{i}" for i in range(1, k + 1) for c in ("system", "score")]]
            + ["knownness", "threshold", "error", "input"]
        )
        for r in results:
            top = [x for s, v in r.top for x in (s, f"{v:.4f}")] + [""] * (2 * (k - len(r.top)))
            known = "" if r.knownness is None else f"{r.knownness:.4f}"
            w.writerow([r.path, r.decision or "", *top, known, f"{thr:.4f}", r.error or "", "; ".join(r.input)])
        return buf.getvalue().rstrip("\n")
    lines = _header(tracer, crop, crop_given) + ["# path\tdecision\ttop-k systems (score)"]
    for r in results:
        if r.error:
            lines.append(f"{escape(r.path)}\tERROR\t{escape(r.error)}")
        else:
            tops = "  ".join(f"{escape(s)} {v:.3f}" for s, v in r.top)
            said = f"\t({escape('; '.join(r.input))})" if r.input else ""
            lines.append(f"{escape(r.path)}\t{escape(r.decision)}\t{tops}{said}")
    return "\n".join(lines)


def _tracer(args):
    from sourcetrace.bundle.export import bundle_for
    from sourcetrace.bundle.model import SourceTracer

    bundle = bundle_for(args.model, root=args.root, protocol=args.protocol, device=args.device)
    return SourceTracer(bundle, device=args.device)


def cli_trace(args) -> int:
    """``sourcetrace trace --model M [--format table|json|csv] [--crop ...] [--device D] INPUT...``."""
    if args.top_k < 1:
        raise SourcetraceError(f"--top-k must be >= 1, got {args.top_k}")
    clips = expand_inputs(args.clips)
    tracer = _tracer(args)
    crop = args.crop or "center"
    bar = None
    if len(clips) >= PROGRESS_FROM and not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(clips), unit="clip", file=sys.stderr, desc="trace")
    try:
        results = tracer.trace(clips, args.top_k, crop, progress=bar, strict=args.strict)
    finally:
        if bar is not None:
            bar.close()
    print(render(results, tracer, args.format, crop, args.crop is not None), flush=True)
    return 1 if any(r.error for r in results) else 0


def cli_enroll(args) -> int:
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
    if res.duplicates:
        print(f"already enrolled for {escape(res.system)} (nothing to do): {len(res.duplicates)} clips")
    print(
        f"{escape(res.system)}: {res.added} clips added, {res.n_clips} in total; "
        f"{len(tracer.systems)} systems in {tracer.path}"
    )
    return 1 if res.failed else 0
