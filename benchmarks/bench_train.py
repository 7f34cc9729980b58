"""Training throughput of Thin-ResNet-34 on 2 s crops: sourcetrace's pipeline vs voxceleb_trainer's.

- sourcetrace: the corpus decoded once into a resident WaveBank; each batch is one fancy-indexed crop
  of the bank, and the log-Mel features are computed batched on the training device inside the model.
- voxceleb_trainer style: a DataLoader whose workers decode each clip from disk, crop it and compute
  its fbank on the CPU per clip; the model starts from the features.

Two measurements, because on a CPU-only machine the model itself dominates a training step:
  1. the data path alone (clips/s delivered to the model, features included);
  2. full training steps (forward, AAM-Softmax, backward, Adam) with each pipeline.

Usage: .venv/bin/python benchmarks/bench_train.py --root data/demo [--batch 128] [--steps 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from sourcetrace.config import Config, LossConfig
from sourcetrace.data.audio import load_audio
from sourcetrace.data.bank import WaveBank
from sourcetrace.data.protocol import read_protocol
from sourcetrace.features import LogMelFbank
from sourcetrace.losses import LOSSES
from sourcetrace.models.thin_resnet34 import ThinResNet34

SR, CROP = 16000, 32000


class PerClipDataset(Dataset):
    """voxceleb_trainer's loadWAV + per-clip features: decode from disk, random 2 s crop, fbank on CPU."""

    def __init__(self, files, labels, fbank):
        self.files, self.labels, self.fbank = files, labels, fbank

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        wave = load_audio(self.files[i], SR)
        if len(wave) < CROP:
            wave = np.resize(wave, CROP)
        start = np.random.randint(0, len(wave) - CROP + 1)
        with torch.no_grad():
            feats = self.fbank(torch.from_numpy(wave[start : start + CROP].copy())[None])[0]
        return feats, self.labels[i]


def bench_data(bank, loader, batch, steps, fbank):
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for _ in range(steps):
        idx = rng.integers(0, len(bank), batch)
        with torch.no_grad():
            fbank(bank.random_crops(idx, CROP, rng))
    ours = steps * batch / (time.perf_counter() - t0)
    it = iter(loader)
    next(it)  # worker start-up is not throughput
    t0 = time.perf_counter()
    for _ in range(steps):
        next(it)
    theirs = steps * batch / (time.perf_counter() - t0)
    return ours, theirs


def bench_steps(bank, labels, loader, batch, steps, n_classes):
    results = []
    for mode in ("sourcetrace", "voxceleb_trainer"):
        torch.manual_seed(0)
        model = ThinResNet34(embedding_dim=50)
        loss = LOSSES["aamsoftmax"](50, n_classes, LossConfig())
        opt = torch.optim.Adam(list(model.parameters()) + list(loss.parameters()), lr=1e-4)
        rng = np.random.default_rng(0)
        it = iter(loader)
        next(it)
        t0 = time.perf_counter()
        for _ in range(steps):
            if mode == "sourcetrace":
                idx = rng.integers(0, len(bank), batch)
                emb = model(bank.random_crops(idx, CROP, rng))
                target = torch.as_tensor(labels[idx])
            else:
                feats, target = next(it)
                emb = model.embed_fbank(feats)
            out = loss(emb, target)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        results.append(steps * batch / (time.perf_counter() - t0))
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--steps", type=int, default=5, help="training steps per pipeline")
    ap.add_argument("--data-steps", type=int, default=20, help="batches for the data-path measurement")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers of the baseline")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    table = read_protocol(args.root, splits=("train",)).tables["train"]
    files, labels = list(table["file"]), table["label"].to_numpy()
    t0 = time.perf_counter()
    bank = WaveBank.load(files, SR)
    load_s = time.perf_counter() - t0
    audio_h = bank.lengths.sum() / SR / 3600
    print(
        f"train split: {len(files)} clips, {audio_h:.2f} h; decoded once into the bank in {load_s:.1f} s "
        f"({bank.lengths.sum() * 2 / 2**20:.0f} MiB int16)"
    )
    fbank = LogMelFbank(Config().features)
    dataset = PerClipDataset(files, labels, fbank)
    endless = RandomSampler(dataset, replacement=True, num_samples=10**9)  # a small corpus never runs dry
    loader = DataLoader(
        dataset,
        batch_size=args.batch,
        sampler=endless,
        num_workers=args.workers,
        drop_last=True,
        persistent_workers=True,
    )
    ours, theirs = bench_data(bank, loader, args.batch, args.data_steps, fbank)
    print(
        f"data path (crops + log-Mel), batch {args.batch}: sourcetrace {ours:8.0f} clips/s | "
        f"voxceleb_trainer-style DataLoader ({args.workers} workers) {theirs:8.0f} clips/s | {ours / theirs:.1f}x"
    )
    a, b = bench_steps(bank, labels, loader, args.batch, args.steps, int(labels.max()) + 1)
    print(
        f"training steps (fwd + AAM + bwd + Adam), batch {args.batch}, {torch.get_num_threads()} threads: "
        f"sourcetrace {a:6.1f} clips/s | voxceleb_trainer-style {b:6.1f} clips/s | {a / b:.2f}x"
    )


if __name__ == "__main__":
    main()
