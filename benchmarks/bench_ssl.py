"""Training steps/s, clips/s and peak memory of w2v2_aasist with random weights (no download needed).

Full size = XLS-R 300M (``XLSR_300M_CONFIG``) + AASIST, bf16 autocast, Adam, the project's AAM-softmax
over 24 classes (MLAAD's training systems), the paper's batch 32 of 2 s crops; also evaluation
throughput (no_grad, 6 s crops). ``--size tiny`` runs the test suite's tiny wav2vec2 anywhere (CPU).

    python benchmarks/bench_ssl.py                      # full size on CUDA, tiny on CPU
    python benchmarks/bench_ssl.py --finetune top --top-layers 4 --grad-ckpt --batch 64
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from transformers import Wav2Vec2Config

from sourcetrace.config import Config
from sourcetrace.losses import LOSSES
from sourcetrace.models.aasist import W2V2AASIST
from sourcetrace.models.w2v2 import XLSR_300M_CONFIG

TINY = Wav2Vec2Config(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=37,
    conv_dim=(16, 16, 16),
    conv_kernel=(10, 8, 8),
    conv_stride=(5, 8, 8),
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
    do_stable_layer_norm=True,
    feat_extract_norm="layer",
    conv_bias=True,
)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(args: argparse.Namespace) -> dict:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    size = args.size if args.size != "auto" else ("full" if device.type == "cuda" else "tiny")
    precision = args.precision if args.precision != "auto" else ("bf16" if device.type == "cuda" else "fp32")
    amp = {"bf16": torch.bfloat16, "fp32": None}[precision]
    cfg = Config.from_dict(
        {
            "model.name": "w2v2_aasist",
            "model.embedding_dim": args.dim,
            "ssl.finetune": args.finetune,
            "ssl.top_layers": args.top_layers,
            "ssl.grad_checkpointing": args.grad_ckpt,
            "ssl.layer": args.layer,
        }
    )
    torch.manual_seed(0)
    model = W2V2AASIST.from_config(cfg, XLSR_300M_CONFIG if size == "full" else TINY).to(device)
    loss_fn = LOSSES["aamsoftmax"](args.dim, 24, cfg.loss).to(device)
    opt = torch.optim.Adam(model.trainable_parameters() + list(loss_fn.parameters()), lr=1e-4)
    wave = torch.randn(args.batch, int(args.seconds * 16000), device=device)
    labels = torch.randint(0, 24, (args.batch,), device=device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def step() -> float:
        with torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            emb = model(wave)
        loss = loss_fn(emb.float(), labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    model.train()
    for _ in range(args.warmup):
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    _sync(device)
    train_s = (time.perf_counter() - t0) / args.steps
    train_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0

    model.eval()
    eval_wave = torch.randn(args.eval_batch, int(args.eval_seconds * 16000), device=device)
    with torch.no_grad(), torch.autocast(device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
        model(eval_wave)
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(args.eval_steps):
            model(eval_wave)
        _sync(device)
    eval_s = (time.perf_counter() - t0) / args.eval_steps
    counts = model.parameter_counts()
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "size": size,
        "precision": precision,
        "finetune": args.finetune,
        "grad_ckpt": args.grad_ckpt,
        "batch": args.batch,
        "seconds": args.seconds,
        "params_total": counts["total"],
        "params_trainable": counts["trainable"],
        "train_steps_per_s": 1 / train_s,
        "train_clips_per_s": args.batch / train_s,
        "train_peak_gib": train_peak / 2**30,
        "eval_clips_per_s": args.eval_batch / eval_s,
        "eval_batch": args.eval_batch,
        "eval_seconds": args.eval_seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("auto", "full", "tiny"), default="auto")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto")  # auto: bf16 on CUDA
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seconds", type=float, default=2.0)
    p.add_argument("--dim", type=int, default=50)
    p.add_argument("--finetune", choices=("full", "frozen", "top"), default="full")
    p.add_argument("--top-layers", type=int, default=0)
    p.add_argument("--layer", type=int, default=-1)
    p.add_argument("--grad-ckpt", action="store_true")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--eval-batch", type=int, default=64)
    p.add_argument("--eval-seconds", type=float, default=6.0)
    p.add_argument("--eval-steps", type=int, default=5)
    args = p.parse_args(argv)
    result = bench(args)
    print(
        f"{result['size']} w2v2_aasist on {result['device']} ({result['precision']}, finetune={result['finetune']}, "
        f"grad_ckpt={result['grad_ckpt']}): {result['params_total'] / 1e6:.2f} M params "
        f"({result['params_trainable'] / 1e6:.2f} M trainable)\n"
        f"  train: batch {result['batch']} x {result['seconds']} s: {result['train_steps_per_s']:.2f} steps/s, "
        f"{result['train_clips_per_s']:.1f} clips/s, peak {result['train_peak_gib']:.2f} GiB\n"
        f"  eval:  batch {result['eval_batch']} x {result['eval_seconds']} s: {result['eval_clips_per_s']:.1f} clips/s"
    )
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
