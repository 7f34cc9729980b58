"""Embeddings of evaluation clips: one centred crop per clip, batched on the model's device.

Evaluation uses a single centred window of ``data.eval_seconds`` (default 6 s; shorter clips are
wrap-padded) rather than the full clip: every batch then has one shape, so embedding 34 k clips is a
few hundred batched forward passes, and long clips do not dominate memory. The paper does not state its
evaluation length; 6 s covers most MLAAD clips whole.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


@torch.no_grad()
def embed_waves(
    model: torch.nn.Module,
    waves,
    seconds: float = 6.0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    sample_rate: int = 16000,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """L2-normalised embeddings [n, D] of a WaveBank or a list of 1-D float arrays.

    ``seconds=0`` embeds every clip at full length, one clip per forward pass.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_samples = int(round(seconds * sample_rate))
    out = []
    try:
        if isinstance(waves, (list, tuple)):
            batches = _list_batches(waves, n_samples, batch_size)
        else:
            batches = _bank_batches(waves, n_samples, batch_size)
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
                emb = model(batch)
            out.append(F.normalize(emb.float(), dim=1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, getattr(model, "embedding_dim", 0)), np.float32)


def _bank_batches(bank, n_samples: int, batch_size: int):
    idx = np.arange(len(bank))
    if n_samples == 0:
        for i in idx:
            yield bank.clip(int(i))[None]
        return
    for start in range(0, len(idx), batch_size):
        yield bank.center_crops(idx[start : start + batch_size], n_samples)


def _list_batches(waves: Sequence[np.ndarray], n_samples: int, batch_size: int):
    if n_samples == 0:
        for w in waves:
            yield torch.as_tensor(np.asarray(w, dtype=np.float32))[None]
        return
    crops = [_center_crop(np.asarray(w, dtype=np.float32), n_samples) for w in waves]
    for start in range(0, len(crops), batch_size):
        yield torch.from_numpy(np.stack(crops[start : start + batch_size]))


def _center_crop(wave: np.ndarray, n: int) -> np.ndarray:
    """Centred window of n samples; shorter clips are wrap-padded (as WaveBank.center_crops)."""
    if len(wave) >= n:
        start = (len(wave) - n) // 2
        return wave[start : start + n]
    return np.resize(wave, n)  # np.resize repeats the clip: wrap padding
