"""Attribute new clips to TTS systems with a trained model: ``enroll`` new systems, ``trace`` clips.

A system is a centroid: the mean of its clips' unit embeddings, kept unnormalised with its clip count
so that enrolling more clips later extends it exactly. Centroids live next to the model, in the
checkpoint folder, as ``enrollment.parquet`` (columns system, source = train | enrolled, n_clips,
centroid = list of floats, clips = enrolled file paths). At first use the known systems' centroids are
built from the training split of the model's data root (``config.json`` data.root, or ``root=``), and
the "unknown" threshold is calibrated on its dev split at a 5 % false-unknown rate on known systems
(``sourcetrace.evaluation.openset`` explains the choice) and stored as ``calibration.json``. Enrolled
systems share that threshold. No retraining anywhere.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from sourcetrace.errors import AudioError, SourcetraceError
from sourcetrace.evaluation.openset import Threshold, calibrate_threshold, centroid_scores

ENROLLMENT = "enrollment.parquet"
CALIBRATION = "calibration.json"
OPERATING_POINT, TARGET = "fur", 0.05


@dataclass
class Enrollment:
    """Centroids of the systems a model can name; ``means`` are unnormalised means of unit embeddings."""

    path: Path
    systems: list[str]
    sources: list[str]
    n_clips: list[int]
    means: np.ndarray  # [k, D] float32
    clips: list[list[str]]
    skipped: dict[str, str] = field(default_factory=dict)  # clip -> problem, from the last enroll()

    @classmethod
    def load(cls, path: Path) -> Enrollment:
        df = pd.read_parquet(path)
        means = np.array([np.asarray(c, dtype=np.float32) for c in df["centroid"]], dtype=np.float32)
        return cls(
            path,
            list(df["system"]),
            list(df["source"]),
            [int(n) for n in df["n_clips"]],
            means,
            [list(c) for c in df["clips"]],
        )

    def save(self) -> Path:
        df = pd.DataFrame(
            {
                "system": self.systems,
                "source": self.sources,
                "n_clips": self.n_clips,
                "centroid": [m.astype(np.float32).tolist() for m in self.means],
                "clips": self.clips,
            }
        )
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, suffix=".tmp.parquet")
        os.close(fd)
        df.to_parquet(tmp, index=False)
        os.replace(tmp, self.path)
        return self.path

    def centroids(self) -> np.ndarray:
        return self.means / np.maximum(np.linalg.norm(self.means, axis=1, keepdims=True), 1e-12)

    def add(self, system: str, embeddings: np.ndarray, clips: Sequence[str]) -> None:
        """Add a system, or extend one (its mean becomes the mean over old and new clips)."""
        x = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        if system in self.systems:
            i = self.systems.index(system)
            n = self.n_clips[i]
            self.means[i] = (self.means[i] * n + x.sum(0)) / (n + len(x))
            self.n_clips[i] = n + len(x)
            self.clips[i] = self.clips[i] + list(clips)
        else:
            self.systems.append(system)
            self.sources.append("enrolled")
            self.n_clips.append(len(x))
            self.means = np.concatenate([self.means.reshape(-1, x.shape[1]), x.mean(0, keepdims=True)]).astype(
                np.float32
            )
            self.clips.append(list(clips))


@dataclass
class ClipResult:
    """One traced clip: the top-k (system, cosine) and the decision, or the problem that stopped it."""

    clip: str
    top: list[tuple[str, float]] = field(default_factory=list)
    decision: str | None = None  # a system name or "unknown"
    error: str | None = None

    def line(self) -> str:
        if self.error:
            return f"{self.clip}\tERROR\t{self.error}"
        return f"{self.clip}\t{self.decision}\t" + "  ".join(f"{s} {c:.3f}" for s, c in self.top)


def _load(model_path, device: str):
    from sourcetrace.training.checkpoint import load_model
    from sourcetrace.training.loop import resolve_device

    dev = resolve_device(device)
    return load_model(model_path, dev), dev


def state(loaded, device, root=None, protocol=None, batch_size: int = 64) -> tuple[Enrollment, Threshold | None]:
    """Enrollment and calibration of a model, built from its data at first use and stored beside it."""
    from sourcetrace.evaluation.analyze import data_location, embed_table, read_split_tables

    folder = loaded.path
    enr_path, cal_path = folder / ENROLLMENT, folder / CALIBRATION
    enr = Enrollment.load(enr_path) if enr_path.is_file() else None
    cal = Threshold(**json.loads(cal_path.read_text())) if cal_path.is_file() else None
    if enr is not None and cal is not None:
        return enr, cal
    if not (root or loaded.config.data.root):
        if enr is None:
            dim = int(loaded.meta.get("embedding_dim", loaded.config.model.embedding_dim))
            enr = Enrollment(enr_path, [], [], [], np.zeros((0, dim), np.float32), [])
        return enr, cal  # no known-system centroids and no threshold: only enrolled systems, never "unknown"
    root, protocol = data_location(loaded, root, protocol)
    cfg = loaded.config
    proto = read_split_tables(root, protocol, (cfg.data.train_split, cfg.data.dev_split))
    known = list(loaded.known_systems)
    if enr is None or "train" not in enr.sources:  # known systems first; systems enrolled before are kept
        train = proto.tables[cfg.data.train_split]
        train = train[train["system"].isin(known)]
        emb = embed_table(loaded, train, device, batch_size)
        names = train["system"].to_numpy(dtype=str)
        x = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        systems = sorted(set(names))
        means = np.stack([x[names == s].mean(0) for s in systems]).astype(np.float32)
        base = Enrollment(
            enr_path,
            systems,
            ["train"] * len(systems),
            [int((names == s).sum()) for s in systems],
            means,
            [[] for _ in systems],
        )
        for i, s in enumerate(enr.systems if enr is not None else []):
            if s in base.systems:  # clips enrolled for a training system extend its centroid
                j, n, m = base.systems.index(s), base.n_clips[base.systems.index(s)], enr.n_clips[i]
                base.means[j] = (base.means[j] * n + enr.means[i] * m) / (n + m)
                base.n_clips[j], base.clips[j] = n + m, enr.clips[i]
                continue
            base.systems.append(s), base.sources.append("enrolled"), base.n_clips.append(enr.n_clips[i])
            base.means = np.concatenate([base.means, enr.means[i : i + 1]]).astype(np.float32)
            base.clips.append(enr.clips[i])
        enr = base
        enr.save()
    if cal is None:
        rows = [i for i, src in enumerate(enr.sources) if src == "train"]
        dev = proto.tables[cfg.data.dev_split]
        scores = centroid_scores(embed_table(loaded, dev, device, batch_size), enr.centroids()[rows]).max(1)
        cal = calibrate_threshold(
            scores, dev["system"].isin(known).to_numpy(), OPERATING_POINT, TARGET, split=cfg.data.dev_split
        )
        cal_path.write_text(json.dumps(cal.to_dict(), indent=2, sort_keys=True))
    return enr, cal


def embed_clips(loaded, clips: Sequence[str], device, min_seconds: float | None = None):
    """(embeddings of the usable clips [m, D], their indices, {index: problem}) for audio files."""
    from sourcetrace.data.audio import load_audio
    from sourcetrace.evaluation.embed import embed_waves

    cfg = loaded.config
    sr = cfg.data.sample_rate
    floor = cfg.data.crop_seconds / 2 if min_seconds is None else min_seconds
    waves, good, errors = [], [], {}
    for i, clip in enumerate(clips):
        try:
            wave = load_audio(clip, sr)
            if len(wave) < floor * sr:
                raise AudioError(
                    f"{clip}: too short: {len(wave) / sr:.2f} s < {floor:g} s "
                    f"(half the {cfg.data.crop_seconds:g} s crop the model was trained on)"
                )
        except AudioError as err:
            errors[i] = str(err)
            continue
        waves.append(wave)
        good.append(i)
    emb = embed_waves(loaded.model, waves, cfg.data.eval_seconds, 64, device, sr) if waves else None
    return emb, good, errors


def enroll(
    model_path, system: str, clips: Sequence[str], *, root=None, protocol=None, device: str = "auto"
) -> Enrollment:
    """Add ``system`` (or extend it) from a few clips; bad clips are skipped and listed in ``skipped``."""
    system = system.strip()
    if not system or system == "unknown":
        raise SourcetraceError(f"invalid system name {system!r} ('unknown' is the tracer's answer for no match)")
    loaded, dev = _load(model_path, device)
    enr, _ = state(loaded, dev, root, protocol)
    clips = [os.path.abspath(c) for c in clips]
    already = set(enr.clips[enr.systems.index(system)]) if system in enr.systems else set()
    repeated = [c for c in clips if c in already]
    emb, good, errors = embed_clips(loaded, [c for c in clips if c not in already], dev)
    todo = [c for c in clips if c not in already]
    skipped = {todo[i]: msg for i, msg in errors.items()} | {c: f"{c}: already enrolled for {system}" for c in repeated}
    if emb is None:
        raise AudioError(f"no usable clip to enrol {system!r}:\n  " + "\n  ".join(skipped.values()))
    enr.add(system, emb, [todo[i] for i in good])
    enr.save()
    enr.skipped = skipped
    return enr


def trace(model_path, clips: Sequence[str], top_k: int = 3, *, root=None, protocol=None, device: str = "auto"):
    """Per clip, the top-k systems by cosine to their centroids and the decision ("unknown" below the
    calibrated threshold); a bad clip gets an ``error`` and the others are still traced.

    Returns ``(results, threshold, enrollment)``.
    """
    if top_k < 1:
        raise SourcetraceError(f"--top-k must be >= 1, got {top_k}")
    loaded, dev = _load(model_path, device)
    enr, cal = state(loaded, dev, root, protocol)
    if not enr.systems:
        raise SourcetraceError(
            f"no systems to trace against: the model at {loaded.path} records no data root and nothing is "
            "enrolled; enrol systems first (sourcetrace enroll) or pass the data root"
        )
    emb, good, errors = embed_clips(loaded, clips, dev)
    results = [ClipResult(str(c), error=errors.get(i)) for i, c in enumerate(clips)]
    if emb is not None:
        sims = centroid_scores(emb, enr.centroids())
        for row, i in enumerate(good):
            order = np.argsort(-sims[row], kind="stable")[:top_k]
            top = [(enr.systems[j], float(sims[row, j])) for j in order]
            unknown = cal is not None and top[0][1] < cal.value
            results[i].top, results[i].decision = top, "unknown" if unknown else top[0][0]
    return results, cal, enr


def header(loaded_path, enr: Enrollment, cal: Threshold | None) -> str:
    n_enr = sum(s == "enrolled" for s in enr.sources)
    lines = [
        f"# model: {loaded_path}; {len(enr.systems)} systems "
        f"({len(enr.systems) - n_enr} from training, {n_enr} enrolled)"
    ]
    if cal is None:
        lines.append(
            "# operating point: none calibrated (no data root): the best match is always named, never 'unknown'"
        )
    else:
        lines.append(f"# operating point: {cal.describe()}")
    lines.append("# clip\tdecision\ttop-k systems (cosine)")
    return "\n".join(lines)


def cli_enroll(args) -> int:
    """``sourcetrace enroll --model RUN --system NAME CLIP...``."""
    enr = enroll(
        args.model, args.system, args.clips, root=getattr(args, "root", None), protocol=getattr(args, "protocol", None)
    )
    i = enr.systems.index(args.system.strip())
    for msg in enr.skipped.values():
        print(f"skipped: {msg}")
    print(
        f"{args.system}: centroid of {enr.n_clips[i]} clips ({enr.sources[i]}); "
        f"{len(enr.systems)} systems in {enr.path}"
    )
    return 1 if enr.skipped else 0


def cli_trace(args) -> int:
    """``sourcetrace trace --model RUN [--top-k K] CLIP...``: exit 1 when some clip could not be traced."""
    results, cal, enr = trace(
        args.model, args.clips, args.top_k, root=getattr(args, "root", None), protocol=getattr(args, "protocol", None)
    )
    print(header(enr.path.parent, enr, cal))
    for r in results:
        print(r.line(), flush=True)
    return 1 if any(r.error for r in results) else 0
