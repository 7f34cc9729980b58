"""Benchmark of ``sourcetrace trace`` from a bundle: cold wall time of 1 and of N clips, and what it imports.

    .venv/bin/python benchmarks/bench_trace.py --bundle models/ge2e --clips data/demo/fake [--n 100] [--repeat 3]

Every run is a fresh ``python -m sourcetrace.cli trace`` process (cold: imports, bundle load, model
build, decoding, embedding, scoring), as an analyst runs it; the file cache is warm after the first.
Wall and CPU seconds (user + system of the child) are printed: on a loaded machine the CPU seconds are
the steadier figure. Also printed: the trace path's imports alone, the time of a bare ``import torch`` (the floor of
any PyTorch tool), and which heavy packages the trace path imported (it should be none of them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("ray", "mlflow", "sklearn", "matplotlib", "umap", "transformers", "pandas", "pyarrow")
AUDIO = (".wav", ".flac")


def timed(cmd: list[str], env: dict) -> tuple[float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the child: user + system, the figure that load on the machine does not inflate)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bundle", required=True)
    ap.add_argument("--clips", required=True, help="a folder of audio clips (searched recursively)")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    clips = sorted(str(p) for p in Path(args.clips).rglob("*") if p.suffix.lower() in AUDIO)[: args.n]
    if len(clips) < args.n:
        sys.exit(f"only {len(clips)} clips under {args.clips}")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    trace = [sys.executable, "-m", "sourcetrace.cli", "trace", "--model", args.bundle, "--no-progress"]
    timed(trace + clips[:1], env)  # warm the file cache once (a cold disk is not what is measured)
    rows = {}
    for label, cmd in (
        ("import torch", [sys.executable, "-c", "import torch"]),
        ("imports of the trace path", [sys.executable, "-c", "import sourcetrace.bundle.model, torch, soundfile"]),
        ("trace 1 clip", trace + clips[:1]),
        (f"trace {args.n} clips", trace + clips),
    ):
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu, out = timed(cmd, env)
            if out.returncode not in (0, 1):
                sys.exit(f"{label} failed: {out.stderr[-2000:]}")
            walls.append(wall)
            cpus.append(cpu)
        rows[label] = {
            "wall_median_s": round(statistics.median(walls), 2),
            "wall_min_s": round(min(walls), 2),
            "cpu_median_s": round(statistics.median(cpus), 2),
        }
    probe = (
        "import sys; from sourcetrace.cli import main; "
        f"main(['trace', '--model', {args.bundle!r}, {clips[0]!r}]); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    heavy = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True).stderr
    load = os.getloadavg()[0]
    print(json.dumps({"cores": os.cpu_count(), "load_avg_1min": round(load, 2), "timings": rows}, indent=2))
    print(f"heavy packages imported by trace: {heavy.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
