"""Build the corpus: plan, synthesise in a process pool, write MLAAD's protocol, summarise.

Resumable: a clip whose final file exists is done, because every clip is written under a hidden
temporary name and atomically renamed; stray temporary files of an interrupted build are removed.
``corpus.json`` records preset, seed and format so that a resume with other settings is refused.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import signal
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import soundfile as sf

from sourcetrace.data.corpus import engines
from sourcetrace.data.corpus.canonical import RATE, canonicalise
from sourcetrace.data.corpus.engines import EngineError, MissingEngineError
from sourcetrace.data.corpus.systems import BY_NAME, PRESETS, Clip, plan
from sourcetrace.data.protocol import CONDITIONS, SPLITS
from sourcetrace.errors import SourcetraceError, first_lines

VERSION = 2  # 2: piper seeded per clip, MBROLA rendered by mbrola itself (both now byte-reproducible)
FORMATS = {"flac": "FLAC", "wav": "WAV"}
COLUMNS = ("path", "model_name", "language", "architecture", "duration", "text")
TMP_MARK = ".tmp-"


def make_clip(root: str, rel: str, system: str, lang: str, text: str) -> tuple[str, float | None, str | None]:
    """Synthesise one clip (one retry) into ``root/rel``; return (rel, seconds, error or None)."""
    sysdef = BY_NAME[system]
    final = Path(root) / rel
    errors = []
    for _ in range(2):
        try:
            with tempfile.TemporaryDirectory(prefix="sourcetrace-tts-") as tmp:
                audio, sr = engines.ENGINES[sysdef.engine](text, lang, Path(tmp), **sysdef.params)
            y = canonicalise(audio, sr)
            final.parent.mkdir(parents=True, exist_ok=True)
            part = final.with_name(f".{final.stem}{TMP_MARK}{os.getpid()}{final.suffix}")
            sf.write(str(part), y, RATE, format=FORMATS[final.suffix[1:]], subtype="PCM_16")
            os.replace(part, final)
            return rel, len(y) / RATE, None
        except Exception as err:  # noqa: BLE001 - every failure is reported with its clip
            errors.append(f"{type(err).__name__}: {err}")
    return (
        rel,
        None,
        (f"engine {sysdef.engine}, system {system}, language {lang}, text {text!r}: " + " | then: ".join(errors)),
    )


def _worker_init() -> None:
    """Pool workers end with the builder (Linux): no orphans keep synthesising after a kill."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _terminate(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _check_manifest(root: Path, preset: str, seed: int, fmt: str) -> None:
    """Refuse to resume a folder built with other settings; otherwise record ours."""
    want = {"version": VERSION, "preset": preset, "seed": seed, "format": fmt}
    path = root / "corpus.json"
    if path.exists():
        have = json.loads(path.read_text())
        if have.get("version") != VERSION:
            raise SourcetraceError(
                f"{root} holds a corpus of format version {have.get('version')!r}; this sourcetrace builds version "
                f"{VERSION} (its piper and MBROLA clips differ): delete that folder or use another --out"
            )
        diff = [f"{k}={have.get(k)!r} (asked {v!r})" for k, v in want.items() if have.get(k) != v]
        if diff:
            raise SourcetraceError(f"{root} holds a corpus built with {', '.join(diff)}; use another --out")
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(want, indent=2) + "\n")


def _remove_strays(root: Path) -> int:
    strays = [p for p in root.glob("fake/*/*/.*") if TMP_MARK in p.name]
    for p in strays:
        p.unlink(missing_ok=True)
    return len(strays)


def _check_engines(clips: list[Clip]) -> None:
    lacks = {s: engines.missing_requirements(BY_NAME[s]) for s in sorted({c.system for c in clips})}
    lines = [f"  {s}: {', '.join(m)}" for s, m in lacks.items() if m]
    if lines:
        raise MissingEngineError("TTS engines missing for these systems (run `make engines`):\n" + "\n".join(lines))


