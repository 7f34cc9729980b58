"""``sourcetrace trace`` and ``enroll``: attribute clips to TTS systems with a bundle, on the command line.

A model argument may be a bundle, a run, checkpoint or sweep folder (see
``sourcetrace.artefacts.resolve_model``); anything but a bundle is exported to one on first use.
``trace`` takes files, folders (recursively: every audio file), globs and ``@list.txt`` files (one
path per line) and prints a table, JSON or CSV. JSON and CSV carry, per clip, the evidence a case file needs:
the clip's SHA-256, its duration and sample rate as read, what was done to read it (mixed down, resampled,
level), the bundle's hash (``files.bundle_sha256``) and its enrolled systems' (``enrolled.json``), the
sourcetrace version and the UTC time of the trace; ``--format json`` validates against ``trace_schema()``
(``schemas/trace.schema.json``, shipped with the package). Exit 0: every clip traced; 1: some clips failed (the
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
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

from sourcetrace.errors import SourcetraceError

AUDIO_EXTENSIONS = (".wav", ".flac", ".mp3", ".ogg", ".oga", ".opus", ".aiff", ".aif", ".au", ".caf", ".w64")
PROGRESS_FROM = 32  # clips: below this no progress bar
SCHEMA = "trace.schema.json"  # in sourcetrace.schemas: the schema of `trace --format json`
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


def trace_schema() -> dict:
    """The JSON schema (draft 2020-12) of ``trace --format json``: a list of one object per clip."""
    return json.loads(resources.files("sourcetrace.schemas").joinpath(SCHEMA).read_text())


def level_handling(tracer) -> str:
    """What is done to a clip's level before the model embeds it, in words: the same for every clip read."""
    from sourcetrace.data.audio import CANONICAL_PEAK
    from sourcetrace.features import LEVEL_RMS_DBFS, LogMelFbank

    steps = [f"peak-normalised to {CANONICAL_PEAK:g} of full scale on reading"]
    modules = list(tracer.model.modules())
    if any(isinstance(m, LogMelFbank) and m.level for m in modules):
        steps.append(f"every window set to {LEVEL_RMS_DBFS:g} dBFS RMS inside the model (features.level=rms)")
    w2v2 = sys.modules.get("sourcetrace.models.w2v2")  # imported when the bundle holds a wav2vec2 model
    if w2v2 is not None and any(isinstance(m, w2v2.SSLFrontEnd) and m.normalize for m in modules):
        steps.append("every window zero-mean unit-variance in the wav2vec2 front end")
    if len(steps) == 1:
        steps.append("the model takes that level as it is")
    return "; ".join(steps)


def evidence(tracer, when: datetime | None = None) -> dict:
    """What every record of one trace shares: the bundle's hash and its enrolled systems', the sourcetrace
    version and the UTC time of the trace (``when``, default now)."""
    from sourcetrace.bundle import files
    from sourcetrace.version import __version__

    when = (when or datetime.now(UTC)).astimezone(UTC)
    return {
        "bundle_sha256": files.bundle_sha256(tracer.path),
        "enrolled_sha256": files.file_sha256(tracer.path / files.ENROLLED),
        "sourcetrace_version": __version__,
        "traced_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _header(tracer, crop: str, crop_given: bool, shared: dict) -> list[str]:
    n_enr = len(tracer.enrolled_systems())
    note = "" if crop_given else " (default; --crop multi averages windows over long clips)"
    return [
        f"# model: {escape(tracer.path)}; {len(tracer.systems)} systems "
        f"({len(tracer.systems) - n_enr} from training, {n_enr} enrolled)",
        f"# operating point: {escape(tracer.describe_threshold())}",
        f"# crop: {crop}{note}",
        f"# {calibration_note(tracer)}",
        f"# bundle sha256 {shared['bundle_sha256']}, enrolled.json sha256 {shared['enrolled_sha256']}; "
        f"sourcetrace {escape(shared['sourcetrace_version'])}; traced {shared['traced_at']}",
    ]


def calibration_note(tracer) -> str:
    """What the numbers of a trace mean: raw scores are similarities; P(...) are the dev-fitted probabilities."""
    raw = "scores are raw similarities (the decision is the threshold on them), not probabilities"
    cal = getattr(tracer, "calibration", None)
    if cal is None:
        return f"calibration: none in this bundle (re-export it for probabilities); {raw}"
    return (
        f"calibration: {escape(cal.describe())}; P(known) = probability that the clip's system is one on file, "
        f"p = probability of each system if it is; {raw}"
    )


def render(results, tracer, fmt: str, crop: str, crop_given: bool = True, when: datetime | None = None) -> str:
    """The traced clips as ``table`` (tab-separated, escaped), ``json`` (a list of objects, ``trace_schema()``)
    or ``csv``; ``when`` is the UTC time of the trace (default now)."""
    thr, point = float(tracer.threshold["value"]), tracer.describe_threshold()
    shared, level = evidence(tracer, when), level_handling(tracer)
    if fmt == "json":
        rows = [
            r.to_dict()
            | {"level": None if r.error else level, "threshold": thr, "operating_point": point, "crop": crop}
            | shared
            for r in results
        ]
        return json.dumps(rows, indent=2)
    if fmt == "csv":
        k = max((len(r.top) for r in results), default=0)
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(
            ["path", "decision", *[f"{c}{i}" for i in range(1, k + 1) for c in ("system", "score", "p")]]
            + ["knownness", "p_known", "threshold", "error", "sha256", "duration_s", "sample_rate", "level"]
            + [*shared, "input"]
        )
        for r in results:
            ps = r.top_p or [None] * len(r.top)
            top = [x for (s, v), p in zip(r.top, ps) for x in (s, f"{v:.4f}", _prob(p))] + [""] * (3 * (k - len(r.top)))
            known = "" if r.knownness is None else f"{r.knownness:.4f}"
            w.writerow(
                [
                    r.path,
                    r.decision or "",
                    *top,
                    known,
                    _prob(r.p_known),
                    f"{thr:.4f}",
                    r.error or "",
                    r.sha256 or "",
                    "" if r.duration_s is None else f"{r.duration_s:.3f}",
                    r.sample_rate or "",
                    "" if r.error else level,
                    *shared.values(),
                    "; ".join(r.input),
                ]
            )
        return buf.getvalue().rstrip("\n")
    lines = _header(tracer, crop, crop_given, shared) + [
        "# path\tdecision\ttop-k systems: raw score (p)\tknownness: raw score (P(known))"
    ]
    for r in results:
        if r.error:
            lines.append(f"{escape(r.path)}\tERROR\t{escape(r.error)}")
        else:
            ps = r.top_p or [None] * len(r.top)
            tops = "  ".join(
                f"{escape(s)} {v:.3f}" + ("" if p is None else f" (p {p:.2f})") for (s, v), p in zip(r.top, ps)
            )
            known = f"knownness {r.knownness:.3f}" + ("" if r.p_known is None else f" (P(known) {r.p_known:.2f})")
            said = f"\t({escape('; '.join(r.input))})" if r.input else ""
            lines.append(f"{escape(r.path)}\t{escape(r.decision)}\t{tops}\t{known}{said}")
    return "\n".join(lines)


def _prob(p: float | None) -> str:
    return "" if p is None else f"{p:.4f}"
