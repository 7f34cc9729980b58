"""The featureless baseline: per-clip MFCC statistics, standardised, scored by cosine like any model.

Each clip (the same decoded clip and centred ``data.eval_seconds`` window the models embed) becomes the
mean and standard deviation over frames of 30 MFCCs and their deltas (torchaudio): 120 numbers, no
training. Standardisation: every dimension is z-scored with the mean and std of the clips of the split
being scored (no labels are used; reference clips for the open-set scores are z-scored with the same
statistics, so both live in one space). The vectors then go through the same scorers as a model's
embeddings (``split_metrics``: all-pairs EER / minDCF overall and per condition; ``openset_metrics``).
A learned extractor is worth using only where it beats this row.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> waves = [rng.standard_normal(8000).astype(np.float32) * s for s in (0.1, 0.1, 0.5, 0.5)]
>>> clip_features(waves, seconds=0.5).shape
(4, 120)
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import torch

from sourcetrace.data.bank import WaveBank
from sourcetrace.data.protocol import read_checked
from sourcetrace.degrade.render import with_renderings
from sourcetrace.evaluation.conditions import split_metrics
from sourcetrace.evaluation.openset import openset_metrics

NAME = "baseline (MFCC stats)"  # the row label in every table
N_MFCC = 30


def _mfcc(sample_rate: int):
    import torchaudio

    return torchaudio.transforms.MFCC(
        sample_rate=sample_rate,
        n_mfcc=N_MFCC,
        melkwargs={"n_fft": 512, "win_length": 400, "hop_length": 160, "n_mels": 40, "f_min": 20.0, "f_max": 7600.0},
    )


@torch.no_grad()
def clip_features(waves, seconds: float = 6.0, sample_rate: int = 16000, idx=None, batch_size: int = 64) -> np.ndarray:
    """[n, 120] float32: mean and std over frames of 30 MFCCs and their deltas, one centred crop per clip.

    ``waves``: a WaveBank (rows ``idx``, default all) or a list of 1-D arrays; ``seconds=0`` = full clips.
    """
    from torchaudio.functional import compute_deltas

    bank = waves if isinstance(waves, WaveBank) else WaveBank.from_arrays([np.asarray(w) for w in waves], sample_rate)
    rows = np.arange(len(bank)) if idx is None else np.asarray(idx, dtype=np.int64)
    n = int(round(seconds * sample_rate))
    mfcc = _mfcc(sample_rate)
    out = []
    chunks = [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)] if n else [[r] for r in rows]
    for chunk in chunks:
        wave = bank.center_crops(chunk, n) if n else bank.clip(int(chunk[0]))[None]
        m = mfcc(wave)  # [B, 30, frames]
        feats = torch.cat([m, compute_deltas(m)], dim=1)
        out.append(torch.cat([feats.mean(-1), feats.std(-1)], dim=1))
    return torch.cat(out).numpy().astype(np.float32) if out else np.zeros((0, 4 * N_MFCC), np.float32)


def standardise(x: np.ndarray, stats_from: np.ndarray | None = None) -> np.ndarray:
    """z-score every column with the mean/std of ``stats_from`` (default: ``x`` itself)."""
    ref = x if stats_from is None else stats_from
    mean, std = ref.mean(0), ref.std(0)
    return ((x - mean) / np.where(std > 1e-8, std, 1.0)).astype(np.float32)


def baseline_metrics(
    prefix: str,
    bank: WaveBank,
    table: pd.DataFrame,
    ref: tuple[WaveBank, pd.DataFrame] | None = None,
    known_systems=None,
    seconds: float = 6.0,
    sample_rate: int = 16000,
) -> dict[str, float]:
    """The baseline's ``{prefix}_eer``, minDCF and per-condition EERs of one split, plus open-set metrics
    (``{prefix}_openset_*``) against the centroids of ``ref`` (training clips) when given."""

    raw = clip_features(bank, seconds, sample_rate)
    emb = standardise(raw)
    metrics = split_metrics(prefix, emb, table)
    if ref is not None:
        ref_bank, ref_table = ref
        ref_emb = standardise(clip_features(ref_bank, seconds, sample_rate), stats_from=raw)
        known = list(known_systems) if known_systems is not None else None
        res = openset_metrics(ref_emb, ref_table["system"].to_numpy(dtype=str), emb, table["system"], known)
        metrics.update(res.metrics(f"{prefix}_openset_"))
    return metrics


def table_baseline(
    prefix: str, table: pd.DataFrame, ref_table: pd.DataFrame | None, known_systems, seconds: float, sample_rate: int
) -> dict[str, float]:
    """``baseline_metrics`` of protocol tables (decoded here, through the shared bank cache when set)."""
    cache = os.environ.get("SOURCETRACE_CACHE") or None

    def bank(t):
        return WaveBank.load(list(t["file"]), sample_rate=sample_rate, cache_dir=cache)

    ref = (bank(ref_table), ref_table) if ref_table is not None else None
    return baseline_metrics(prefix, bank(table), table, ref, known_systems, seconds, sample_rate)


def corpus_baseline(
    root: str,
    protocol: str | None = None,
    splits: dict[str, str] | None = None,
    train_split: str = "train",
    seconds: float = 6.0,
    sample_rate: int = 16000,
    renderings: dict[str, list[str]] | None = None,
    render_seed: int = 0,
) -> dict[str, float]:
    """Baseline metrics of a corpus's splits, ``{prefix: split}`` (default dev -> ``dev_*``, eval -> ``test_*``),
    with the open-set references from ``train_split``; ``renderings`` {prefix: names} adds those renderings
    of a split's clips to it (``data.dev_degrade``)."""

    splits = splits or {"dev": "dev", "test": "eval"}
    proto = read_checked(root, protocol, (train_split, *splits.values()))
    metrics: dict[str, float] = {}
    for prefix, split in splits.items():
        t = proto.tables[split]
        if (renderings or {}).get(prefix):  # scored as the trials score it: clean clips and their renderings
            t = with_renderings(t, renderings[prefix], render_seed, sample_rate)
        metrics.update(table_baseline(prefix, t, proto.tables[train_split], proto.known_systems, seconds, sample_rate))
    return metrics


BASELINE_FILE = "baseline.json"
