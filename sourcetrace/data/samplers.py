"""Batch samplers: ``SAMPLERS[name](labels, batch_size, per_class, seed)`` yields index batches.

Both are deterministic per ``(seed, epoch)`` (``np.random.default_rng((seed, epoch))``), so a run
resumed at epoch e sees exactly the batches an uninterrupted run would. Call ``set_epoch(e)``
before iterating. Every batch is an ``np.ndarray[int64]`` of ``batch_size`` indices into ``labels``.

>>> labels = np.repeat(np.arange(4), [2, 3, 5, 9])
>>> s = BalancedSampler(labels, batch_size=4, per_class=2, seed=0)
>>> s.set_epoch(1)
>>> batches = list(s)
>>> len(batches) == len(s), set(np.concatenate(batches)) == set(range(len(labels)))
(True, True)
>>> all(len(set(labels[b])) == 2 for b in batches)
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np


def _check_labels(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    return labels


class RandomSampler:
    """A fresh permutation of all clips each epoch, cut into ``batch_size`` batches.

    The incomplete last batch is dropped: ``len(labels) % batch_size`` (< batch_size) clips are
    skipped per epoch, different ones each epoch because the permutation changes. ``per_class``
    is accepted for a uniform signature and ignored.
    """

    params: tuple[str, ...] = ()  # the ``sampler.*`` keys it reads besides the name

    def __init__(self, labels: np.ndarray, batch_size: int, per_class: int = 1, seed: int = 0):
        self.labels = _check_labels(labels)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.per_class, self.seed, self.epoch = int(batch_size), int(per_class), int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        perm = rng.permutation(len(self.labels)).astype(np.int64)
        for b in range(len(self)):
            yield perm[b * self.batch_size : (b + 1) * self.batch_size]


class BalancedSampler:
    """Batches of ``m = batch_size / per_class`` distinct classes x ``per_class`` clips each.

    Every clip of every class is used at least once per epoch, for any ``m`` up to the number of
    classes and for imbalanced classes (unlike voxceleb_trainer's sampler, which drops groups and
    yields nothing once ``m`` exceeds what the data allows). Per epoch:

    1. Each class's clips are shuffled and cut into groups of ``per_class``. An incomplete last
       group is topped up with distinct random clips of the same class not in that group
       (repeats #1). A class with fewer than ``per_class`` clips forms one group: all its clips
       plus clips drawn with replacement from itself (so that clip occurs twice in the batch).
    2. Groups are packed greedily: each batch takes one group from each of the ``m`` classes with
       the most groups left (ties broken at random). This needs exactly
       ``max(ceil(G / m), max_c G_c)`` batches (G groups in all, G_c of class c), the minimum
       possible with distinct classes per batch.
    3. When fewer than ``m`` classes have groups left, the batch is topped up with extra groups
       of ``per_class`` clips re-drawn at random (without replacement within the group) from
       classes whose groups are used up (repeats #2). Their number is ``len(self) * m - G``.

    The only duplicates in an epoch are those two kinds of re-drawn clips; ``repeat_fraction``
    gives their share of all yielded indices. Within a batch, clips are laid out class by class:
    ``batch.reshape(m, per_class)`` has one class per row. Batch order is shuffled.
    """

    params = ("per_class",)

    def __init__(self, labels: np.ndarray, batch_size: int, per_class: int = 2, seed: int = 0):
        self.labels = _check_labels(labels)
        if per_class < 1:
            raise ValueError(f"per_class must be >= 1, got {per_class}")
        if batch_size < per_class or batch_size % per_class:
            raise ValueError(
                f"batch_size={batch_size} is not a positive multiple of per_class={per_class}: a balanced "
                "batch is (batch_size / per_class) classes x per_class clips"
            )
        self.classes, inverse = np.unique(self.labels, return_inverse=True)
        self.classes_per_batch = batch_size // per_class
        if self.classes_per_batch > len(self.classes):
            raise ValueError(
                f"batch_size={batch_size} / per_class={per_class} = {self.classes_per_batch} distinct classes per "
                f"batch, but the labels hold only {len(self.classes)} classes"
            )
        self.batch_size, self.per_class, self.seed, self.epoch = int(batch_size), int(per_class), int(seed), 0
        order = np.argsort(inverse, kind="stable")
        counts = np.bincount(inverse, minlength=len(self.classes))
        self._members = np.split(order.astype(np.int64), np.cumsum(counts)[:-1])
        self._groups = np.maximum(1, -(-counts // per_class))  # G_c = ceil(n_c / k), at least 1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        m = self.classes_per_batch
        return int(max(math.ceil(int(self._groups.sum()) / m), int(self._groups.max())))

    @property
    def repeat_fraction(self) -> float:
        """Share of yielded indices that re-use a clip already drawn this epoch (same every epoch)."""
        total = len(self) * self.batch_size
        return (total - len(self.labels)) / total

    def _class_groups(self, rng: np.random.Generator) -> list[list[np.ndarray]]:
        k, out = self.per_class, []
        for members in self._members:
            perm = rng.permutation(members)
            if len(perm) < k:  # too few clips: all of them plus draws with replacement
                groups = [np.concatenate([perm, rng.choice(members, k - len(perm), replace=True)])]
            else:
                groups = [perm[i : i + k] for i in range(0, len(perm), k)]
                short = k - len(groups[-1])
                if short:
                    rest = perm[: len(perm) - len(groups[-1])]  # clips not in the last group
                    groups[-1] = np.concatenate([groups[-1], rng.choice(rest, short, replace=False)])
            out.append(groups)
        return out

    def _redraw(self, c: int, rng: np.random.Generator) -> np.ndarray:
        members = self._members[c]
        return rng.choice(members, self.per_class, replace=len(members) < self.per_class)

    def __iter__(self) -> Iterator[np.ndarray]:
        rng = np.random.default_rng((self.seed, self.epoch))
        groups = self._class_groups(rng)
        left = np.array([len(g) for g in groups])
        m, n_classes = self.classes_per_batch, len(self.classes)
        batches = []
        while left.any():
            tie = rng.random(n_classes)
            top = np.lexsort((tie, -left))[:m]  # most groups left first, random among ties
            take = [int(c) for c in top if left[c] > 0]
            parts = []
            for c in take:
                left[c] -= 1
                parts.append(groups[c][left[c]])
            if len(take) < m:  # top up with groups re-drawn from used-up classes
                spare = np.setdiff1d(np.arange(n_classes), take)
                for c in rng.choice(spare, m - len(take), replace=False):
                    parts.append(self._redraw(int(c), rng))
            batches.append(np.concatenate(parts).astype(np.int64))
        for i in rng.permutation(len(batches)):
            yield batches[i]


def voxceleb_epoch_steps(
    labels: np.ndarray, batch_size: int, per_class: int, seed: int = 0, max_per_class: int = 500
) -> int:
    """Batches in one epoch of voxceleb_trainer's balanced sampler (the paper's code), replayed on ``labels``.

    It keeps at most ``max_per_class`` clips of a class (its ``max_seg_per_spk``), cuts them into groups of
    ``per_class``, shuffles the groups and drops every group whose class is already in the batch being
    filled; the incomplete last batch goes too. A budget in these steps compares with the paper's epochs.

    >>> voxceleb_epoch_steps(np.repeat(np.arange(3), 4), batch_size=4, per_class=2) <= 3
    True
    """
    labels = _check_labels(labels)
    m = batch_size // per_class  # classes per batch
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    groups = np.repeat(np.arange(len(classes)), np.minimum(counts, max_per_class) // per_class)
    kept: list[int] = []
    for c in groups[rng.permutation(len(groups))]:
        if c not in kept[len(kept) // m * m :]:
            kept.append(int(c))
    return len(kept) // m


SAMPLERS: dict[str, type] = {"random": RandomSampler, "balanced": BalancedSampler}
