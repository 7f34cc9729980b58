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


def base_config(root: str, device: str, extra: dict):
    from sourcetrace.config import Config

    fixed = {"data.root": root, "train.device": device, "data.crop_seconds": 2.0, "data.short_clips": "pad"}
    return Config.from_dict(fixed | {"data.max_clips_per_class": MAX_CLIPS[0]} | extra)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_s(root: str, device_name: str, batch: int, steps: int, share: float = 1.0) -> dict:
    """One trial's training steps, timed after as many warm-up steps (cuDNN autotuning, allocator)."""
    from sourcetrace.data.samplers import SAMPLERS
    from sourcetrace.device import resolve_device, share_gpu_memory
    from sourcetrace.losses import LOSSES
    from sourcetrace.models import build_model
    from sourcetrace.training.batches import Crops, plan_epoch
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import autocast_dtype, lr_lambda
    from sourcetrace.training.steps import optimizer_for, speed_up, train_epoch

    cfg = base_config(root, device_name, RECIPES[batch] | {"train.warmup_epochs": 0})
    device = resolve_device(cfg.train.device)
    share_gpu_memory(device, share)
    data = prepare_data(cfg)
    torch.manual_seed(0)
    model = build_model(cfg).to(device)
    step_model = speed_up(model, cfg, device)
    loss_fn = LOSSES[cfg.loss.name](model.embedding_dim, len(data.known_systems), cfg.loss).to(device)
    params = [p for p in list(model.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = optimizer_for(cfg, params, device)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, steps))
    amp = autocast_dtype(cfg, device)
    scaler = torch.amp.GradScaler(device.type, enabled=amp is torch.float16)
    labels = data.train.labels
    sampler = SAMPLERS[cfg.sampler.name](labels, batch, cfg.sampler.per_class, 0)
    crop = int(round(cfg.data.crop_seconds * cfg.data.sample_rate))
    crops = Crops(data.train.bank, labels, crop, device)
    run = (step_model, loss_fn, optimizer, scheduler, scaler, params, crops)
    rng = np.random.default_rng(0)

    def epoch(e: int) -> tuple[float, int]:
        sampler.set_epoch(e)  # a small corpus: several sampler passes make up the steps
        plans = []
        while sum(len(p) for p in plans) < steps:
            plans.append(plan_epoch(sampler, steps - sum(len(p) for p in plans), data.train.bank, crop, rng))
            sampler.set_epoch(e + 1000 * len(plans))
        sync(device)
        t0 = time.perf_counter()
        seen = sum(train_epoch(*run, plan, cfg, e, amp).seen for plan in plans)
        sync(device)
        return time.perf_counter() - t0, seen

    epoch(1)  # warm-up
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, seen = epoch(2)
    out = {"batch": batch, "steps_per_s": steps / seconds, "clips_per_s": seen / seconds, "device": str(device)}
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        out["name"] = torch.cuda.get_device_name(device)
    return out


def packed(root: str, device: str, batch: int, steps: int, n: int = 4) -> dict:
    """``n`` trial processes at once, each holding 1/n of the GPU (or 1/n of the CPU threads)."""
    threads = max(1, (os.cpu_count() or 1) // n)
    cmd = [sys.executable, __file__, "--root", root, "--device", device, "--steps", str(steps)]
    cmd += ["--worker", str(batch), "--share", str(1 / n), "--threads", str(threads), "--max-clips", str(MAX_CLIPS[0])]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    results = [json.loads(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    total = sum(r["clips_per_s"] for r in results)
    return {"trials": n, "clips_per_s_sum": total, "peak_gib_each": max(r.get("peak_gib", 0.0) for r in results)}


def bf16_vs_fp32(root: str, device_name: str, epochs: int, steps: int) -> dict:
    """Train briefly, then score the best checkpoint on dev in fp32 and under bf16 autocast."""
    from sourcetrace.device import resolve_device
    from sourcetrace.training.checkpoint import load_model
    from sourcetrace.training.data import prepare_data
    from sourcetrace.training.loop import evaluate, train

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
        m = evaluate(model, data, c, device)
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
    ap.add_argument("--skip", nargs="*", default=[], choices=["single", "packed", "precision"])
    ap.add_argument("--worker", type=int, default=0, help=argparse.SUPPRESS)  # one packed trial's batch
    ap.add_argument("--share", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    root, MAX_CLIPS[0] = os.path.abspath(args.root), args.max_clips
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(steps_per_s(root, args.device, args.worker, args.steps, args.share)))
        return
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {torch.cuda.is_available()}")
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
