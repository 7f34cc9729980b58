"""Score-level fusion: several trained backbones that score clips as one model.

A fused network embeds a clip with every member and concatenates the members' unit embeddings, each
scaled by the square root of its weight (weights sum to 1). The cosine of two fused embeddings is then
the weighted mean of the members' cosines, so every scorer of the project (all-pairs EER, centroids,
k-NN, Mahalanobis) scores the fusion without knowing it is one, and a bundle carries it as one network.
Members must read clips alike (sample rate, evaluation window) and know the same training systems.

A *fusion folder* names the members before export: ``fusion.json`` with each member's checkpoint (a
checkpoint or run folder, absolute) and weight, plus the fusion's dev/test metrics when a sweep measured
them. ``sourcetrace evaluate/analyze/export/trace`` take it wherever they take a checkpoint; ``export``
turns it into an ordinary bundle that needs none of the member folders.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from sourcetrace.errors import CheckpointError, SourcetraceError

FUSION_FILE = "fusion.json"
FORMAT = "sourcetrace-fusion"


class FusedNetwork(nn.Module):
    """Members' unit embeddings, scaled by sqrt(weight) and concatenated: cosine = weighted mean cosine.

    >>> import torch.nn as nn
    >>> a, b = nn.Linear(4, 3), nn.Linear(4, 2)
    >>> a.embedding_dim, b.embedding_dim = 3, 2
    >>> fused = FusedNetwork([a, b], [1, 3])
    >>> x = torch.randn(5, 4)
    >>> fused(x).shape, fused.embedding_dim, fused.weights
    (torch.Size([5, 5]), 5, (0.25, 0.75))
    >>> bool(torch.allclose(fused(x).norm(dim=1), torch.ones(5)))
    True
    """

    def __init__(self, members: Sequence[nn.Module], weights: Sequence[float], configs: Sequence[Any] = ()):
        super().__init__()
        weights = check_weights(weights, len(members))
        self.members = nn.ModuleList(members)
        self.weights = tuple(weights)
        self.configs = list(configs)  # each member's Config, for the bundle that rebuilds it
        self.embedding_dim = sum(int(m.embedding_dim) for m in members)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        parts = [math.sqrt(w) * F.normalize(m(wave).float(), dim=1) for w, m in zip(self.weights, self.members)]
        return torch.cat(parts, dim=1)


def check_weights(weights: Sequence[float], n: int) -> list[float]:
    """Positive finite weights, one per member (at least two), normalised to sum to 1."""
    if n < 2:
        raise SourcetraceError(f"a fusion needs at least two members, got {n}")
    try:
        values = [float(w) for w in weights]
    except (TypeError, ValueError):
        raise SourcetraceError(f"fusion weights {list(weights)!r} are not numbers") from None
    if len(values) != n or not all(math.isfinite(w) and w > 0 for w in values):
        raise SourcetraceError(f"fusion weights {values} must be {n} positive numbers, one per member")
    total = sum(values)
    return [w / total for w in values]


def is_fusion(path: str | os.PathLike) -> bool:
    return (Path(path) / FUSION_FILE).is_file()


def write_fusion(
    out: str | os.PathLike,
    checkpoints: Sequence[str | os.PathLike],
    weights: Sequence[float] | None = None,
    check: bool = True,
    **extra,
) -> Path:
    """Write ``out/fusion.json`` naming ``checkpoints`` (with ``check``: loaded and checked to agree first)
    with ``weights`` (default equal); ``extra`` keys (labels, metrics) are recorded beside them."""
    from sourcetrace.training.checkpoint import resolve_checkpoint

    folders = []
    for c in checkpoints:
        try:
            folders.append(resolve_checkpoint(c).absolute())
        except SourcetraceError as err:
            raise SourcetraceError(f"fusion member {c}: {err}") from None
    weights = check_weights(weights if weights is not None else [1.0] * len(folders), len(folders))
    record = {"format": FORMAT, "members": [{"checkpoint": str(f), "weight": w} for f, w in zip(folders, weights)]}
    record |= extra
    if check:  # every member loads and they agree, before anything is written
        load_fused_record(record, Path(out), "cpu")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / (FUSION_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2, sort_keys=True))
    os.replace(tmp, out / FUSION_FILE)
    return out


MAX_BYTES = 1 << 20  # a fusion.json names at most 16 members (its schema): a megabyte is plenty


def read_fusion(folder: str | os.PathLike) -> dict:
    """``fusion.json`` of ``folder``, checked against its schema (``sourcetrace/schemas``): at most 16
    members, positive finite weights, finite metrics. Anything else is one ``CheckpointError`` naming the file
    and the field."""
    from sourcetrace.errors import BundleError
    from sourcetrace.schemas import parse_json

    path = Path(folder) / FUSION_FILE
    if not path.is_file():
        what = "not a regular file" if path.exists() else "does not exist"
        raise CheckpointError(f"{path}: unreadable fusion record ({what})")
    try:
        return parse_json(path, FUSION_FILE, MAX_BYTES)
    except BundleError as err:
        raise CheckpointError(f"unreadable fusion record: {err}") from None


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """The ``LoadedModel`` of a fusion folder (its ``FusedNetwork``) or of a checkpoint or run folder."""
    from sourcetrace.training.checkpoint import load_model as load_checkpoint

    return load_fused(path, device) if is_fusion(path) else load_checkpoint(path, device)


def load_fused(folder: str | os.PathLike, device: str | torch.device = "cpu"):
    """The ``LoadedModel`` of a fusion folder: a ``FusedNetwork`` with member 0's config and the members'
    known systems; ``metrics`` are the fusion's own when a sweep measured them."""
    return load_fused_record(read_fusion(folder), Path(folder), device)


