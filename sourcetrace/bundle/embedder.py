"""The bundle's network: rebuilt from ``config.json`` + safetensors weights, and clips -> embeddings.

Three crop modes: ``center`` (one centred window of ``data.eval_seconds``, as training evaluated and as
the references and the threshold were computed: the default), ``full`` (the whole clip in one pass)
and ``multi`` (windows of ``data.eval_seconds`` with half overlap, at most ``MAX_CROPS`` spread over
the clip, their unit embeddings averaged: long clips are heard whole at the training length).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sourcetrace.bundle.files import BundleError
from sourcetrace.errors import AudioError, SourcetraceError

CROPS = ("center", "full", "multi")
DEFAULT_CROP = "center"
MAX_CROPS = 10
BATCH = 64


MAX_FUSION_DEPTH = 4  # a fusion's member may be a fusion, this many levels deep


def build_network(cfg, weights: dict, extras: dict, folder: Path):
    """The backbone of ``cfg`` (or the fused network that ``extras`` describes) with ``weights`` loaded
    strictly (eval mode, CPU).

    Every size the config (and a fusion member's) sets is capped first (``validation.check_sizes``), and the
    build runs within ``validation.build_within_cap``: a file asking for too big a model is one ``BundleError``
    naming it, never an allocation attempt."""
    from sourcetrace.bundle import files
    from sourcetrace.validation import ModelTooLarge, build_within_cap

    where = f"{folder}/{'bundle.json' if 'fusion' in extras else 'config.json'}"
    try:
        build = lambda: _network(cfg, extras, weights, "", folder)  # noqa: E731
        model = build_within_cap(build, "its model", files.MAX_MODEL_BYTES)
    except ModelTooLarge as err:
        raise BundleError(f"{where}: {err}") from None
    except BundleError:
        raise
    except (SourcetraceError, ValueError, TypeError, KeyError, RuntimeError, ZeroDivisionError, OverflowError) as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
        raise BundleError(f"{where}: the model cannot be built from it ({type(err).__name__}: {first})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        first = str(err).splitlines()[0] if str(err) else "mismatch"
        raise BundleError(f"{folder}/weights.safetensors does not fit the model of config.json: {first}") from None
    return model.eval()


def _network(cfg, extras: dict, weights: dict, prefix: str, folder: Path, field: str = "network", depth: int = 0):
    """The untrained network whose state dict (keys under ``prefix`` in ``weights``) the bundle holds; ``field``
    is where ``extras`` sit in bundle.json (a fusion member's: ``network.fusion.members[0].network``)."""
    from sourcetrace.models import build_model
    from sourcetrace.validation import check_sizes

    if not depth:
        try:
            check_sizes(cfg)
        except SourcetraceError as err:
            raise BundleError(f"{folder}/config.json: {err}") from None
    if "fusion" in extras:
        from sourcetrace.config import Config
        from sourcetrace.fusion import FusedNetwork

        if depth >= MAX_FUSION_DEPTH:
            raise BundleError(f"{folder}/bundle.json: {field}: fusions nested more than {MAX_FUSION_DEPTH} deep")
        spec, members, configs = extras["fusion"], [], []
        for i, m in enumerate(spec["members"]):
            at = f"{field}.fusion.members[{i}]"
            try:
                c = check_sizes(Config.stored(m["config"]))
            except SourcetraceError as err:
                raise BundleError(f"{folder}/bundle.json: {at}.config: {err}") from None
            configs.append(c)
            members.append(
                _network(c, m.get("network", {}), weights, f"{prefix}members.{i}.", folder, at + ".network", depth + 1)
            )
        try:
            return FusedNetwork(members, spec["weights"], configs)
        except SourcetraceError as err:
            raise BundleError(f"{folder}/bundle.json: {field}.fusion: {err}") from None
    if cfg.model.name != "w2v2_aasist":
        return build_model(cfg)
    from transformers import Wav2Vec2Config

    from sourcetrace.models.aasist import W2V2AASIST

    model = W2V2AASIST.from_config(cfg, Wav2Vec2Config(**extras["w2v2_config"]))
    if not any(k.startswith(prefix + "frontend.model.encoder.layer_norm.") for k in weights):
        import torch.nn as nn

        model.frontend.model.encoder.layer_norm = nn.Identity()
    model.frontend.normalize = bool(extras.get("w2v2_normalize", model.frontend.normalize))
    return model


def network_extras(model) -> dict[str, Any]:
    """What rebuilding ``model`` needs beyond config.json: the wav2vec2 architecture (no hub access later);
    for a fused network, every member's config and extras, and the weights."""
    from sourcetrace.fusion import FusedNetwork

    if isinstance(model, FusedNetwork):
        pairs = zip(model.configs, model.members)
        members = [{"config": json.loads(c.to_json()), "network": network_extras(m)} for c, m in pairs]
        return {"fusion": {"weights": list(model.weights), "members": members}}
    frontend = getattr(model, "frontend", None)
    if frontend is None or not hasattr(frontend, "model"):
        return {}
    return {"w2v2_config": frontend.model.config.to_dict(), "w2v2_normalize": bool(frontend.normalize)}


def clip_id(item: Any) -> str:
    """A content fingerprint (sha256) of an audio file or a waveform: the same clip enrolled twice is seen."""
    h = hashlib.sha256()
    if isinstance(item, (str, os.PathLike)):
        with open(item, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    else:
        h.update(np.ascontiguousarray(np.asarray(item, dtype=np.float32)).tobytes())
    return h.hexdigest()


def label(item: Any, i: int) -> str:
    return os.fspath(item) if isinstance(item, (str, os.PathLike)) else f"<waveform {i}>"


def read_clips(items: Sequence[Any], sample_rate: int, min_seconds: float, strict: bool = False, notes=None):
    """(waves, indices of usable items, {index: problem}) for paths or 1-D waveforms at ``sample_rate``.

    Files are read as they come (``data.audio.read_as_it_comes``): several channels mixed down, a lower rate
    resampled up; ``notes``, a dict, receives {index: [what was done]}. ``strict`` refuses both instead.
    Every clip is then brought to the corpus's level (``at_canonical_level``) before it is cropped and stored
    as 16-bit, so a quiet clip keeps its bits; the model sets its own input level after that.
    """
    from sourcetrace.data.audio import at_canonical_level, read_as_it_comes

    waves, good, errors = [], [], {}
    for i, item in enumerate(items):
        name = label(item, i)
        try:
            if isinstance(item, (str, os.PathLike)):
                if Path(item).is_dir():
                    raise AudioError(f"{name}: is a folder (trace expands folders; the API takes files)")
                wave, done = read_as_it_comes(item, sample_rate, strict)
                if notes is not None and done:
                    notes[i] = done
            else:
                wave = np.asarray(item.detach().cpu() if hasattr(item, "detach") else item, dtype=np.float32)
                if wave.ndim != 1 or not len(wave) or not np.isfinite(wave).all():
                    raise AudioError(f"{name}: a waveform must be a finite 1-D array at {sample_rate} Hz")
            if len(wave) < min_seconds * sample_rate:
                raise AudioError(f"{name}: too short: {len(wave) / sample_rate:.2f} s < {min_seconds:g} s")
        except AudioError as err:
            errors[i] = str(err)
            continue
        waves.append(at_canonical_level(wave))
        good.append(i)
    return waves, good, errors


def windows(wave: np.ndarray, n: int) -> list[np.ndarray]:
    """Half-overlapping windows of ``n`` samples over ``wave`` (at most MAX_CROPS, evenly spread)."""
    if n <= 0 or len(wave) <= n:
        return [wave]
    count = min(MAX_CROPS, 1 + int(np.ceil((len(wave) - n) / (n / 2))))
    starts = np.linspace(0, len(wave) - n, count).round().astype(int)
    return [wave[s : s + n] for s in starts]


def embed(model, waves: list[np.ndarray], cfg, device, crop: str = DEFAULT_CROP) -> np.ndarray:
    """Unit embeddings [n, D] of in-memory waves with the chosen crop mode."""
    from sourcetrace.evaluation.embed import embed_waves

    if crop not in CROPS:
        raise SourcetraceError(f"crop {crop!r} is not one of {', '.join(CROPS)}")
    sr, seconds = cfg.data.sample_rate, cfg.data.eval_seconds
    if not waves:
        return np.zeros((0, int(getattr(model, "embedding_dim", 0))), np.float32)
    if crop == "full" or seconds == 0:
        return embed_waves(model, waves, 0, 1, device, sr)
    if crop == "center":
        return embed_waves(model, waves, seconds, BATCH, device, sr)
    n = int(round(seconds * sr))
    pieces = [windows(w, n) for w in waves]
    flat = [p for ps in pieces for p in ps]
    emb = embed_waves(model, flat, seconds, BATCH, device, sr)
    owner = np.repeat(np.arange(len(waves)), [len(ps) for ps in pieces])
    mean = np.zeros((len(waves), emb.shape[1]), np.float64)
    np.add.at(mean, owner, emb)
    mean /= np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return mean.astype(np.float32)
