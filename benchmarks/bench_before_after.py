"""Training clips/s of two checkouts side by side (e.g. the previous commit beside this one), in one run.

Each measurement is a fresh process running ``sourcetrace.training.loop.train`` of the given checkout
(``PYTHONPATH=TREE``) for 3 epochs of ``--steps`` steps (no evaluation before the last epoch); epoch 2 is
timed (epoch 1 warms up), as wall seconds and as the process's CPU seconds (steadier on a shared
machine). Runs alternate between the checkouts, ``--repeats`` times, so both see the same load.

Usage: python benchmarks/bench_before_after.py --root data/demo --trees /tmp/before . [--steps 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

CHILD = r"""
import json, sys, tempfile, time
from sourcetrace.config import Config
from sourcetrace.training.loop import train
root, (channels, batch, steps, threads) = sys.argv[1], map(int, sys.argv[2:6])
cfg = Config.from_dict({"data.root": root, "model.channels": channels, "train.batch_size": batch,
    "train.steps_per_epoch": steps, "train.epochs": 3, "train.eval_every": 1000, "train.warmup_epochs": 1,
    "data.crop_seconds": 2.0, "data.eval_seconds": 2.0, "data.short_clips": "pad", "data.max_clips_per_class": 40,
    "train.num_threads": threads, "train.device": "cpu", "train.eval_test": False})
marks = []
train(cfg, tempfile.mkdtemp(), on_epoch=lambda r: marks.append((time.perf_counter(), time.process_time(), r.metrics)))
(w1, c1, _), (w2, c2, m2) = marks[0], marks[1]
clips = steps * batch
print(json.dumps({"wall_s": w2 - w1, "cpu_s": c2 - c1, "clips_per_s": clips / (w2 - w1),
                  "clips_per_cpu_s": clips / (c2 - c1), "train_loss_epoch2": m2["train_loss"]}))
"""


def measure(tree: str, root: str, channels: int, batch: int, steps: int, threads: int) -> dict:
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    with tempfile.TemporaryDirectory() as cwd:  # the checkout's package, not this folder's
        out = subprocess.run(
            [sys.executable, "-c", CHILD, root, str(channels), str(batch), str(steps), str(threads)],
            env=env, cwd=cwd, capture_output=True, text=True, check=True,
        )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--trees", nargs=2, required=True, metavar=("BEFORE", "AFTER"))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--widths", type=int, nargs="+", default=[8, 16], help="model.channels: narrow, full")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    print(f"batch {args.batch} x 2 s crops, {args.steps} steps timed, {args.threads} torch threads", flush=True)
    print(f"{'model.channels':>14} {'tree':>8} {'clips/s':>8} {'clips/CPU-s':>11} {'train_loss':>11}")
    for channels in args.widths:
        for _ in range(args.repeats):
            for label, tree in zip(("before", "after"), args.trees):
                r = measure(tree, root, channels, args.batch, args.steps, args.threads)
                print(
                    f"{channels:>14} {label:>8} {r['clips_per_s']:>8.1f} {r['clips_per_cpu_s']:>11.1f} "
                    f"{r['train_loss_epoch2']:>11.6f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
