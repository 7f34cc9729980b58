"""Open-set scorers: how "known" a clip is, and how well it matches each known system.

A scorer is fitted on reference (training) embeddings of the known systems. ``score`` returns a
knownness per clip (higher = more likely one of the known systems; the "unknown" threshold is set on
it) and a score per system (higher = better match; its argmax is the attributed system, its order the
top-k). Systems can be enrolled, extended and removed without refitting, and a scorer round-trips
through ``state()`` (numpy arrays and JSON-able values only: no pickle) and ``scorer_from_state``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sourcetrace.errors import SourcetraceError
from sourcetrace.registry import lookup


class ScorerError(SourcetraceError, ValueError):
    """Bad input to an open-set scorer: embeddings, system names, parameters or a stored state."""


def _unit(x: Any) -> np.ndarray:
    """Rows scaled to unit length (float32); a clear error for a wrong shape or non-finite values."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ScorerError(f"need embeddings [n, d], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ScorerError(f"embedding row {int(np.flatnonzero(~np.isfinite(x).all(1))[0])} is not finite")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _names(systems: Sequence[str], n: int) -> np.ndarray:
    names = np.asarray(systems).astype(str)
    if names.ndim != 1 or len(names) != n:
        raise ScorerError(f"{n} embeddings but {len(names)} system names")
    bad = [s for s in set(names.tolist()) if not s.strip()]
    if bad:
        raise ScorerError("empty system name among the reference clips")
    return names


class OpenSetScorer:
    """Base class; subclasses set ``name`` and are registered in ``SCORERS``."""

    name: ClassVar[str] = ""
    score_label: ClassVar[str] = "score"  # what the knownness is, for thresholds' descriptions
    systems: list[str]

    @classmethod
    def fit(cls, embeddings: Any, systems: Sequence[str], **params: Any) -> OpenSetScorer:
        """Fit on reference embeddings [n, d] labelled by system name."""
        raise NotImplementedError

    def score(self, embeddings: Any) -> tuple[np.ndarray, np.ndarray]:
        """(knownness [n], per-system scores [n, k] aligned with ``self.systems``)."""
        raise NotImplementedError

    def add(self, system: str, embeddings: Any) -> None:
        """Enrol a new system from its embeddings, or extend an existing one with more clips."""
        raise NotImplementedError

    def remove(self, system: str) -> None:
        """Forget a system."""
        raise NotImplementedError

    def state(self) -> dict:
        """Everything needed to rebuild the scorer: numpy arrays and JSON-able values, with ``name``."""
        raise NotImplementedError

    @classmethod
    def from_state(cls, state: dict) -> OpenSetScorer:
        raise NotImplementedError

    # helpers shared by the subclasses
    @property
    def dim(self) -> int:
        raise NotImplementedError

    def _check_query(self, embeddings: Any) -> np.ndarray:
        x = _unit(embeddings)
        if x.shape[1] != self.dim:
            raise ScorerError(f"embeddings have {x.shape[1]} dimensions; the {self.name} scorer has {self.dim}")
        return x

    def _check_new(self, system: str, embeddings: Any) -> np.ndarray:
        if not isinstance(system, str) or not system.strip():
            raise ScorerError(f"invalid system name {system!r}")
        x = self._check_query(embeddings)
        if len(x) == 0:
            raise ScorerError(f"no embeddings to enrol {system!r}")
        return x

    def _index(self, system: str) -> int:
        if system not in self.systems:
            raise ScorerError(f"no system {system!r} in the {self.name} scorer; it has: {', '.join(self.systems)}")
        if len(self.systems) == 1:
            raise ScorerError(f"cannot remove {system!r}: it is the scorer's only system")
        return self.systems.index(system)

    @staticmethod
    def _get(state: dict, key: str, cls_name: str) -> Any:
        if key not in state:
            raise ScorerError(f"{cls_name} state has no {key!r} entry")
        return state[key]

    @classmethod
    def _check_state_name(cls, state: dict) -> None:
        if state.get("name") != cls.name:
            raise ScorerError(f"state of scorer {state.get('name')!r} given to the {cls.name!r} scorer")


class CentroidScorer(OpenSetScorer):
    """Cosine to each system's centroid (the unit-length mean of its unit embeddings); knownness = the
    best one. Means are kept unnormalised with clip counts so that enrolling more clips extends them
    exactly."""

    name = "centroid"
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
            i = self.systems.index(system)
            n = self.counts[i]
            self.means[i] = (self.means[i] * n + x.sum(0)) / (n + len(x))
            self.counts[i] = n + len(x)
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


SCORERS: dict[str, type[OpenSetScorer]] = {c.name: c for c in (CentroidScorer,)}
DEFAULT_SCORER = "centroid"


def fit_scorer(name: str, embeddings: Any, systems: Sequence[str], **params: Any) -> OpenSetScorer:
    """Fit the scorer registered as ``name``; an unknown name is an error listing the valid ones."""
    return lookup(SCORERS, name, "open-set scorer").fit(embeddings, systems, **params)


def scorer_from_state(state: dict) -> OpenSetScorer:
    """Rebuild a scorer from ``OpenSetScorer.state()`` (which carries the scorer's name)."""
    if not isinstance(state, dict) or "name" not in state:
        raise ScorerError("an open-set scorer state must be a dict with a 'name' entry")
    return lookup(SCORERS, str(state["name"]), "open-set scorer").from_state(state)
