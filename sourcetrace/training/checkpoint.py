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
import re
import shutil
import zipfile
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
        try:
            if (candidate / STATE).is_file():
                return candidate
        except (OSError, ValueError) as err:  # a folder that cannot be searched; a NUL in the path
            raise CheckpointError(f"{candidate / STATE}: cannot be read ({_first_line(err)})") from None
    raise CheckpointError(f"{path} is neither a checkpoint folder (with {STATE}) nor a run folder with best/ or last/")


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
        what = "not a regular file (a folder, pipe or device)" if path.exists() else "checkpoint file does not exist"
        raise CheckpointError(f"{path}: {what}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(_refusal(path, err)) from None
    except Exception as err:  # whatever a damaged file makes torch raise is one line
        raise CheckpointError(f"{path}: corrupt or truncated checkpoint ({_first_line(err)})") from None


TRUSTED = "only load checkpoints written by sourcetrace from a trusted source"


def _refusal(path: Path, err: Exception) -> str:
    """Why ``weights_only`` refused ``path``: the globals its pickle names (a zip checkpoint), else the
    unpickler's own reason (a legacy, non-zip pickle, which torch cannot list the globals of)."""
    found = ""
    if zipfile.is_zipfile(path):
        try:
            found = ", ".join(torch.serialization.get_unsafe_globals_in_checkpoint(path))
        except Exception:  # the listing is a courtesy; the refusal stands without it
            found = ""
        return (
            f"{path}: refused to load: it holds objects other than tensors and plain values "
            f"({found or _unpickler_reason(err)}), which could run code when unpickled; {TRUSTED}"
        )
    return (
        f"{path}: not a weights-only torch checkpoint (a legacy pickle that the weights-only unpickler cannot read: "
        f"{_unpickler_reason(err)}); refused to load it, as a pickle can run code when unpickled; {TRUSTED}"
    )


def _unpickler_reason(err: Exception) -> str:
    """The weights-only unpickler's reason (``Unsupported global: GLOBAL builtins.eval``), without torch's advice."""
    text = " ".join(str(err).split())
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)
    found = re.search(r"WeightsUnpickler error:\s*(.+?)(?: was not an allowed global| Check the documentation|$)", text)
    return (found.group(1).strip().rstrip(".") if found else _first_line(err))[:200]


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


MAX_META_BYTES = 16 << 20  # meta.json and config.json of a checkpoint: names of at most MAX_SYSTEMS systems
MAX_SYSTEMS = 10_000  # as a bundle's known_systems (schemas/bundle.schema.json)
MAX_SYSTEM_NAME = 1000


def _read_json(path: Path) -> Any:
    """The JSON of a checkpoint's regular file ``path``; every failure one ``CheckpointError`` naming it."""
    from sourcetrace.schemas import parse_json

    try:
        regular = path.is_file()
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot be read ({_first_line(err)})") from None
    if not regular:
        what = "not a regular file (a folder, pipe or device)" if path.exists() else "missing"
        raise CheckpointError(f"{path}: {what}; a checkpoint folder holds {STATE}, config.json and meta.json")
    try:
        return parse_json(path, None, MAX_META_BYTES)
    except SourcetraceError as err:  # BundleError: already names the file
        raise CheckpointError(str(err)) from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_config(folder: Path) -> Config:
    """``config.json`` of a checkpoint folder, with the Config's own checks; one ``CheckpointError`` naming it."""
    path = Path(folder) / "config.json"
    values = _read_json(path)
    if not isinstance(values, dict):
        raise CheckpointError(
            f"{path}: must be an object of config keys (section.key: value), got {_json_type(values)}"
        )
    try:
        return Config.stored(values)
    except (SourcetraceError, TypeError, ValueError, AttributeError, RecursionError) as err:
        raise CheckpointError(f"{path}: {_first_line(err)}") from None


