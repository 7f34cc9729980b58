"""Embeddings of evaluation clips: one centred crop per clip, batched on the model's device.

Evaluation uses a single centred window of ``data.eval_seconds`` (default 6 s; shorter clips are
wrap-padded) rather than the full clip: every batch then has one shape, so embedding 34 k clips is a
few hundred batched forward passes, and long clips do not dominate memory. The paper does not state its
evaluation length; 6 s covers most MLAAD clips whole.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from sourcetrace.data.bank import WaveBank
from sourcetrace.device import autocast_dtype as precision_dtype


@torch.no_grad()
def embed_waves(
    model: torch.nn.Module,
    waves,
    seconds: float = 6.0,
    batch_size: int = 64,
    device: torch.device | str | None = None,
    sample_rate: int = 16000,
    autocast_dtype: torch.dtype | None = None,
    idx: Sequence[int] | None = None,
    on_device: bool = False,
) -> np.ndarray | torch.Tensor:
    """L2-normalised embeddings [n, D] of a WaveBank (its rows ``idx``, default all) or of a list of
    1-D float arrays, cropped exactly as training evaluates (``WaveBank.center_crops``).

    ``seconds=0`` embeds every clip at full length, one clip per forward pass. ``on_device``: a float32
    tensor left on ``device`` (for the all-pairs EER there) instead of a numpy array.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    bank = waves if isinstance(waves, WaveBank) else WaveBank.from_arrays([np.asarray(w) for w in waves], sample_rate)
    rows = np.arange(len(bank)) if idx is None else np.asarray(idx, dtype=np.int64)
    n_samples = int(round(seconds * sample_rate))
    was_training = model.training
    model.eval()
    out = []
    try:
        for batch in _batches(bank, rows, n_samples, batch_size):
            if device.type == "cuda":
                batch = batch.pin_memory()  # cut on the host: page-locked, so the copy overlaps the last batch's work
            batch = batch.to(device, non_blocking=True)
            with torch.autocast(
                device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None
            ):
                emb = model(batch)
            out.append(F.normalize(emb.float(), dim=1))
    finally:
        model.train(was_training)
    emb = torch.cat(out) if out else torch.zeros((0, getattr(model, "embedding_dim", 0)), device=device)
    return emb if on_device else emb.cpu().numpy()


def _batches(bank: WaveBank, rows: np.ndarray, n_samples: int, batch_size: int):
    if n_samples == 0:
        for i in rows:
            yield bank.clip(int(i))[None]
        return
    for start in range(0, len(rows), batch_size):
        yield bank.center_crops(rows[start : start + batch_size], n_samples)


def embed_table(loaded, table, device: torch.device, batch_size: int = 64) -> np.ndarray:
    """Embeddings [n, D] of a protocol table's clips by a ``LoadedModel``: decoded once, one centred crop each."""
    cfg = loaded.config
    cache = os.environ.get("SOURCETRACE_CACHE") or None
    bank = WaveBank.load(list(table["file"]), sample_rate=cfg.data.sample_rate, cache_dir=cache)
    amp = precision_dtype(cfg.train.precision, device)
    return embed_waves(loaded.model, bank, cfg.data.eval_seconds, batch_size, device, cfg.data.sample_rate, amp)
