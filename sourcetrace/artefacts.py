"""What a ``--model`` names, and loading it: the one owner of model artefacts.

A model argument is a bundle (``bundle/``), a checkpoint folder, a run folder (its ``best/``), a fusion folder
(``fusion.json``) or a sweep folder (what it hands over: ``sweep/handover.py``). ``resolve_model`` says which,
without reading weights; ``load_any`` loads any of them for analyses; ``export`` writes the bundle of a
non-bundle model and ``load`` gives a ``SourceTracer`` ready to ``trace``.

Exporting needs the training data once: the known systems' reference clips (every training clip, up
to ``openset.REFERENCE_CLIPS_PER_SYSTEM`` per system: the policy of analyze and training) fit the
open-set scorer, and the dev split calibrates the "unknown" threshold (5 % false-unknown rate on
known systems) and the probabilities ``trace`` prints beside the raw scores (``calibration.json``,
``sourcetrace.evaluation.calibration``). After that the bundle needs no data. A bundle is written
into a temporary sibling and renamed into place, so a failed export never leaves half a bundle.
A non-bundle model handed to ``trace``, ``enroll`` or ``load`` is exported once, into ``CHECKPOINT/bundle``
(or ``SWEEP/best_model``), and that bundle is used from then on; ``resolve_model`` and ``load_any`` write nothing.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.bundle import files
from sourcetrace.errors import SourcetraceError
from sourcetrace.storage import RECORD

SWEEP_BUNDLE = "best_model"  # STORAGE/NAME/best_model: the sweep's best trial, exported
CHECKPOINT_BUNDLE = "bundle"  # CHECKPOINT/bundle: a checkpoint's bundle, exported at first trace
OPERATING_POINT, TARGET = "fur", 0.05


@dataclass(frozen=True)
class Resolved:
    """What a model argument names: a bundle, or a checkpoint (from itself, a run folder or a sweep)."""

    kind: str  # bundle | checkpoint | run | sweep | fusion
    path: Path  # as given
    checkpoint: Path | None  # the checkpoint (or fusion) folder; None for a bundle
    bundle: Path  # the bundle to use: the path itself, or where its export lives


def resolve_model(path: str | os.PathLike) -> Resolved:
    """A bundle, a checkpoint folder, a run folder (its ``best/``), a fusion folder (``fusion.json``) or a
    sweep folder (what it hands over: ``sweep/handover.py``)."""
    from sourcetrace.fusion import is_fusion

    path = Path(path)
    if files.is_bundle(path):
        return Resolved("bundle", path, None, path)
    if not path.exists():
        raise SourcetraceError(f"model {path}: does not exist")
    if is_fusion(path):
        return Resolved("fusion", path, path, path / CHECKPOINT_BUNDLE)
    if (path / RECORD).is_file():
        return Resolved("sweep", path, best_checkpoint(path), path / SWEEP_BUNDLE)
    from sourcetrace.training.checkpoint import resolve_checkpoint

    try:
        ckpt = resolve_checkpoint(path)
    except SourcetraceError:
        raise SourcetraceError(
            f"model {path}: not a bundle (no {files.MANIFEST}), a checkpoint folder, a run folder with best/ "
            f"or last/, nor a sweep folder (no {RECORD})"
        ) from None
    return Resolved("checkpoint" if ckpt == path else "run", path, ckpt, ckpt / CHECKPOINT_BUNDLE)


def best_checkpoint(sweep: Path) -> Path:
    """The folder of what the sweep hands over (``sweep/handover.py``)."""
    from sourcetrace.sweep.handover import handed_over
    from sourcetrace.sweep.report import trials_frame

    chosen = handed_over(sweep, trials_frame(sweep))
    if chosen is None:
        raise SourcetraceError(f"sweep {sweep}: no trial has a checkpoint with a dev EER yet")
    return Path(chosen.folder)


def bundle_for(path: str | os.PathLike, **export_kw) -> Path:
    """The bundle of any model argument; a checkpoint's or sweep's is exported on first use."""
    sweep_bundle = Path(path) / SWEEP_BUNDLE
    if (Path(path) / RECORD).is_file() and files.is_bundle(sweep_bundle):
        return sweep_bundle  # exported at the sweep's end: no need to read Tune's files for its hand-over
    res = resolve_model(path)
    if res.kind == "bundle" or files.is_bundle(res.bundle):
        return res.bundle
    return export(res.path, res.bundle, announce=True, **export_kw)


def load_any(path: str | os.PathLike, device):
    """A ``LoadedModel`` (network, config, known systems) of any model argument, for analyses."""
    res = resolve_model(path)
    if res.kind != "bundle":
        from sourcetrace.fusion import load_model

        return load_model(res.checkpoint, device)
    from sourcetrace.bundle.model import SourceTracer
    from sourcetrace.training.checkpoint import LoadedModel

    tracer = SourceTracer(res.bundle, device=str(device))
    return LoadedModel(tracer.model, tracer.config, tuple(tracer.known_systems), res.bundle, dict(tracer.manifest))


def export(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    root: str | None = None,
    protocol: str | None = None,
    device: str = "auto",
    scorer: str | None = None,
    overwrite: bool = False,
    batch_size: int = 64,
    announce: bool = False,
) -> Path:
    """Write the bundle of a checkpoint / run / sweep folder to ``out``; returns ``out``.

    ``announce``: say on stderr that an export happens (once the checkpoint has loaded, so a refused
    checkpoint stays one error line).
    """
    from sourcetrace.bundle.card import model_card
    from sourcetrace.bundle.embedder import network_extras
    from sourcetrace.data.protocol import read_checked
    from sourcetrace.device import flag_device
    from sourcetrace.evaluation.calibration import fit_calibration
    from sourcetrace.evaluation.embed import embed_table
    from sourcetrace.evaluation.openset import (
        DEFAULT_SCORER,
        SCORERS,
        calibrate_threshold,
        fit_scorer,
        reference_table,
    )
    from sourcetrace.fusion import load_model

    res = resolve_model(source)
    if res.kind == "bundle":
        raise SourcetraceError(f"{source} is a bundle already: copy the folder to move it")
    name = scorer or DEFAULT_SCORER
    if name not in SCORERS:
        raise SourcetraceError(f"unknown open-set scorer {name!r}; valid: {', '.join(SCORERS)}")
    out = Path(out).absolute()
    if out.exists() and not out.is_dir():
        raise SourcetraceError(f"--out {out} exists and is not a folder; choose a new folder")
    if out.exists() and any(out.iterdir()) and not (overwrite and files.is_bundle(out)):
        raise SourcetraceError(f"--out {out} exists and is not empty; choose a new folder")
    from sourcetrace.storage import writable_folder

    writable_folder(out.parent, "the bundle's parent folder", "choose another --out")  # before the model loads
    dev = flag_device(device)
    loaded = load_model(res.checkpoint, dev)
    if announce:
        print(f"note: exporting {res.path} to the bundle {out} (once; needs the training data)", file=sys.stderr)
    model, cfg = loaded.model, loaded.config
    known = [files.check_name(s, "training system name", strict=False) for s in loaded.known_systems]
    loaded = dataclasses.replace(loaded, known_systems=tuple(known))
    root, protocol = loaded.data_location(root, protocol)
    proto = read_checked(root, protocol, (cfg.data.train_split, cfg.data.dev_split))
    train = reference_table(proto.tables[cfg.data.train_split], known)  # as analyze and training metrics
    ref_emb, ref_systems = embed_table(loaded, train, dev, batch_size), train["system"].to_numpy(dtype=str)
    fitted = fit_scorer(name, ref_emb, ref_systems)
    dev_table = proto.tables[cfg.data.dev_split]
    dev_emb = embed_table(loaded, dev_table, dev, batch_size)
    knownness, _ = fitted.score(dev_emb)
    thr = calibrate_threshold(
        knownness,
        dev_table["system"].isin(known).to_numpy(),
        OPERATING_POINT,
        TARGET,
        split=cfg.data.dev_split,
        scorer=name,
    )
    calibration = fit_calibration(  # on dev only, as the threshold: eval stays unseen
        name, ref_emb, ref_systems, dev_emb, dev_table["system"].to_numpy(dtype=str), cfg.data.dev_split, fitted
    )
    scorer_state = fitted.state()
    arrays = {k: v for k, v in scorer_state.items() if hasattr(v, "dtype") and hasattr(v, "shape")}
    plain = {k: v for k, v in scorer_state.items() if k not in arrays}
    threshold = thr.to_dict() | {"description": thr.describe(), "scorer": name}
    card_json, card_md = model_card(
        loaded, loaded.metrics, train, proto, threshold, name, res, calibration=calibration.to_dict()
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=files.TMP_PREFIX + out.name + "."))
    os.chmod(tmp, 0o777 & ~files._umask())  # a bundle is meant to be shared: mkdtemp makes it 0700
    try:
        files.write_weights(tmp / files.WEIGHTS, model.state_dict())
        files.atomic_write(tmp / files.CONFIG, cfg.to_json())
        files.write_npz(tmp / files.SCORER_ARRAYS, arrays)
        files.write_json(tmp / files.SCORER_JSON, plain)
        files.write_json(tmp / files.THRESHOLD, threshold)
        files.write_json(tmp / files.CALIBRATION, calibration.to_dict())
        files.write_json(tmp / files.ENROLLED, {"systems": []})
        files.write_json(tmp / files.CARD_JSON, card_json)
        files.atomic_write(tmp / files.CARD_MD, card_md)
        manifest = {
            "format": files.FORMAT,
            "format_version": files.FORMAT_VERSION,
            "known_systems": known,
            "embedding_dim": int(getattr(model, "embedding_dim", cfg.model.embedding_dim)),
            "model": cfg.model.name if "fusion" not in loaded.meta else "fusion",
            "scorer": name,
            "network": network_extras(model),
            "created": card_json["created"],
            "source": str(Path(source).absolute()),
        }
        files.write_json(tmp / files.MANIFEST, manifest)
        if out.exists():
            old = out.with_name(files.TMP_PREFIX + out.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old) if any(out.iterdir()) else out.rmdir()
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def load(path: str | os.PathLike, device: str = "auto", root: str | None = None, protocol: str | None = None):
    """A ``SourceTracer`` of a bundle (or of a run / checkpoint / fusion / sweep folder: its bundle, exported
    on first use from the model's training data, at ``root``/``protocol`` if given; see ``bundle_for``)."""
    from sourcetrace.bundle.model import SourceTracer

    return SourceTracer(bundle_for(path, root=root, protocol=protocol, device=device), device=device)