def _synthesise(root: Path, todo: list[Clip], workers: int, progress: bool) -> tuple[dict, list[str]]:
    """Run ``make_clip`` over ``todo`` (costly systems first); return durations and failures."""
    from tqdm import tqdm

    durations: dict[str, float] = {}
    failures: list[str] = []
    todo = sorted(todo, key=lambda c: not BY_NAME[c.system].costly)
    bar = tqdm(total=len(todo), unit="clip", desc="corpus", disable=not progress, dynamic_ncols=True)

    def collect(result):
        rel, seconds, error = result
        if error:
            failures.append(error)
        else:
            durations[rel] = seconds
        bar.update(1)

    # SIGTERM takes the same path as Ctrl-C: pending clips are cancelled, running ones finish.
    previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
    try:
        if workers <= 1 or len(todo) <= 1:
            for c in todo:
                collect(make_clip(str(root), c.rel, c.system, c.language, c.text))
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
                pending = {pool.submit(make_clip, str(root), c.rel, c.system, c.language, c.text) for c in todo}
                try:
                    while pending:
                        done, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in done:
                            collect(fut.result())
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    finally:
        bar.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return durations, failures


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def _write_csv(path: Path, rows: list[dict]) -> None:
    part = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")
    with open(part, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(part, path)


def write_protocol(root: Path, clips: list[Clip], durations: dict[str, float]) -> dict[str, list[dict]]:
    """``protocol/{split}.csv`` and the 12 ``protocol/fine/<split>___<condition>.csv`` files."""
    rows = {s: [] for s in SPLITS}
    for c in clips:
        rows[c.split].append(
            {
                "path": f"./{c.rel}",
                "model_name": c.system,
                "language": c.language,
                "architecture": BY_NAME[c.system].family,
                "duration": f"{durations[c.rel]:.3f}",
                "text": c.text,
            }
        )
    seen_models = {r["model_name"] for r in rows["train"]}
    seen_langs = {r["language"] for r in rows["train"]}
    fine = root / "protocol" / "fine"
    fine.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        _write_csv(root / "protocol" / f"{split}.csv", split_rows)
        for cond in CONDITIONS:
            lang_seen, model_seen = not cond.startswith("lang_not_"), not cond.endswith("model_not_seen")
            sel = [
                r
                for r in split_rows
                if (r["language"] in seen_langs) == lang_seen and (r["model_name"] in seen_models) == model_seen
            ]
            _write_csv(fine / f"{split}___{cond}.csv", sel)
    return rows


def _size_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def build_corpus(
    out, preset: str = "demo", seed: int = 0, workers: int = 0, fmt: str = "flac", progress: bool = True
) -> dict:
    """Build (or finish) the corpus of ``preset`` under ``out``; return a summary dict."""
    t0 = time.time()
    if preset not in PRESETS:
        raise SourcetraceError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    if fmt not in FORMATS:
        raise SourcetraceError(f"unknown format {fmt!r}; valid formats: {', '.join(FORMATS)}")
    root = Path(out)
    clips = plan(preset, seed, fmt)
    _check_engines(clips)
    _check_manifest(root, preset, seed, fmt)
    strays = _remove_strays(root)
    todo = [c for c in clips if not (root / c.rel).exists()]
    workers = (
        workers
        if workers > 0
        else (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    )
    durations, failures = _synthesise(root, todo, workers, progress)
    if failures:
        raise EngineError(f"{len(failures)} of {len(todo)} clips failed (after one retry):\n{first_lines(failures)}")
    for c in clips:
        if c.rel not in durations:
            info = sf.info(str(root / c.rel))
            durations[c.rel] = info.frames / info.samplerate
    rows = write_protocol(root, clips, durations)
    per_split = {
        s: {
            "clips": len(r),
            "systems": len({x["model_name"] for x in r}),
            "languages": len({x["language"] for x in r}),
            "seconds": round(sum(float(x["duration"]) for x in r), 1),
        }
        for s, r in rows.items()
    }
    return {
        "root": str(root),
        "preset": preset,
        "seed": seed,
        "format": fmt,
        "workers": workers,
        "clips": len(clips),
        "made": len(todo),
        "reused": len(clips) - len(todo),
        "strays_removed": strays,
        "systems": len({c.system for c in clips}),
        "languages": len({c.language for c in clips}),
        "splits": per_split,
        "seconds": round(sum(durations.values()), 1),
        "min_seconds": round(min(durations.values()), 3),
        "size_bytes": _size_bytes(root),
        "wall_seconds": round(time.time() - t0, 1),
    }


def format_summary(s: dict) -> str:
    """The summary as a few lines of text."""
    lines = [
        f"corpus {s['root']}: preset {s['preset']}, seed {s['seed']}, {s['clips']} clips "
        f"({s['made']} made, {s['reused']} reused), {s['systems']} systems, {s['languages']} languages",
        f"  {'split':<6} {'clips':>6} {'systems':>8} {'langs':>6} {'audio':>9}",
    ]
    for split, v in s["splits"].items():
        lines.append(f"  {split:<6} {v['clips']:>6} {v['systems']:>8} {v['languages']:>6} {v['seconds'] / 60:>7.1f} m")
    lines.append(
        f"  audio {s['seconds'] / 3600:.2f} h (shortest clip {s['min_seconds']:.2f} s), "
        f"{s['size_bytes'] / 1e6:.1f} MB on disk, wall {s['wall_seconds']:.1f} s on {s['workers']} workers"
    )
    return "\n".join(lines)
