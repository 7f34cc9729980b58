"""The base class of open-set scorers and the input checks they share (``scorers`` holds the scorers)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np

from sourcetrace.errors import SourcetraceError


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


def extend_mean(means: np.ndarray, counts: np.ndarray, i: int, x: np.ndarray) -> None:
    """Fold clips ``x`` into row ``i`` of running means (in place): equal to the mean over all clips."""
    n = counts[i]
    means[i] = (means[i] * n + x.sum(0)) / (n + len(x))
    counts[i] = n + len(x)


class OpenSetScorer:
    """Base class; subclasses set ``name`` and are registered in ``SCORERS``."""

    name: ClassVar[str] = ""
    score_label: ClassVar[str] = "score"  # what the knownness is, for thresholds' descriptions
    # the values its knownness can take: a threshold outside them gives every clip the same answer
    knownness_range: ClassVar[tuple[float, float]] = (-math.inf, math.inf)
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


def _sorted_groups(x: np.ndarray, names: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(sorted systems, rows of x grouped by system in that order, clip count per system)."""
    order = sorted(set(names.tolist()))
    if not order:
        raise ScorerError("no reference embeddings to fit an open-set scorer on")
    return order, np.concatenate([x[names == s] for s in order]), np.array([(names == s).sum() for s in order])
