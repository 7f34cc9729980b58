"""Gaussian open-set scorers: Mahalanobis distance to each system's mean under one shared covariance, and
its relative form (Ren et al. 2021). See ``scorers`` for the contract every scorer honours."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sourcetrace.evaluation.scorer_base import OpenSetScorer, ScorerError, _names, _sorted_groups, _unit, extend_mean


class MahalanobisScorer(OpenSetScorer):
    """Class-conditional Gaussians on unit embeddings with one shared covariance (Ledoit-Wolf shrunk, so it
    is well conditioned with few clips per dimension); a system's score is minus the squared Mahalanobis
    distance to its mean. Enrolling moves or adds means only: the shared covariance stays as fitted."""

    name = "mahalanobis"
    knownness_range = (-math.inf, 0.0)  # minus a squared distance
    score_label = "minus the squared Mahalanobis distance to the nearest system"

    def __init__(self, systems: list[str], means: np.ndarray, counts: np.ndarray, precision: np.ndarray):
        self.systems, self.means = list(systems), np.asarray(means, np.float64)
        self.counts, self.precision = np.asarray(counts, np.int64), np.asarray(precision, np.float64)

    @property
    def dim(self) -> int:
        return int(self.means.shape[1])

    @staticmethod
    def _gaussians(x: np.ndarray, names: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        from sklearn.covariance import LedoitWolf

        order, grouped, counts = _sorted_groups(x, names)
        labels = np.repeat(np.arange(len(order)), counts)
        means = np.stack([grouped[labels == j].mean(0) for j in range(len(order))]).astype(np.float64)
        if len(x) <= len(order):
            raise ScorerError(f"a shared covariance needs more clips ({len(x)}) than systems ({len(order)})")
        cov = LedoitWolf(assume_centered=True).fit(grouped - means[labels]).covariance_
        return order, means, counts, np.linalg.pinv(cov, hermitian=True)

    @classmethod
    def fit(cls, embeddings: Any, systems: Sequence[str], **params: Any) -> MahalanobisScorer:
        if params:
            raise ScorerError(f"the {cls.name} scorer takes no parameters, got: {', '.join(sorted(params))}")
        x = _unit(embeddings)
        return cls(*cls._gaussians(x.astype(np.float64), _names(systems, len(x))))

    def _distances(self, x: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
        xp = x @ precision
        quad = (xp * x).sum(1, keepdims=True)
        return quad - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None, :]

    def score(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        per = -self._distances(self._check_query(embeddings).astype(np.float64), self.means, self.precision)
        return per.max(1), per

    def add(self, system: str, embeddings: Any) -> None:
        x = self._check_new(system, embeddings).astype(np.float64)
        if system in self.systems:
            extend_mean(self.means, self.counts, self.systems.index(system), x)
            return
        i = int(np.searchsorted(np.array(self.systems), system))
        self.systems.insert(i, system)
        self.means = np.insert(self.means, i, x.mean(0), axis=0)
        self.counts = np.insert(self.counts, i, len(x))

    def remove(self, system: str) -> None:
        i = self._index(system)
        del self.systems[i]
        self.means, self.counts = np.delete(self.means, i, 0), np.delete(self.counts, i)

    def state(self) -> dict:
        return {
            "name": self.name,
            "systems": list(self.systems),
            "means": self.means.copy(),
            "counts": self.counts.copy(),
            "precision": self.precision.copy(),
        }

    @classmethod
    def _arrays(cls, state: dict, keys: tuple[str, ...]) -> list:
        cls._check_state_name(state)
        systems, means, counts, *rest = (cls._get(state, k, cls.name) for k in ("systems", "means", "counts", *keys))
        means, counts = np.asarray(means, np.float64), np.asarray(counts, np.int64)
        d = means.shape[1] if means.ndim == 2 else -1
        rest = [np.asarray(a, np.float64).copy() for a in rest]
        if len(means) != len(systems) or counts.shape != (len(systems),) or any(a.shape[-1] != d for a in rest):
            shapes = ", ".join(f"{k} {a.shape}" for k, a in zip(keys, rest))
            raise ScorerError(f"{cls.name} state: {len(systems)} systems, means {means.shape}, {shapes}")
        return [[str(s) for s in systems], means.copy(), counts.copy(), *rest]

    @classmethod
    def from_state(cls, state: dict) -> MahalanobisScorer:
        return cls(*cls._arrays(state, ("precision",)))


class RelativeMahalanobisScorer(MahalanobisScorer):
    """Mahalanobis minus the distance under one background Gaussian of all reference clips (Ren et al.
    2021): what is typical of every system (language, text, recording) stops counting as evidence, which
    helps with near relatives of known systems. Per-system order is that of ``mahalanobis``."""

    name = "relative_mahalanobis"
    knownness_range = (-math.inf, math.inf)  # a difference of two such: no bound
    score_label = "minus the relative Mahalanobis distance to the nearest system"

    def __init__(self, systems, means, counts, precision, background_mean, background_precision):
        super().__init__(systems, means, counts, precision)
        self.background_mean = np.asarray(background_mean, np.float64).reshape(1, -1)
        self.background_precision = np.asarray(background_precision, np.float64)

    @classmethod
    def fit(cls, embeddings: Any, systems: Sequence[str], **params: Any) -> RelativeMahalanobisScorer:
        from sklearn.covariance import LedoitWolf

        if params:
            raise ScorerError(f"the {cls.name} scorer takes no parameters, got: {', '.join(sorted(params))}")
        x = _unit(embeddings).astype(np.float64)
        gaussians = cls._gaussians(x, _names(systems, len(x)))
        background = LedoitWolf().fit(x)
        return cls(*gaussians, background.location_, np.linalg.pinv(background.covariance_, hermitian=True))

    def score(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        x = self._check_query(embeddings).astype(np.float64)
        per = self._distances(x, self.background_mean, self.background_precision) - self._distances(
            x, self.means, self.precision
        )
        return per.max(1), per

    def state(self) -> dict:
        extra = {"background_mean": self.background_mean[0].copy(), "background_precision": self.background_precision}
        return {**super().state(), **{k: v.copy() for k, v in extra.items()}}

    @classmethod
    def from_state(cls, state: dict) -> RelativeMahalanobisScorer:
        return cls(*cls._arrays(state, ("precision", "background_mean", "background_precision")))
