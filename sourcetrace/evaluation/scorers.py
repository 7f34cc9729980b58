"""Open-set scorers: how "known" a clip is, and how well it matches each known system.

A scorer is fitted on reference (training) embeddings of the known systems. ``score`` returns a
knownness per clip (higher = more likely one of the known systems; the "unknown" threshold is set on
it) and a score per system (higher = better match; its argmax is the attributed system, its order the
top-k). Systems can be enrolled, extended and removed without refitting, and a scorer round-trips
through ``state()`` (numpy arrays and JSON-able values only: no pickle) and ``scorer_from_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from sourcetrace.evaluation.mahalanobis import MahalanobisScorer, RelativeMahalanobisScorer
from sourcetrace.evaluation.scorer_base import (
    OpenSetScorer,
    ScorerError,
    _names,
    _sorted_groups,
    _unit,
    extend_mean,
)
from sourcetrace.registry import lookup

__all__ = ["DEFAULT_SCORER", "SCORERS", "OpenSetScorer", "ScorerError", "fit_scorer", "scorer_from_state"]


class CentroidScorer(OpenSetScorer):
    """Cosine to each system's centroid (the unit-length mean of its unit embeddings); knownness = the
    best one. Means are kept unnormalised with clip counts so that enrolling more clips extends them
    exactly."""

    name = "centroid"
    knownness_range = (-1.0, 1.0)  # a cosine of unit vectors
    score_label = "cosine to the nearest centroid"

    def __init__(self, systems: list[str], means: np.ndarray, counts: np.ndarray):
        self.systems, self.means, self.counts = list(systems), np.asarray(means, np.float32), np.asarray(counts)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @classmethod
    def fit(cls, embeddings: Any, systems: Sequence[str], **params: Any) -> CentroidScorer:
        if params:
            raise ScorerError(f"the centroid scorer takes no parameters, got: {', '.join(sorted(params))}")
        x = _unit(embeddings)
        names = _names(systems, len(x))
        order = sorted(set(names.tolist()))
        if not order:
            raise ScorerError("no reference embeddings to fit the centroid scorer on")
        means = np.stack([x[names == s].mean(0) for s in order])
        return cls(order, means, np.array([(names == s).sum() for s in order], np.int64))

    def centroids(self) -> np.ndarray:
        """Unit centroids [k, d]."""
        return self.means / np.maximum(np.linalg.norm(self.means, axis=1, keepdims=True), 1e-12)

    def score(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        sims = self._check_query(embeddings) @ self.centroids().T
        return sims.max(1).astype(np.float64), sims

    def add(self, system: str, embeddings: Any) -> None:
        x = self._check_new(system, embeddings)
        if system in self.systems:
            extend_mean(self.means, self.counts, self.systems.index(system), x)
            return
        self.systems.append(system)
        self.means = np.concatenate([self.means, x.mean(0, keepdims=True)])
        self.counts = np.append(self.counts, len(x))
        self._sort()

    def remove(self, system: str) -> None:
        i = self._index(system)
        del self.systems[i]
        self.means, self.counts = np.delete(self.means, i, 0), np.delete(self.counts, i)

    def _sort(self) -> None:
        order = np.argsort(self.systems, kind="stable")
        self.systems = [self.systems[i] for i in order]
        self.means, self.counts = self.means[order], self.counts[order]

    def state(self) -> dict:
        return {"name": self.name, "systems": list(self.systems), "means": self.means.copy(), "counts": self.counts}

    @classmethod
    def from_state(cls, state: dict) -> CentroidScorer:
        cls._check_state_name(state)
        systems, means, counts = (cls._get(state, k, cls.name) for k in ("systems", "means", "counts"))
        means, counts = np.asarray(means, np.float32), np.asarray(counts, np.int64)
        if means.ndim != 2 or len(means) != len(systems) or counts.shape != (len(systems),):
            raise ScorerError(f"centroid state: {len(systems)} systems, means {means.shape}, counts {counts.shape}")
        return cls([str(s) for s in systems], means.copy(), counts.copy())


class KNNScorer(OpenSetScorer):
    """k-nearest neighbours: a system's score is the mean cosine of a clip to its ``k`` nearest reference
    clips of that system (all of them when it has fewer); knownness = the best system's. Training-free
    and makes no assumption about a system's shape (a system with several modes, e.g. one per language,
    is not averaged into one centroid). Default k = 1 (lower dev FPR95 than k = 5 on both demo models)."""

    name = "knn"
    knownness_range = (-1.0, 1.0)  # a mean of cosines
    score_label = "mean cosine to the k nearest reference clips"
    CHUNK = 2048  # query rows per block: bounds memory to CHUNK x reference clips

    def __init__(self, systems: list[str], embeddings: np.ndarray, counts: np.ndarray, k: int = 1):
        if not isinstance(k, int | np.integer) or k < 1:
            raise ScorerError(f"knn scorer: k must be a positive integer, got {k!r}")
        self.systems, self.k = list(systems), int(k)
        self.embeddings, self.counts = np.asarray(embeddings, np.float32), np.asarray(counts, np.int64)

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def fit(cls, embeddings: Any, systems: Sequence[str], k: int = 1) -> KNNScorer:
        x = _unit(embeddings)
        order, grouped, counts = _sorted_groups(x, _names(systems, len(x)))
        return cls(order, grouped, counts, k)

    def score(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        x = self._check_query(embeddings)
        ends = np.cumsum(self.counts)
        per = np.zeros((len(x), len(self.systems)), np.float32)
        for lo in range(0, len(x), self.CHUNK):
            sims = x[lo : lo + self.CHUNK] @ self.embeddings.T
            for j, (start, end) in enumerate(zip(ends - self.counts, ends)):
                kk = min(self.k, end - start)
                block = sims[:, start:end]
                per[lo : lo + self.CHUNK, j] = np.partition(block, end - start - kk, axis=1)[:, -kk:].mean(1)
        return (per.max(1) if len(self.systems) else np.zeros(len(x))).astype(np.float64), per

    def add(self, system: str, embeddings: Any) -> None:
        x = self._check_new(system, embeddings)
        ends = np.cumsum(self.counts)
        if system in self.systems:
            i = self.systems.index(system)
            self.embeddings = np.concatenate([self.embeddings[: ends[i]], x, self.embeddings[ends[i] :]])
            self.counts[i] += len(x)
            return
        i = int(np.searchsorted(np.array(self.systems), system))
        at = int(ends[i - 1]) if i else 0
        self.systems.insert(i, system)
        self.embeddings = np.concatenate([self.embeddings[:at], x, self.embeddings[at:]])
        self.counts = np.insert(self.counts, i, len(x))

    def remove(self, system: str) -> None:
        i = self._index(system)
        end = int(np.cumsum(self.counts)[i])
        self.embeddings = np.delete(self.embeddings, np.arange(end - self.counts[i], end), 0)
        del self.systems[i]
        self.counts = np.delete(self.counts, i)

    def state(self) -> dict:
        return {
            "name": self.name,
            "systems": list(self.systems),
            "k": self.k,
            "embeddings": self.embeddings.copy(),
            "counts": self.counts.copy(),
        }

    @classmethod
    def from_state(cls, state: dict) -> KNNScorer:
        cls._check_state_name(state)
        systems, emb, counts, k = (cls._get(state, key, cls.name) for key in ("systems", "embeddings", "counts", "k"))
        emb, counts = np.asarray(emb, np.float32), np.asarray(counts, np.int64)
        if emb.ndim != 2 or counts.shape != (len(systems),) or counts.sum() != len(emb) or (counts < 1).any():
            raise ScorerError(f"knn state: {len(systems)} systems, counts {counts.tolist()}, embeddings {emb.shape}")
        return cls([str(s) for s in systems], emb.copy(), counts.copy(), int(k))


SCORERS: dict[str, type[OpenSetScorer]] = {
    c.name: c for c in (CentroidScorer, KNNScorer, MahalanobisScorer, RelativeMahalanobisScorer)
}
# Chosen on dev (benchmarks/README.md, open-set scorers): the lowest dev FPR95, of the GE2E model on the earlier
# dev and again of the demo's handed-over model on the dev with its own unseen systems (55.1 % [48.9, 64.9]).
DEFAULT_SCORER = "knn"


def fit_scorer(name: str, embeddings: Any, systems: Sequence[str], **params: Any) -> OpenSetScorer:
    """Fit the scorer registered as ``name``; an unknown name is an error listing the valid ones."""
    return lookup(SCORERS, name, "open-set scorer").fit(embeddings, systems, **params)


def scorer_from_state(state: dict) -> OpenSetScorer:
    """Rebuild a scorer from ``OpenSetScorer.state()`` (which carries the scorer's name)."""
    if not isinstance(state, dict) or "name" not in state:
        raise ScorerError("an open-set scorer state must be a dict with a 'name' entry")
    return lookup(SCORERS, str(state["name"]), "open-set scorer").from_state(state)
