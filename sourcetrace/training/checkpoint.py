"""Checkpoint folders: ``state.pt`` (everything needed to resume), ``config.json``, ``meta.json``.

A checkpoint is a plain folder so Ray Tune can persist it as-is (``tune.Checkpoint.from_directory``)
and a user can point ``sourcetrace analyze/enroll/trace`` at it, or at the run folder holding
``best/`` and ``last/``. Writes go to a temporary sibling that is renamed into place, so a kill while
saving leaves the previous checkpoint intact. ``state.pt`` holds tensors and plain Python values only
and is read with ``torch.load(weights_only=True)``: a crafted file cannot run code when loaded.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sourcetrace.config import Config
from sourcetrace.errors import CheckpointError, ConfigError, ProtocolError, SourcetraceError

STATE = "state.pt"


@dataclass
class LoadedModel:
    """A trained backbone in eval mode with what it was trained on."""

    model: torch.nn.Module
    config: Config
    known_systems: tuple[str, ...]
    path: Path  # the checkpoint folder (or fusion folder)
    meta: dict[str, Any]
    metrics: dict[str, float] = field(default_factory=dict)  # those of its best evaluation, when recorded

    def data_location(
        self, root: str | os.PathLike | None, protocol: str | os.PathLike | None
    ) -> tuple[str, str | None]:
        """(root, protocol) as given, else from the model's config; a clear error when neither says."""
        source = "--root" if root else f"data.root of {self.path / 'config.json'}"
        root = str(root) if root else self.config.data.root
        if not root:
            raise SourcetraceError(
                f"the model at {self.path} does not record its data root (config data.root is empty); pass --root DIR"
            )
        if not Path(root).is_dir():
            raise ProtocolError(f"data root {root!r} (from {source}) is not a folder")
        return root, (str(protocol) if protocol else self.config.data.protocol or None)


def save_checkpoint(folder: Path, cfg: Config, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically (re)write a checkpoint folder."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(plain(state), tmp / STATE)
    (tmp / "config.json").write_text(cfg.to_json())
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder from itself, a run folder (prefers ``best/``), or a Tune checkpoint folder."""
    path = Path(path)
    for candidate in (path, path / "best", path / "last"):
        if (candidate / STATE).is_file():
            return candidate
    raise SourcetraceError(f"{path} is neither a checkpoint folder (with {STATE}) nor a run folder with best/ or last/")


def plain(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python numbers/tensors, so ``weights_only`` loads it."""

    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(value.copy())
    return value


def load_weights(path: str | Path) -> dict[str, Any]:
    """The one way a ``state.pt`` is read: ``weights_only=True`` (tensors and plain values, never code).

    >>> load_weights("no/such/state.pt")
    Traceback (most recent call last):
    ...
    sourcetrace.errors.CheckpointError: no/such/state.pt: checkpoint file does not exist
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path)) or _first_line(err)
        raise CheckpointError(
            f"{path}: refused to load: it holds objects other than tensors and plain values ({found}), which "
            "could run code when unpickled; only load checkpoints written by sourcetrace from a trusted source"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(err)})") from None


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def load_state(folder: str | Path) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    """Config, ``state.pt`` contents and meta of a checkpoint (or run) folder, read without running code."""
    folder = resolve_checkpoint(folder)
    cfg = Config.from_json((folder / "config.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    state = load_weights(folder / STATE)
    return cfg, state, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The backbone of a checkpoint or run folder, in eval mode, with its config and known systems (a fusion
    folder as well: ``sourcetrace.fusion.load_model``)."""
    from sourcetrace.models import build_model
    from sourcetrace.validation import build_within_cap, check_sizes

    folder = resolve_checkpoint(path)
    cfg, state, meta = load_state(folder)
    try:  # a checkpoint handed over is not trusted to ask for a sane model size
        model = build_within_cap(lambda: build_model(check_sizes(cfg)), "its model")
    except ConfigError as err:
        raise CheckpointError(f"{folder / 'config.json'}: {err}") from None
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return LoadedModel(model, cfg, tuple(meta["known_systems"]), folder, meta, dict(state.get("best_metrics", {})))
