"""Rendering cost of each degradation: clips/s and CPU seconds per clip, on a fresh cache.

    .venv/bin/python benchmarks/bench_degrade.py --clips data/demo/fake [--n 96] [--workers 2]

Takes the first N audio files under --clips (sorted), renders them under every degradation into a new
temporary cache (nothing cached is reused), and prints wall clips/s and the CPU seconds per clip of this
process and its ffmpeg children (user + system): on a loaded machine the CPU figure is the steadier one,
and 2 / (CPU s per clip) is what two idle cores would render.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sourcetrace.degrade import DEGRADATIONS  # noqa: E402
from sourcetrace.degrade.render import render_files  # noqa: E402


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", required=True, help="folder of audio files")
    ap.add_argument("--n", type=int, default=96)
    ap.add_argument("--workers", type=int, default=2, help="chunks rendered at once (default: 2, the cores here)")
    args = ap.parse_args()
    files = sorted(str(p) for p in Path(args.clips).rglob("*") if p.suffix in (".wav", ".flac"))[: args.n]
    size = sum(os.path.getsize(f) for f in files)
    print(f"{len(files)} clips ({size / 1e6:.1f} MB) from {args.clips}, {args.workers} workers, {os.cpu_count()} cores")
    print(f"{'degradation':<12}{'clips/s':>10}{'CPU s/clip':>12}{'2-core clips/s':>16}")
    for name in DEGRADATIONS:
        with tempfile.TemporaryDirectory() as cache:
            t0, c0 = time.perf_counter(), cpu_seconds()
            render_files(files, name, cache_dir=cache, workers=args.workers)
            wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
        print(f"{name:<12}{len(files) / wall:>10.1f}{cpu / len(files):>12.3f}{2 * len(files) / cpu:>16.1f}")


if __name__ == "__main__":
    main()
