"""The GPU path measured: training steps/s, GPU memory, 4 packed quarter-GPU trials, bf16 vs fp32 EER.

Runs as is on a GPU machine in at most ~5 minutes (and the same code path on a CPU, slowly):

1. steps/s of one Thin-ResNet-34 trial at batch 128 (AAM-Softmax, random sampler) and at batch 24
   (GE2E, balanced sampler: most Table-1 steps), 2 s crops: the trainer's own epoch function
   (``training/steps.py``: crops cut on the device from the resident bank, no per-step sync), after
   warm-up steps; peak GPU memory of each;
2. four such trials at once as four processes (``gpu: 0.25`` each: memory capped to a quarter, as Ray's
   trials are), their summed clips/s against one trial alone;
3. one short training run, then its best checkpoint scored on dev with fp32 and with bf16 autocast.

Usage: python benchmarks/bench_gpu.py --root data/demo [--device auto] [--steps 50] [--epochs 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

RECIPES = {
    128: {"loss.name": "aamsoftmax", "sampler.name": "random", "train.batch_size": 128},
    24: {"loss.name": "ge2e", "sampler.name": "balanced", "sampler.per_class": 2, "train.batch_size": 24},
}


MAX_CLIPS = [0]  # data.max_clips_per_class of every run (--max-clips: a smaller corpus for slow CPUs)
CROP = [2.0]  # data.crop_seconds of every run (--crop-seconds: shorter crops for slow CPUs)


def base_config(root: str, device: str, extra: dict):
    """The recipe on ``root``; a balanced batch takes more clips per class where the corpus has fewer
    training systems than ``batch / per_class`` (a small or synthetic corpus)."""
    from sourcetrace.config import Config
    from sourcetrace.data.protocol import read_protocol

    fixed = {"data.root": root, "train.device": device, "data.crop_seconds": CROP[0], "data.short_clips": "pad"}
    extra = dict(extra)
    if extra.get("sampler.name") == "balanced":
        batch, k = extra["train.batch_size"], extra.get("sampler.per_class", 2)
        n_classes = len(read_protocol(root, splits=("train",)).known_systems)
        while batch % k or batch // k > n_classes:
            k += 1
        extra["sampler.per_class"] = k
    return Config.from_dict(fixed | {"data.max_clips_per_class": MAX_CLIPS[0]} | extra)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Trial:
    """One trial's model, loss, optimiser and device-resident crops, as ``training/loop.py`` sets them up,
    stepped by the trainer's own epoch function (``training/steps.py``)."""

    def __init__(self, root: str, device_name: str, batch: int, share: float = 1.0, precision: str = "auto"):
        from sourcetrace.data.samplers import SAMPLERS
        from sourcetrace.device import autocast_dtype, resolve_device, share_gpu_memory
        from sourcetrace.losses import LOSSES
        from sourcetrace.models import build_model
        from sourcetrace.training.batches import Crops
        from sourcetrace.training.data import prepare_data
        from sourcetrace.training.steps import optimizer_for, speed_up

        cfg = base_config(root, device_name, RECIPES[batch] | {"train.warmup_epochs": 0, "train.precision": precision})
        self.cfg, self.batch = cfg, batch
        self.device = device = resolve_device(cfg.train.device)
        share_gpu_memory(device, share)
        self.data = data = prepare_data(cfg)
        torch.manual_seed(0)
        model = build_model(cfg).to(device)
        step_model = speed_up(model, cfg, device)
        loss_fn = LOSSES[cfg.loss.name](model.embedding_dim, len(data.known_systems), cfg.loss).to(device)
        params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
        optimizer = optimizer_for(cfg, params, device)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)  # constant lr: no schedule
        self.amp = autocast_dtype(cfg.train.precision, device)
        scaler = torch.amp.GradScaler(device.type, enabled=self.amp is torch.float16)
        labels = data.train.labels
        self.sampler = SAMPLERS[cfg.sampler.name](labels, batch, cfg.sampler.per_class, 0)
        self.crop = int(round(cfg.data.crop_seconds * cfg.data.sample_rate))
        crops = Crops(data.train.bank, labels, self.crop, device)
        self.run = (step_model, loss_fn, optimizer, scheduler, scaler, params, crops)
        self.rng = np.random.default_rng(0)

    def epoch(self, e: int, steps: int) -> tuple[float, int]:
        """``steps`` training steps in one ``train_epoch`` call, as the trainer runs an epoch (a small corpus:
        several sampler passes make up the steps): (seconds, clips seen)."""
        from sourcetrace.training.batches import EpochPlan, plan_epoch
        from sourcetrace.training.steps import train_epoch

        plans, done = [], 0
        while done < steps:
            self.sampler.set_epoch(e + 1000 * len(plans))
            plans.append(plan_epoch(self.sampler, steps - done, self.data.train.bank, self.crop, self.rng))
            if not len(plans[-1]):
                n = len(self.data.train.labels)
                raise SystemExit(
                    f"the sampler yields no batch of {self.batch} from {n} training clips: use a larger corpus"
                )
            done += len(plans[-1])
        sizes = np.concatenate([np.diff(p.bounds) for p in plans])
        plan = EpochPlan(
            np.concatenate([p.idx for p in plans]), np.concatenate([p.starts for p in plans]), np.cumsum([0, *sizes])
        )
        sync(self.device)
        t0 = time.perf_counter()
        seen = train_epoch(*self.run, plan, self.cfg, e, self.amp).seen
        sync(self.device)
        return time.perf_counter() - t0, seen


