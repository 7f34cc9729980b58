"""Benchmark of the all-pairs EER: wall time and peak RSS at paper scale, and speed vs sklearn.

    .venv/bin/python benchmarks/bench_eer.py [--n 34000] [--dim 50] [--sklearn-n 6000] [--threads 2]

Every measurement runs in a fresh subprocess so that ru_maxrss is that measurement's peak RSS (torch's
allocations are invisible to tracemalloc). Embeddings: 64 Gaussian classes (like MLAAD's 64 test
systems), overlapping enough that the EER is a few percent.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def data(n: int, dim: int, classes: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    centres = rng.normal(size=(classes, dim))
    return (centres[labels] + 1.1 * rng.normal(size=(n, dim))).astype(np.float32), labels


def worker(kind: str, n: int, dim: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    emb, labels = data(n, dim)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0, c0 = time.perf_counter(), time.process_time()
    if kind == "ours":
        from sourcetrace.evaluation.eer import all_pairs_metrics

        m = all_pairs_metrics(emb, labels)
        eer, extra = m.eer, {"min_dcf": m.min_dcf, "pairs": m.n_target + m.n_nontarget}
    elif kind == "ours_exact":
        from sourcetrace.evaluation.eer import all_pairs_metrics

        eer, extra = all_pairs_metrics(emb, labels, sort_below=0, tolerance=0.0).eer, {}
    else:  # the usual sklearn recipe: all cosines, roc_curve, brentq on the interpolated ROC
        from scipy.interpolate import interp1d
        from scipy.optimize import brentq
        from sklearn.metrics import roc_curve

        e = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        i, j = np.triu_indices(n, 1)
        scores = (e @ e.T)[i, j]
        fpr, tpr, _ = roc_curve((labels[i] == labels[j]).astype(np.int8), scores)
        eer, extra = 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0), {}
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "kind": kind,
        "n": n,
        "seconds": seconds,
        "cpu_s": cpu,
        "eer": eer,
        "peak_rss_mb": peak,
        "rss_before_mb": base,
        **extra,
    }


def measure(kind: str, n: int, dim: int, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--n", str(n), "--dim", str(dim), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=34_000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--sklearn-n", type=int, default=6_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", default="")
    a = ap.parse_args()
    if a.worker:
        print(json.dumps(worker(a.worker, a.n, a.dim, a.threads)))
        return
    print(f"torch threads: {a.threads}")
    for kind in ("ours", "ours_exact"):
        r = measure(kind, a.n, a.dim, a.threads)
        print(
            f"{kind:10s} n={r['n']} x {a.dim}-d: {r['seconds']:.2f} s wall ({r['cpu_s']:.2f} CPU s), "
            f"EER {r['eer']:.4f} %, "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (after import + data: {r['rss_before_mb']:.0f} MB)"
            + (f", minDCF {r['min_dcf']:.4f}, {r['pairs']:,} pairs" if "pairs" in r else "")
        )
    ours, ref = measure("ours", a.sklearn_n, a.dim, a.threads), measure("sklearn", a.sklearn_n, a.dim, a.threads)
    print(
        f"n={a.sklearn_n}: ours {ours['seconds']:.2f} s / {ours['cpu_s']:.2f} CPU s ({ours['peak_rss_mb']:.0f} MB), "
        f"sklearn roc_curve "
        f"{ref['seconds']:.2f} s / {ref['cpu_s']:.2f} CPU s ({ref['peak_rss_mb']:.0f} MB): "
        f"{ref['seconds'] / ours['seconds']:.1f}x faster; "
        f"EER {ours['eer']:.6f} vs {ref['eer']:.6f} (|diff| {abs(ours['eer'] - ref['eer']):.2e} pp)"
    )


if __name__ == "__main__":
    main()
