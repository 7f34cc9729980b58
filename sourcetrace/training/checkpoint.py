"""Checkpoint folders: ``state.pt`` (everything needed to resume), ``config.json``, ``meta.json``.

A checkpoint is a plain folder so Ray Tune can persist it as-is (``tune.Checkpoint.from_directory``)
and a user can point ``sourcetrace analyze/enroll/trace`` at it, or at the run folder holding
``best/`` and ``last/``. Writes go to a temporary sibling that is renamed into place, so a kill while
saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from sourcetrace.config import Config
from sourcetrace.errors import SourcetraceError

STATE = "state.pt"


@dataclass
class LoadedModel:
    """A trained backbone in eval mode with what it was trained on."""

    model: torch.nn.Module
    config: Config
    known_systems: tuple[str, ...]
    path: Path  # the checkpoint folder
    meta: dict[str, Any]


def save_checkpoint(folder: Path, cfg: Config, state: dict[str, Any], meta: dict[str, Any]) -> Path:
    """Atomically (re)write a checkpoint folder."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    torch.save(state, tmp / STATE)
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


def load_state(folder: str | Path) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    folder = resolve_checkpoint(folder)
    cfg = Config.from_json((folder / "config.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    state = torch.load(folder / STATE, map_location="cpu", weights_only=False)
    return cfg, state, meta


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The backbone of a checkpoint or run folder, in eval mode, with its config and known systems."""
    from sourcetrace.models import build_model

    folder = resolve_checkpoint(path)
    cfg, state, meta = load_state(folder)
    model = build_model(cfg)
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return LoadedModel(model, cfg, tuple(meta["known_systems"]), folder, meta)