_LOADING: set[Path] = set()  # fusion folders being loaded now: a member that is one of them is a cycle


def member_path(folder: Path, checkpoint: str) -> Path:
    """A member's folder: as written, or relative to the fusion folder (never to the working directory)."""
    path = Path(checkpoint)
    return path if path.is_absolute() else Path(folder) / path


def load_fused_record(record: dict, folder: Path, device):
    from sourcetrace.training.checkpoint import LoadedModel

    here = Path(folder).resolve()
    if here in _LOADING:
        raise CheckpointError(f"{folder / FUSION_FILE}: the fusion includes itself among its members")
    _LOADING.add(here)
    try:
        loaded = []
        for i, m in enumerate(record["members"]):
            where = f"{folder / FUSION_FILE}: members[{i}].checkpoint"
            if "\x00" in m["checkpoint"]:
                raise CheckpointError(f"{where}: a path cannot hold a NUL character")
            path = member_path(folder, m["checkpoint"])
            if not path.exists():
                raise CheckpointError(f"{where}: member checkpoint {path} does not exist")
            try:
                loaded.append(load_model(path, device))
            except RecursionError:
                raise CheckpointError(f"{where}: fusions nested too deeply") from None
            except SourcetraceError as err:
                if FUSION_FILE in str(err):  # a member fusion's own error already names its file and field
                    raise
                raise CheckpointError(f"{where}: {path}: {err}") from None
    finally:
        _LOADING.discard(here)
    weights = check_weights([m.get("weight", 1.0) for m in record["members"]], len(loaded))
    first = loaded[0]
    for other in loaded[1:]:
        if set(other.known_systems) != set(first.known_systems):
            raise SourcetraceError(
                f"fusion members {first.path} and {other.path} were trained on different systems: "
                f"{sorted(set(first.known_systems) ^ set(other.known_systems))}"
            )
        for key in ("sample_rate", "eval_seconds"):
            a, b = getattr(first.config.data, key), getattr(other.config.data, key)
            if a != b:
                raise SourcetraceError(
                    f"fusion members {first.path} and {other.path} read clips differently: data.{key} {a} vs {b}"
                )
    network = FusedNetwork([m.model for m in loaded], weights, [m.config for m in loaded]).to(device).eval()
    meta = {
        "known_systems": list(first.known_systems),
        "fusion": [{"checkpoint": str(m.path), "weight": w} for m, w in zip(loaded, weights)],
    }
    return LoadedModel(network, first.config, first.known_systems, folder, meta, dict(record.get("metrics", {})))
