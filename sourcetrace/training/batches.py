"""An epoch's training batches: planned on the host once, cut on the trial's device every step.

``plan_epoch`` draws the epoch's batches (sampler order) and their crop starts from the epoch's generator
in the order the steps consume them, so the crops are those of ``WaveBank.random_crops`` step by step
and a resumed run sees the same ones. ``Crops`` then cuts each step's float32 crops and labels:

* on a GPU, the int16 training bank, its offsets/lengths and the labels live on the device (MLAAD's
  train split is ~1.8 GB); the epoch's indices and starts are uploaded once, and every step gathers and
  converts its crops there: no per-step host work or pageable copy;
* on the CPU, the bank's numpy gather cuts the same crops (a memory-mapped bank stays shared).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import numpy as np
import torch

from sourcetrace.data.bank import _SCALE, WaveBank


@dataclass(frozen=True)
class EpochPlan:
    idx: np.ndarray  # clip rows of every step, concatenated
    starts: np.ndarray  # their crop starts
    bounds: np.ndarray  # step s is rows bounds[s]:bounds[s + 1]

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def step(self, s: int) -> slice:
        return slice(int(self.bounds[s]), int(self.bounds[s + 1]))


def plan_epoch(sampler, steps: int, bank: WaveBank, n_samples: int, rng: np.random.Generator) -> EpochPlan:
    """The first ``steps`` batches of ``sampler`` (set to its epoch) with their crop starts from ``rng``."""
    batches = [np.asarray(b, dtype=np.int64) for b in itertools.islice(iter(sampler), steps)]
    starts = [bank.crop_starts(b, n_samples, rng) for b in batches]  # batch by batch, as random_crops draws
    bounds = np.cumsum([0] + [len(b) for b in batches])
    empty = np.zeros(0, dtype=np.int64)
    return EpochPlan(np.concatenate(batches or [empty]), np.concatenate(starts or [empty]), bounds)


class Crops:
    """Float32 crops [B, n_samples] and int64 labels [B] (or [B, 2]: system, language) of planned steps, on
    ``device``."""

    def __init__(
        self, bank: WaveBank, labels: np.ndarray, n_samples: int, device: torch.device, resident: bool | None = None
    ):
        """``resident``: bank on ``device`` and crops gathered there (default: on any device but the CPU)."""
        self.bank, self.labels, self.n, self.device = bank, np.asarray(labels, dtype=np.int64), n_samples, device
        self.resident = device.type != "cpu" if resident is None else resident
        if self.resident:
            if len(bank) and (bank.lengths <= 0).any():
                raise ValueError("cannot crop an empty clip")
            with warnings.catch_warnings():  # a read-only (memory-mapped) bank: only ever read, copied to the device
                warnings.simplefilter("ignore", UserWarning)
                self.data = torch.from_numpy(bank.data).to(device)
            self.offsets = torch.from_numpy(bank.offsets).to(device)
            self.lengths = torch.from_numpy(bank.lengths).to(device)
            self.label_t = torch.from_numpy(self.labels).to(device)
            self.window = torch.arange(n_samples, device=device)

    def begin_epoch(self, rng: np.random.Generator) -> None:
        """Per-epoch draws beyond the plan (none here; augmentation overrides it)."""

    def upload(self, plan: EpochPlan) -> tuple:
        """The epoch's indices and starts where the steps read them (one copy per epoch on a GPU)."""
        if not self.resident:
            return plan.idx, plan.starts
        both = torch.from_numpy(np.stack([plan.idx, plan.starts]))
        if self.device.type == "cuda":
            both = both.pin_memory()  # an asynchronous copy needs page-locked memory
        both = both.to(self.device, non_blocking=True)
        return both[0], both[1]

    def batch(self, plan: EpochPlan, uploaded: tuple, s: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Crops and labels of step ``s``: wrap-padded like ``WaveBank.random_crops``."""
        rows = plan.step(s)
        idx, starts = uploaded[0][rows], uploaded[1][rows]
        if not self.resident:
            return self.bank.crops_at(idx, starts, self.n), torch.from_numpy(self.labels[idx])
        # clips at least n long: start + j < length; shorter ones start at 0 and repeat (j mod length)
        pos = self.offsets[idx, None] + (starts[:, None] + self.window) % self.lengths[idx, None]
        return self.data[pos].float() * _SCALE, self.label_t[idx]
