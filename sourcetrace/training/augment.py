"""Training-time augmentation: the batch's crops drawn from degraded renderings of the same clips.

``train_crops(cfg, split)`` returns the function the trainer calls for a batch's crops. With
``augment.*`` all zero it is the clean bank's ``random_crops`` itself (nothing changes). Otherwise every
degradation with a probability is rendered once for all training clips (``degrade.render``: real
codecs, simulated replay; cached on disk, so later trials and runs read it back) and decoded into its
own wave bank; each clip of a batch is then drawn from one bank with those probabilities (clean with
the rest), and white noise is added with probability ``augment.noise``. Every draw comes from the
trainer's per-epoch generator, so runs stay reproducible and resumable.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import torch

from sourcetrace.config import Config
from sourcetrace.data.bank import WaveBank

CropFn = Callable[[np.ndarray, int, np.random.Generator], torch.Tensor]


def train_crops(cfg: Config, split) -> CropFn:
    """The crop function of the training split ``split`` (a ``SplitData``) under ``cfg.augment``."""
    aug = cfg.augment
    if not aug.active:
        return split.bank.random_crops
    from sourcetrace.degrade.render import render_files

    sr, cache = cfg.data.sample_rate, os.environ.get("SOURCETRACE_CACHE") or None
    files = list(split.table["file"])
    banks, probs = [split.bank], []
    for name, p in aug.rendered().items():
        rendered = render_files(files, name, aug.seed, sr, progress=True)
        bank = WaveBank.load(rendered, sample_rate=sr, cache_dir=cache)
        if not np.array_equal(bank.lengths, split.bank.lengths):  # renderings keep the decoded length
            raise RuntimeError(f"rendered {name} clips differ in length from their sources")
        banks.append(bank)
        probs.append(p)
    edges = np.cumsum(probs)

    def crops(idx, n_samples: int, rng: np.random.Generator) -> torch.Tensor:
        idx = np.asarray(idx, dtype=np.int64)
        which = np.searchsorted(edges, rng.random(len(idx)), side="right") + 1
        which[which > len(probs)] = 0  # past the last edge: clean
        out = torch.empty(len(idx), n_samples)
        for k in np.unique(which):
            rows = np.flatnonzero(which == k)
            out[rows] = banks[k].random_crops(idx[rows], n_samples, rng)
        return add_noise(out, aug.noise, aug.noise_snr_min, aug.noise_snr_max, rng)

    return crops


def add_noise(wave: torch.Tensor, p: float, snr_min: float, snr_max: float, rng: np.random.Generator) -> torch.Tensor:
    """White noise on each row with probability ``p``, at an SNR (dB) drawn uniformly from [snr_min, snr_max]."""
    if p <= 0:
        return wave
    rows = np.flatnonzero(rng.random(len(wave)) < p)
    if len(rows):
        snr = torch.from_numpy(rng.uniform(snr_min, snr_max, len(rows)).astype(np.float32))
        power = wave[rows].pow(2).mean(1).clamp_min(1e-10)
        noise = torch.from_numpy(rng.standard_normal((len(rows), wave.shape[1])).astype(np.float32))
        wave[rows] = wave[rows] + noise * (power / 10 ** (snr / 10)).sqrt()[:, None]
    return wave