def read_meta(folder: Path) -> dict[str, Any]:
    """``meta.json`` of a checkpoint folder: ``known_systems`` (distinct non-empty names), ``embedding_dim`` and
    ``epoch`` when given (integers). Anything else is one ``CheckpointError`` naming the file and the field."""
    path = Path(folder) / "meta.json"
    meta = _read_json(path)
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: must be an object with 'known_systems', got {_json_type(meta)}")
    systems = meta.get("known_systems")
    if "known_systems" not in meta:
        raise CheckpointError(f"{path}: missing 'known_systems' (the systems the model was trained on)")
    if not isinstance(systems, list):
        raise CheckpointError(f"{path}: 'known_systems' must be a list of system names, got {_json_type(systems)}")
    if not 1 <= len(systems) <= MAX_SYSTEMS:
        raise CheckpointError(f"{path}: 'known_systems' has {len(systems)} names; 1 to {MAX_SYSTEMS:,} allowed")
    seen: set[str] = set()
    for i, name in enumerate(systems):
        if not isinstance(name, str) or not name.strip():
            got = repr(name) if isinstance(name, str) else _json_type(name)
            raise CheckpointError(f"{path}: 'known_systems[{i}]' must be a non-empty system name, got {got}")
        if len(name) > MAX_SYSTEM_NAME:
            raise CheckpointError(
                f"{path}: 'known_systems[{i}]' has {len(name):,} characters; at most {MAX_SYSTEM_NAME}"
            )
        if name in seen:
            raise CheckpointError(f"{path}: 'known_systems[{i}]' repeats the name {name[:60]!r}")
        seen.add(name)
    for key, least in (("embedding_dim", 1), ("epoch", 0)):
        value = meta.get(key)
        if key in meta and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            got = value if isinstance(value, int) and not isinstance(value, bool) else _json_type(value)
            raise CheckpointError(f"{path}: '{key}' must be an integer >= {least}, got {got}")
    return meta


def _json_type(value: Any) -> str:
    """What a JSON value is, in words (never the value itself, which can be megabytes)."""
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def check_state(state: Any, path: Path) -> dict[str, Any]:
    """``state`` (read from ``path``) if it is a dict whose ``model`` maps parameter names to tensors and whose
    ``best_metrics`` (when given) maps metric names to numbers; else one ``CheckpointError`` naming the field."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds {type(state).__name__}, not a checkpoint's dict of 'model' weights")
    if "model" not in state:
        keys = ", ".join(repr(k)[:60] for k in list(state)[:10]) or "none"
        raise CheckpointError(f"{path}: no 'model' weights (its keys: {keys})")
    weights = state["model"]
    if not isinstance(weights, dict):
        raise CheckpointError(f"{path}: 'model' holds {type(weights).__name__}, not a dict of parameter tensors")
    for key, value in weights.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise CheckpointError(
                f"{path}: 'model' entry {str(key)[:100]!r} holds {type(value).__name__}, not a tensor"
            )
    metrics = state.get("best_metrics", {})
    if not isinstance(metrics, dict) or not all(
        isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()
    ):
        raise CheckpointError(f"{path}: 'best_metrics' must map metric names to numbers")
    return state


def load_state(folder: str | Path) -> tuple[Config, dict[str, Any], dict[str, Any]]:
    """Config, ``state.pt`` contents and meta of a checkpoint (or run) folder, read without running code.
    A missing or damaged file is one ``CheckpointError`` naming it and what is wrong."""
    folder = resolve_checkpoint(folder)
    cfg = read_config(folder)
    meta = read_meta(folder)
    state = check_state(load_weights(folder / STATE), folder / STATE)
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
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, ValueError, TypeError, KeyError) as err:
        raise CheckpointError(
            f"{folder / STATE}: its 'model' weights do not fit the model of config.json ({_state_dict_problem(err)})"
        ) from None
    model.to(device).eval()
    return LoadedModel(model, cfg, tuple(meta["known_systems"]), folder, meta, dict(state.get("best_metrics", {})))


def _state_dict_problem(err: Exception) -> str:
    """The first problem ``load_state_dict`` names (its message lists every key on lines of their own)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    detail = next((ln for ln in lines[1:] if not ln.startswith("Error(s)")), None)
    first = detail or (lines[0] if lines else type(err).__name__)
    more = len(lines) - 2 if detail else 0
    return first[:300] + (f"; and {more} more" if more > 0 else "")
