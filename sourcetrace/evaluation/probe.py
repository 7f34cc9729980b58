"""The paper's linear probe: one ``nn.Linear`` on frozen embeddings, trained with SGD to name the system.

Protocol (Koutsianos et al. 2025): classes undersampled to 300 clips each (seeded; a class with fewer
keeps all of them, so a small dev split still gives a usable probe), a stratified 80/20 split, SGD lr 0.1
for 50 epochs with cross-entropy; reported as accuracy, macro-F1 and the confusion matrix on the 20 %.
A class with fewer than ``min_count`` clips cannot be both trained and tested: it is left out and listed in
``dropped`` (it still gets an all-zero row and column, so the matrix names every system of the split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score
from sklearn.model_selection import train_test_split


@dataclass
class ProbeResult:
    """Test-split scores of the probe; ``confusion`` rows are true systems, columns predicted ones."""

    accuracy: float
    macro_f1: float
    confusion: pd.DataFrame  # int counts, index/columns = system names (every system given)
    per_class: int  # the cap on clips per class (smaller classes keep all theirs)
    n_train: int
    n_test: int
    systems: list[str]  # classes the probe was trained on
    dropped: dict[str, int] = field(default_factory=dict)  # system -> clips, too few to split
    chance: float = 0.0  # 1 / number of classes

    def metrics(self, prefix: str = "probe_") -> dict[str, float]:
        """Flat float metrics (for MLflow / JSON)."""
        return {
            f"{prefix}accuracy": self.accuracy,
            f"{prefix}macro_f1": self.macro_f1,
            f"{prefix}chance": self.chance,
            f"{prefix}per_class": float(self.per_class),
            f"{prefix}n_classes": float(len(self.systems)),
            f"{prefix}n_train": float(self.n_train),
            f"{prefix}n_test": float(self.n_test),
        }


def undersample(labels: np.ndarray, per_class: int | None, min_count: int, seed: int) -> tuple[np.ndarray, int, dict]:
    """Row indices keeping at most ``per_class`` rows of every class with at least ``min_count`` rows
    (seeded); a smaller class keeps all of its rows. ``per_class=None`` balances every class down to the
    smallest one. Returns (indices, the cap applied, {dropped class: count})."""
    classes, counts = np.unique(labels, return_counts=True)
    dropped = {str(c): int(k) for c, k in zip(classes, counts) if k < min_count}
    kept = [c for c in classes if c not in dropped]
    if len(kept) < 2:
        raise ValueError(
            f"the linear probe needs at least 2 classes with >= {min_count} clips; counts per class: "
            + ", ".join(f"{c}={k}" for c, k in zip(classes, counts))
        )
    kept_counts = counts[np.isin(classes, kept)]
    n = int(min(per_class, kept_counts.max())) if per_class else int(kept_counts.min())
    rng = np.random.default_rng(seed)
    idx = []
    for c in kept:
        rows = np.flatnonzero(labels == c)
        idx.append(rng.choice(rows, size=min(n, len(rows)), replace=False))
    return np.sort(np.concatenate(idx)), n, dropped


def train_linear(
    x: np.ndarray, y: np.ndarray, n_classes: int, epochs: int = 50, lr: float = 0.1, batch_size: int = 32, seed: int = 0
) -> torch.nn.Linear:
    """One linear layer trained with plain SGD and cross-entropy on shuffled mini-batches (seeded, CPU)."""
    gen = torch.Generator().manual_seed(seed)
    torch_state = torch.random.get_rng_state()
    torch.manual_seed(seed)  # nn.Linear's init draws from the global generator
    layer = torch.nn.Linear(x.shape[1], n_classes)
    torch.random.set_rng_state(torch_state)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y, dtype=torch.int64)
    opt = torch.optim.SGD(layer.parameters(), lr=lr)
    loss_fn = torch.nn.CrossEntropyLoss()
    for _ in range(epochs):
        for batch in torch.randperm(len(xt), generator=gen).split(batch_size):
            opt.zero_grad(set_to_none=True)
            loss_fn(layer(xt[batch]), yt[batch]).backward()
            opt.step()
    return layer.eval()


def linear_probe(
    embeddings: Any,
    systems: Sequence[str],
    per_class: int | None = 300,
    test_size: float = 0.2,
    epochs: int = 50,
    lr: float = 0.1,
    batch_size: int = 32,
    min_count: int = 2,
    seed: int = 0,
) -> ProbeResult:
    """Fit and score the paper's probe on ``embeddings`` [n, D] labelled by system name.

    ``per_class=None`` balances every class down to the smallest eligible one.
    """
    x = np.asarray(embeddings, dtype=np.float32)
    names = np.asarray(systems).astype(str)
    if x.ndim != 2 or len(names) != len(x):
        raise ValueError(f"need embeddings [n, d] and n system names; got {x.shape} and {len(names)} names")
    if not np.isfinite(x).all():
        raise ValueError(f"embedding row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])} is not finite")
    idx, n, dropped = undersample(names, per_class, max(min_count, 2), seed)
    kept = sorted(set(names[idx]))
    code = {s: i for i, s in enumerate(kept)}
    y = np.array([code[s] for s in names[idx]])
    n_test = max(len(kept), int(round(test_size * len(idx))))  # stratified: at least one per class
    n_test = min(n_test, len(idx) - len(kept))  # and at least one per class left to train on
    tr, te = train_test_split(np.arange(len(idx)), test_size=n_test, stratify=y, random_state=seed)
    layer = train_linear(x[idx][tr], y[tr], len(kept), epochs, lr, batch_size, seed)
    with torch.no_grad():
        pred = layer(torch.as_tensor(x[idx][te])).argmax(1).numpy()
    every = sorted(set(names))
    true_names, pred_names = np.array(kept)[y[te]], np.array(kept)[pred]
    cm = confusion_matrix(true_names, pred_names, labels=every)
    return ProbeResult(
        accuracy=float(accuracy_score(y[te], pred)),
        macro_f1=float(f1_score(y[te], pred, average="macro", labels=np.arange(len(kept)), zero_division=0)),
        confusion=pd.DataFrame(cm, index=pd.Index(every, name="true"), columns=pd.Index(every, name="predicted")),
        per_class=n,
        n_train=len(tr),
        n_test=len(te),
        systems=kept,
        dropped=dropped,
        chance=1.0 / len(kept),
    )


def confusion_long(confusion: pd.DataFrame) -> pd.DataFrame:
    """Long table (true, predicted, count, row_fraction) of a confusion matrix: a plain parquet layout."""
    counts = confusion.to_numpy()
    rows = counts.sum(1, keepdims=True)
    frac = np.divide(counts, rows, out=np.zeros(counts.shape, float), where=rows > 0)
    t, p = np.meshgrid(np.arange(len(confusion.index)), np.arange(len(confusion.columns)), indexing="ij")
    return pd.DataFrame(
        {
            "true": np.asarray(confusion.index, dtype=object)[t.ravel()],
            "predicted": np.asarray(confusion.columns, dtype=object)[p.ravel()],
            "count": counts.ravel().astype(np.int64),
            "row_fraction": frac.ravel(),
        }
    )
