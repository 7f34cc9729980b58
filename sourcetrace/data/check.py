"""``sourcetrace corpus check``: what a corpus holds per split and condition, and every problem in it at once.

Reads the protocol (CSV only), cross-checks ``fine/`` where present, then validates every listed file in
a thread pool: exists, decodes, mono, sample rate, not silent, at least ``min_seconds`` long. Exit code
1 if anything is wrong (each problem on its own line), 0 otherwise.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from sourcetrace.data.audio import content_problems, header_problems, probe_audio, read_samples
from sourcetrace.data.bank import thread_map
from sourcetrace.data.protocol import CONDITIONS, SPLITS, Protocol, check_fine, read_protocol
from sourcetrace.errors import AudioError

PROGRESS_FROM = 1000  # files: show a progress bar from this many on


@dataclass
class CheckReport:
    """Counts per split/condition (``summary``), file durations and every problem found."""

    protocol: Protocol
    summary: pd.DataFrame
    problems: list[str] = field(default_factory=list)
    n_files: int = 0
    seconds: float = 0.0  # wall time of the file validation

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        p = self.protocol
        lines = [f"corpus: {p.root}  (protocol: {p.folder})", ""]
        lines += format_table(self.summary)
        lines.append("")
        dups = ", ".join(f"{s}.csv {n}" for s, n in p.duplicates_dropped.items() if n)
        lines.append(f"duplicate rows dropped: {dups or 'none'}")
        lines.append(
            f"known systems (train.csv): {len(p.known_systems)}; seen languages: {', '.join(p.seen_languages)}"
        )
        lines.append(f"validated {self.n_files} files in {self.seconds:.1f} s")
        if self.ok:
            lines.append("OK: no problems found")
        else:
            lines.append(f"{len(self.problems)} problem(s):")
            lines += [f"  {problem}" for problem in self.problems]
        return "\n".join(lines)


def format_table(df: pd.DataFrame) -> list[str]:
    """Text columns left-aligned, numbers right-aligned, one space-padded line per row."""
    cells = [[str(c) for c in df.columns]]
    cells += [[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(r[i]) for r in cells) for i in range(len(df.columns))]
    numeric = [pd.api.types.is_numeric_dtype(df[c]) for c in df.columns]
    return [
        "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(r, widths, numeric)).rstrip() for r in cells
    ]


def validate_file(path: str, sample_rate: int = 16000, min_seconds: float = 0.0) -> tuple[float, list[str]]:
    """(duration in seconds or NaN, every problem of one file as ``'<path>: <problem>'``)."""
    try:
        info = probe_audio(path)
    except AudioError as err:
        return float("nan"), [str(err)]
    problems = header_problems(info, sample_rate)
    if info.frames > 0 and info.duration < min_seconds:
        problems.append(
            f"{path}: {info.duration:.2f} s is shorter than {min_seconds:g} s (the training crop): "
            "wrap-pad it (data.short_clips=pad), drop it (data.short_clips=drop) or use a shorter crop"
        )
    if info.frames > 0:
        try:
            wave = read_samples(info, "float32")
        except AudioError as err:
            return info.duration, problems + [str(err)]
        if len(wave) != info.frames:
            problems.append(f"{path}: decoded {len(wave)} frames but the header promises {info.frames} (truncated?)")
        problems += content_problems(path, wave)
    return info.duration, problems


def summarise(protocol: Protocol, durations: dict[str, float] | None = None) -> pd.DataFrame:
    """One row per split (``all``) and per condition in it: clips, systems, languages (and hours)."""
    rows = []
    for split, table in protocol.tables.items():
        groups = [("all", table)] + [(c, table[table["condition"] == c]) for c in CONDITIONS]
        groups = [(c, g) for c, g in groups if len(g) or c == "all"]
        for cond, g in groups:
            row = {
                "split": split,
                "condition": cond,
                "clips": len(g),
                "systems": g["system"].nunique(),
                "languages": g["language"].nunique(),
            }
            if durations is not None:
                row["hours"] = round(float(np.nansum([durations.get(f, np.nan) for f in g["file"]])) / 3600, 2)
            rows.append(row)
    return pd.DataFrame(rows)


def check_corpus(
    root: str | os.PathLike,
    protocol: str | os.PathLike | None = None,
    min_seconds: float = 2.0,
    sample_rate: int = 16000,
    workers: int = 0,
    progress: bool | None = None,
) -> CheckReport:
    """Validate a corpus; raises ``ProtocolError`` only when the protocol cannot be read at all."""
    proto = read_protocol(root, protocol, splits=SPLITS)
    problems = check_fine(proto)
    where: dict[str, list[str]] = {}
    for split, table in proto.tables.items():
        for f in table["file"]:
            where.setdefault(f, []).append(split)
    for f, splits in where.items():
        if len(splits) > 1:
            problems.append(f"{f}: listed in several splits ({', '.join(splits)}): evaluation would see training clips")
    files = list(where)
    if progress is None:
        progress = len(files) >= PROGRESS_FROM and sys.stderr.isatty()
    start = time.perf_counter()
    results = thread_map(lambda f: validate_file(f, sample_rate, min_seconds), files, workers, progress, "check")
    elapsed = time.perf_counter() - start
    durations = {}
    for f, (duration, file_problems) in zip(files, results):
        durations[f] = duration
        problems += file_problems
    return CheckReport(proto, summarise(proto, durations), problems, len(files), elapsed)
