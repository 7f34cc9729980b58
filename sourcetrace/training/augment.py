"""Training-time augmentation: the batch's crops drawn from degraded renderings of the same clips.

``train_crops(cfg, split, ...)`` returns the ``Crops`` the trainer cuts each step's batch from. With
``augment.*`` all zero it is the plain ``training.batches.Crops`` (nothing changes). Otherwise every
degradation with a probability is rendered once for all training clips (``degrade.render``: real
codecs, simulated replay; cached on disk, so later trials and runs read it back) and decoded into its
own wave bank; each clip of a batch is then drawn from one bank with those probabilities (clean with
the rest), and white noise is added with probability ``augment.noise``. Every draw comes from the
trainer's per-epoch generator, so runs stay reproducible and resumable.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from sourcetrace.config import Config
from sourcetrace.data.bank import WaveBank
from sourcetrace.training.batches import Crops


def train_crops(cfg: Config, split, labels: np.ndarray, n_samples: int, device: torch.device) -> Crops:
    """The training batches' crops of ``split`` (a ``SplitData``) under ``cfg.augment``: ``Crops`` when off."""
    aug = cfg.augment
    if not aug.active:
        return Crops(split.bank, labels, n_samples, device)
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
    return AugmentedCrops(banks, probs, cfg, labels, n_samples, device)


class AugmentedCrops(Crops):
    """Each clip of a step cut from the clean bank or one rendering (same planned start), noise on top.

    Cut on the host (renderings are not made device-resident), then moved to the trial's device; the draws
    come from the epoch's generator after the plan's crop starts, so a resumed run sees the same batches.
    """

    def __init__(self, banks: list[WaveBank], probs: list[float], cfg: Config, labels, n_samples: int, device):
        super().__init__(banks[0], labels, n_samples, device, resident=False)
        self.banks, self.edges, self.aug = banks, np.cumsum(probs), cfg.augment
        self.rng = np.random.default_rng(cfg.train.seed)

    def begin_epoch(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def batch(self, plan, uploaded: tuple, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = plan.step(s)
        idx, starts = uploaded[0][rows], uploaded[1][rows]
        which = np.searchsorted(self.edges, self.rng.random(len(idx)), side="right") + 1
        which[which > len(self.edges)] = 0  # past the last edge: clean
        out = torch.empty(len(idx), self.n)
        for k in np.unique(which):
            r = np.flatnonzero(which == k)
            out[r] = self.banks[k].crops_at(idx[r], starts[r], self.n)
        out = add_noise(out, self.aug.noise, self.aug.noise_snr_min, self.aug.noise_snr_max, self.rng)
        return to_device(out, self.device), to_device(torch.from_numpy(self.labels[idx]), self.device)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on the trial's device (through page-locked memory on a GPU, so the copy is asynchronous)."""
    if t.device == device:
        return t
    if device.type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=device.type == "cuda")


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