def steps_per_s(
    root: str, device_name: str, batch: int, steps: int, share: float = 1.0, precision: str = "auto"
) -> dict:
    """One trial's training steps, timed after as many warm-up steps (cuDNN autotuning, allocator)."""
    trial = Trial(root, device_name, batch, share, precision)
    device = trial.device
    trial.epoch(1, steps)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, seen = trial.epoch(2, steps)
    out = {"batch": batch, "steps_per_s": steps / seconds, "clips_per_s": seen / seconds, "device": str(device)}
    out["precision"] = "fp32" if trial.amp is None else str(trial.amp).removeprefix("torch.")
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["name"] = torch.cuda.get_device_name(device)
    return out


def packed(
    root: str, device: str, batch: int, steps: int, n: int = 4, env: dict | None = None, timeout: float | None = None
) -> dict:
    """``n`` trial processes at once, each holding 1/n of the GPU (or 1/n of the CPU threads).

    ``env``: the workers' environment (e.g. an MPS pipe directory); ``timeout``: seconds for them all.
    """
    threads = max(1, (os.cpu_count() or 1) // n)
    cmd = [sys.executable, os.path.abspath(__file__), "--root", root, "--device", device, "--steps", str(steps)]
    cmd += ["--worker", str(batch), "--share", str(1 / n), "--threads", str(threads), "--max-clips", str(MAX_CLIPS[0])]
    cmd += ["--crop-seconds", str(CROP[0])]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env) for _ in range(n)]
    deadline = None if timeout is None else time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            left = None if deadline is None else max(1.0, deadline - time.monotonic())
            out, _ = p.communicate(timeout=left)
            if p.returncode != 0:
                raise RuntimeError(f"a packed trial exited with {p.returncode} (its stderr is above)")
            results.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    total = sum(r["clips_per_s"] for r in results)
    return {"trials": n, "clips_per_s_sum": total, "peak_gib_each": max(r.get("peak_gib", 0.0) for r in results)}


def bf16_vs_fp32(root: str, device_name: str, epochs: int, steps: int) -> dict:
    """Train briefly, then score the best checkpoint on dev in fp32 and under bf16 autocast."""
    from sourcetrace.device import resolve_device
    from sourcetrace.training.checkpoint import load_model
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import score_splits, train

    extra = RECIPES[128] | {"train.epochs": epochs, "train.eval_every": epochs, "train.steps_per_epoch": steps}
    cfg = base_config(root, device_name, extra | {"train.warmup_epochs": 1, "train.lr": 1e-3})
    out = tempfile.mkdtemp(prefix="bench_gpu_")
    t0 = time.perf_counter()
    train(cfg, out)
    trained_s = time.perf_counter() - t0
    device = resolve_device(cfg.train.device)
    model = load_model(out, device).model
    data = prepare_data(cfg)
    scores = {"train_s": trained_s}
    for precision in ("fp32", "bf16"):
        c = cfg.with_values({"train.precision": precision})
        t0 = time.perf_counter()
        m = score_splits(model, data, c, device)
        scores[precision] = {"dev_eer": m["dev_eer"], "test_eer": m.get("test_eer"), "eval_s": time.perf_counter() - t0}
    return scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--steps", type=int, default=50, help="timed steps (and as many warm-up steps)")
    ap.add_argument("--epochs", type=int, default=4, help="epochs of the bf16-vs-fp32 training run")
    ap.add_argument("--epoch-steps", type=int, default=50, help="steps per epoch of that run")
    ap.add_argument("--packed-batch", type=int, default=128, choices=sorted(RECIPES), help="batch of the packed trials")
    ap.add_argument("--max-clips", type=int, default=0, help="data.max_clips_per_class (0 = all)")
    ap.add_argument("--crop-seconds", type=float, default=2.0, help="training crop (2 s: the paper's)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["single", "packed", "precision"])
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # one packed trial's batch
    ap.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root, MAX_CLIPS[0], CROP[0] = os.path.abspath(args.root), args.max_clips, args.crop_seconds
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(steps_per_s(root, args.device, args.worker, args.steps, args.share)))
        return
    print(
        f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}",
        flush=True,
    )
    t0 = time.perf_counter()
    if "single" not in args.skip:
        for batch in (128, 24):
            print("one trial:", json.dumps(steps_per_s(root, args.device, batch, args.steps)), flush=True)
    if "packed" not in args.skip:
        result = packed(root, args.device, args.packed_batch, args.steps)
        print(f"4 trials at gpu 0.25, batch {args.packed_batch}:", json.dumps(result), flush=True)
    if "precision" not in args.skip:
        print("bf16 vs fp32:", json.dumps(bf16_vs_fp32(root, args.device, args.epochs, args.epoch_steps)), flush=True)
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
