"""A loaded bundle: ``sourcetrace.load(path)`` -> ``SourceTracer`` with ``trace``, ``embed``, ``enroll``.

The open-set scorer is rebuilt at load from the training systems' state (``scorer.npz`` +
``scorer.json``, fixed at export) plus every enrolled clip's embedding (``enrolled.json``): enrolling
or removing a system rewrites only ``enrolled.json``, atomically and under the bundle's lock, so
concurrent enrolments all land and the training references can never be damaged.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sourcetrace.bundle import card, embedder, files
from sourcetrace.bundle.files import BundleError
from sourcetrace.errors import AudioError, SourcetraceError


@dataclass
class Attribution:
    """One clip's answer: the decision (a system or "unknown"), the top-k systems, or its error."""

    path: str
    decision: str | None = None
    top: list[tuple[str, float]] = field(default_factory=list)
    knownness: float | None = None
    error: str | None = None
    input: list[str] = field(default_factory=list)  # what was done to read the clip (mixed down, resampled)
    # evidence: what identifies the clip as given (``clip_evidence``); None where it could not be read
    sha256: str | None = None  # of the file's bytes; of a waveform's float32 samples
    duration_s: float | None = None  # as read: the file header's frames / its rate (a waveform: at the model's)
    sample_rate: int | None = None  # as read, before any resampling (a waveform: the model's)
    # calibrated (fitted on dev, ``calibration.json``); None for a bundle without a calibration
    p_known: float | None = None  # P(the clip comes from a known system | knownness)
    top_p: list[float] = field(default_factory=list)  # per ``top`` entry: P(system | the clip's system is known)
    calibration: str | None = None  # the method that made them, with its parameters

    def to_dict(self) -> dict:
        d = asdict(self)
        p = d.pop("top_p") or [None] * len(self.top)
        d["top"] = [{"system": s, "score": float(v), "p": q} for (s, v), q in zip(self.top, p)]
        return d


# room for float rounding when a threshold is checked against its scorer's knownness range (a clip identical to a
# reference has a cosine of 1.0000001)
KNOWNNESS_ROUNDING = 1e-3

OVERLAP_SHARE = 0.5  # a new system overlaps an existing one when more than this share of its clips are called it


@dataclass
class Overlap:
    """How the bundle saw a system's clips before they were enrolled (every other system as it stood).

    ``nearest`` is the existing system the clips were most often called (as known, above the threshold),
    else most often closest to (top-1); the new system *overlaps* it when more than ``OVERLAP_SHARE`` of
    its clips would have been attributed to it as known: the two are hard to tell apart, and clips of
    either may be traced to the other.
    """

    nearest: str
    n_clips: int  # its usable clips that were measured
    top1: int  # clips whose closest system was ``nearest``
    known_as: int  # clips the bundle would have called ``nearest`` (top-1 and above the threshold)
    known: int  # clips called known at all (any existing system)
    mean_score: float  # mean per-system score of its clips against ``nearest``
    decisions: dict[str, int]  # what the bundle would have called its clips: system or "unknown" -> clips

    @property
    def share(self) -> float:
        """Share of its clips the bundle would have attributed to ``nearest`` as known."""
        return self.known_as / self.n_clips if self.n_clips else 0.0

    @property
    def overlaps(self) -> bool:
        return self.share > OVERLAP_SHARE

    def describe(self) -> str:
        return (
            f"nearest existing system {self.nearest}: {self.known_as} of {self.n_clips} clips would have been "
            f"attributed to it as known ({100 * self.share:.0f}%), {self.top1} had it as closest system, "
            f"mean score {self.mean_score:.3f}"
        )

    def to_dict(self) -> dict:
        return asdict(self) | {"share": self.share, "overlaps": self.overlaps}


@dataclass
class Enrolment:
    """What one ``enroll`` call did: clips added, clips skipped (and why), the system's total, and how close
    the system is to the existing ones (``overlap``, measured on its usable clips before they were added)."""

    system: str
    added: int
    duplicates: list[str]  # clips already enrolled for this system (same content): nothing to do
    failed: dict[str, str]  # clip -> why it could not be used
    n_clips: int
    overlap: Overlap | None = None


class SourceTracer:
    """A bundle in memory: the network, the open-set scorer with enrolled systems, the threshold."""

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        from sourcetrace.config import Config

        self.path = Path(path)
        self.manifest = files.check_manifest(self.path)
        files.sweep_strays(self.path)  # what a killed enrolment left behind
        try:
            self.config = Config.stored(files.read_json(self.path, files.CONFIG))
        except SourcetraceError as err:
            raise BundleError(f"{self.path / files.CONFIG}: {err}") from None
        self.threshold = files.read_json(self.path, files.THRESHOLD)
        value = self.threshold.get("value") if isinstance(self.threshold, dict) else None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise BundleError(f"{self.path / files.THRESHOLD}: 'value' must be a finite number, got {value!r}")
        self.known_systems = [
            files.check_name(s, "training system name", strict=False) for s in self.manifest["known_systems"]
        ]
        self.dim = int(self.manifest["embedding_dim"])
        self._base_state = self._read_scorer_state()
        self.calibration = self._read_calibration()
        weights = files.read_weights(self.path)
        from sourcetrace.device import flag_device  # torch: not needed to read or check a bundle

        self.device = flag_device(device)
        self.model = embedder.build_network(self.config, weights, self.manifest.get("network", {}), self.path)
        self.model.to(self.device)
        self.reload()
        self._check_threshold()  # once the scorer is rebuilt: its name is then a real scorer's

    # -- state ----------------------------------------------------------------------------------
    def _read_scorer_state(self) -> dict:
        state = files.read_json(self.path, files.SCORER_JSON)
        if not isinstance(state, dict) or "name" not in state:
            raise BundleError(f"{self.path / files.SCORER_JSON}: no scorer 'name'")
        arrays = files.read_npz(self.path, files.SCORER_ARRAYS)
        for key, arr in arrays.items():
            if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
                raise BundleError(f"{self.path / files.SCORER_ARRAYS}: array {key!r} holds NaN or infinite values")
            if arr.dtype.kind == "f" and arr.ndim == 2 and arr.shape[1] != self.dim:
                raise BundleError(
                    f"{self.path / files.SCORER_ARRAYS}: array {key!r} has shape {arr.shape}; "
                    f"the model's embeddings have {self.dim} dimensions"
                )
        return state | arrays

    def _check_threshold(self) -> None:
        """The threshold is on the knownness of the bundle's scorer (``scorer.json``): threshold.json and
        bundle.json, where they name a scorer, name that one, and the value lies in the range that scorer's
        knownness can take (its ``knownness_range``). Outside it, every clip would get the same answer: never
        "unknown" below the range, always "unknown" above it."""
        scorer = str(self._base_state["name"])
        for name, record in ((files.THRESHOLD, self.threshold), (files.MANIFEST, self.manifest)):
            named = record.get("scorer")
            if named is not None and named != scorer:
                raise BundleError(
                    f"{self.path / name}: field 'scorer' is {named!r}, but the bundle's scorer "
                    f"({files.SCORER_JSON}) is {scorer!r}"
                )
        from sourcetrace.evaluation.scorers import SCORERS  # light: no sklearn/pandas on the trace path

        if scorer not in SCORERS:
            return  # an unknown scorer is named when the scorer is rebuilt
        lo, hi = SCORERS[scorer].knownness_range
        value = self.threshold["value"]
        if lo - KNOWNNESS_ROUNDING <= value <= hi + KNOWNNESS_ROUNDING:
            return
        span = f"[{lo:g}, {hi:g}]" if math.isfinite(lo) else f"at or below {hi:g}"
        effect = "no clip would ever be called unknown" if value < lo else "every clip would be called unknown"
        raise BundleError(
            f"{self.path / files.THRESHOLD}: 'value'={value!r} is out of range: the {scorer} scorer's knownness "
            f"lies {'in ' if math.isfinite(lo) else ''}{span}, so {effect}"
        )

    def _read_calibration(self):
        """The dev-fitted calibration (``calibration.json``), or None for a bundle exported without one."""
        from sourcetrace.evaluation.calibration import Calibration, CalibrationError  # numpy only

        if not (self.path / files.CALIBRATION).is_file():
            return None
        try:
            cal = Calibration.from_dict(files.read_json(self.path, files.CALIBRATION))
        except CalibrationError as err:
            raise BundleError(f"{self.path / files.CALIBRATION}: {err}") from None
        if cal.scorer != self._base_state["name"]:
            raise BundleError(
                f"{self.path / files.CALIBRATION}: field 'scorer' is {cal.scorer!r}, but the bundle's scorer is "
                f"{self._base_state['name']!r}"
            )
        return cal

    def _read_enrolled(self) -> list[dict]:
        data = files.read_json(self.path, files.ENROLLED)
        where = self.path / files.ENROLLED
        if not isinstance(data, dict) or not isinstance(data.get("systems"), list):
            raise BundleError(f"{where}: no 'systems' list")
        for entry in data["systems"]:
            files.check_name(entry.get("name"))
            for clip in entry.get("clips", []):
                emb = clip.get("embedding")
                if isinstance(emb, list) and not all(
                    isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in emb
                ):
                    raise BundleError(f"{where}: a clip of {entry['name']!r} has non-finite embedding values")
                if not isinstance(emb, list) or len(emb) != self.dim:
                    raise BundleError(
                        f"{where}: a clip of {entry['name']!r} has an embedding of length "
                        f"{len(emb) if isinstance(emb, list) else type(emb).__name__}; expected {self.dim}"
                    )
        return data["systems"]

    def reload(self) -> None:
        """Re-read the enrolled systems (another process may have enrolled) and rebuild the scorer."""
        self.enrolled = self._read_enrolled()
        self.scorer = self._scorer()

    def _scorer(self, without: str | None = None):
        """The open-set scorer of the training systems plus every enrolled one (but ``without``)."""
        from sourcetrace.evaluation.scorers import scorer_from_state  # light: no sklearn/pandas on the trace path

        try:
            scorer = scorer_from_state(dict(self._base_state))
        except (SourcetraceError, ValueError, KeyError, TypeError) as err:
            where = f"{self.path / files.SCORER_JSON} and {files.SCORER_ARRAYS}"
            raise BundleError(f"{where}: the open-set scorer cannot be rebuilt: {err}") from None
        try:
            for entry in self.enrolled:
                if entry["clips"] and entry["name"] != without:
                    scorer.add(entry["name"], np.asarray([c["embedding"] for c in entry["clips"]], np.float32))
        except (SourcetraceError, ValueError, KeyError, TypeError) as err:
            raise BundleError(f"{self.path / files.ENROLLED}: an enrolled system cannot be added: {err}") from None
        return scorer

    @property
    def systems(self) -> list[str]:
        """Every system a clip can be attributed to: the training systems and the enrolled ones."""
        return list(self.scorer.systems)

    def describe_threshold(self) -> str:
        return str(self.threshold.get("description") or f"'unknown' below {self.threshold['value']:.4f}")

    # -- inference -------------------------------------------------------------------------------
    def embed(self, clips: Sequence[Any], crop: str = embedder.DEFAULT_CROP, strict: bool = False) -> np.ndarray:
        """Unit embeddings [n, D] of audio paths or 1-D waveforms at the model's sample rate (files at a lower
        rate or with several channels are resampled / mixed down unless ``strict``)."""
        sr = self.config.data.sample_rate
        waves, _, errors = embedder.read_clips(as_clips(clips), sr, self.min_seconds, strict)
        if errors:
            raise AudioError("; ".join(errors.values()))
        return embedder.embed(self.model, waves, self.config, self.device, crop)

    @property
    def min_seconds(self) -> float:
        return self.config.data.crop_seconds / 2  # half the training crop: shorter clips are refused

    def trace(
        self,
        clips: Sequence[Any],
        top_k: int = 3,
        crop: str = embedder.DEFAULT_CROP,
        progress=None,
        strict: bool = False,
    ) -> list[Attribution]:
        """Attribute every clip; a bad clip gets ``error`` and the others are still traced. A file at a lower
        rate (8 kHz) or with several channels is resampled / mixed down and says so in ``input``; ``strict``
        refuses it instead."""
        if top_k < 1:
            raise SourcetraceError(f"top_k must be >= 1, got {top_k}")
        if crop not in embedder.CROPS:
            raise SourcetraceError(f"crop {crop!r} is not one of {', '.join(embedder.CROPS)}")
        clips = as_clips(clips)
        rate = self.config.data.sample_rate
        out = [Attribution(embedder.label(c, i), **clip_evidence(c, rate)) for i, c in enumerate(clips)]
        step = 64 if crop != "full" else 8
        for start in range(0, len(clips), step):
            part = clips[start : start + step]
            notes: dict[int, list[str]] = {}
            sr = self.config.data.sample_rate
            waves, good, errors = embedder.read_clips(part, sr, self.min_seconds, strict, notes)
            for i, msg in errors.items():
                out[start + i].error = msg
            for i, done in notes.items():
                out[start + i].input = done
            if waves:
                known, per = self.scorer.score(embedder.embed(self.model, waves, self.config, self.device, crop))
                cal = self.calibration
                p_known = cal.p_known(known) if cal else None
                probs = cal.system_probabilities(per) if cal else None
                for row, i in enumerate(good):
                    order = np.argsort(-per[row], kind="stable")[:top_k]
                    r = out[start + i]
                    r.top = [(self.scorer.systems[j], float(per[row, j])) for j in order]
                    r.knownness = float(known[row])
                    # the decision is the threshold on the raw knownness; the probabilities only sit beside it
                    r.decision = "unknown" if known[row] < self.threshold["value"] else r.top[0][0]
                    if cal is not None:
                        r.p_known, r.calibration = float(p_known[row]), cal.method()
                        r.top_p = [float(probs[row, j]) for j in order]
            if progress is not None:
                progress.update(len(part))
        return out

    # -- enrolment -------------------------------------------------------------------------------
    def enroll(self, system: str, clips: Sequence[Any], crop: str = embedder.DEFAULT_CROP) -> Enrolment:
        """Add ``system`` (or extend it) from clips; clips already enrolled for it are skipped (no-op)."""
        files.check_name(system)
        if system in self.known_systems:
            raise SourcetraceError(
                f"{system!r} is a system the model was trained on; enrol new clips under another name "
                "(its training references stay as they are)"
            )
        clips = as_clips(clips)
        if not clips:
            raise SourcetraceError(f"no clips given to enrol {system!r}")
        waves, good, errors = embedder.read_clips(clips, self.config.data.sample_rate, self.min_seconds)
        failed = {embedder.label(clips[i], i): msg for i, msg in errors.items()}
        duplicates = []
        ids = {i: embedder.clip_id(clips[i]) for i in good}
        emb = embedder.embed(self.model, waves, self.config, self.device, crop) if waves else None
        with files.locked(self.path):
            self.reload()  # what other processes enrolled meanwhile
            overlap = self._overlap(system, emb) if emb is not None else None
            entries = {e["name"]: e for e in self.enrolled}
            entry = entries.setdefault(system, {"name": system, "clips": []})
            have = {c["sha256"] for c in entry["clips"]}
            added = 0
            for row, i in enumerate(good):
                name = embedder.label(clips[i], i)
                if ids[i] in have:
                    duplicates.append(name)
                    continue
                have.add(ids[i])
                path = os.path.abspath(clips[i]) if isinstance(clips[i], (str, os.PathLike)) else name
                entry["clips"].append({"path": path, "sha256": ids[i], "embedding": emb[row].tolist()})
                added += 1
            if not entry["clips"]:
                raise AudioError(f"no usable clip to enrol {system!r}:\n  " + "\n  ".join(failed.values()))
            if added:
                systems = list(entries.values())
                card_files = card.enrolled_card(self.path, systems, {system: overlap.to_dict()} if overlap else {})
                files.write_json(self.path / files.ENROLLED, {"systems": systems})
                card.write_card(self.path, card_files)
            self.reload()
        return Enrolment(system, added, duplicates, failed, len(entry["clips"]), overlap)

    def _overlap(self, system: str, emb: np.ndarray) -> Overlap:
        """How the bundle without ``system`` (the training systems and every other enrolled one) scores its
        clips ``emb``: the nearest existing system and how many clips it would have been called."""
        scorer = self._scorer(without=system)
        known, per = scorer.score(emb)
        names = np.asarray(scorer.systems)
        top = names[per.argmax(1)]
        is_known = known >= self.threshold["value"]
        decided = np.where(is_known, top, "unknown")
        systems = list(scorer.systems)
        # nearest: most clips called it as known, then most clips closest to it, then the highest mean score
        rank = [
            (int((decided == s).sum()), int((top == s).sum()), float(per[:, j].mean())) for j, s in enumerate(systems)
        ]
        j = max(range(len(systems)), key=lambda k: rank[k])
        return Overlap(
            nearest=systems[j],
            n_clips=len(emb),
            top1=rank[j][1],
            known_as=rank[j][0],
            known=int(is_known.sum()),
            mean_score=rank[j][2],
            decisions={str(k): int(v) for k, v in zip(*np.unique(decided, return_counts=True))},
        )

    def remove(self, system: str) -> int:
        """Forget an enrolled system (training systems stay); returns how many clips it had."""
        with files.locked(self.path):
            self.reload()
            names = [e["name"] for e in self.enrolled]
            if system not in names:
                raise SourcetraceError(
                    f"{system!r} is not enrolled in {self.path}; enrolled: {', '.join(names) or 'none'}"
                )
            gone = self.enrolled[names.index(system)]
            kept = [e for e in self.enrolled if e is not gone]
            card_files = card.enrolled_card(self.path, kept, {})
            files.write_json(self.path / files.ENROLLED, {"systems": kept})
            card.write_card(self.path, card_files)
            self.reload()
        return len(gone["clips"])

    def enrolled_systems(self) -> list[tuple[str, int]]:
        """(name, number of clips) of every enrolled system."""
        return [(e["name"], len(e["clips"])) for e in self.enrolled]


def clip_evidence(clip: Any, sample_rate: int) -> dict:
    """The facts that identify a clip as given, for ``Attribution``: ``sha256`` of the file's bytes (of a
    waveform: of its float32 samples, as ``enrolled.json`` stores them), and ``duration_s`` and ``sample_rate``
    as read from the file's header before any resampling (a waveform is taken to be at ``sample_rate``).
    A fact that cannot be read is None: the clip's ``error`` says why."""
    from sourcetrace.data.audio import probe_audio

    if not isinstance(clip, (str, os.PathLike)):
        try:
            wave = np.asarray(clip.detach().cpu() if hasattr(clip, "detach") else clip, dtype=np.float32)
        except (TypeError, ValueError):
            return {}
        return {"sha256": embedder.clip_id(wave), "duration_s": wave.size / sample_rate, "sample_rate": sample_rate}
    out: dict[str, Any] = {}
    try:
        out["sha256"] = file_sha256(clip)  # a FIFO, device or folder is never opened: the clip's error says why
        info = probe_audio(clip)
        out |= {"duration_s": float(info.duration), "sample_rate": int(info.sample_rate)}
    except (OSError, ValueError, AudioError):
        pass
    return out


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a regular file's bytes (as ``embedder.clip_id``); an ``AudioError`` for anything else.

    A FIFO, a device (``/dev/zero``) or a folder is refused before it is opened for reading (a FIFO would block
    the trace forever, a device never end), and the file opened is checked again, so one swapped in between is
    refused too.

    >>> file_sha256("/dev/zero")
    Traceback (most recent call last):
    ...
    sourcetrace.errors.AudioError: /dev/zero: is not a regular file (a folder, a device or a pipe)
    """
    import hashlib
    import stat

    name = os.fspath(path)
    refused = AudioError(f"{name}: is not a regular file (a folder, a device or a pipe)")
    if not stat.S_ISREG(os.stat(name).st_mode):
        raise refused
    fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise refused
        h = hashlib.sha256()
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def as_clips(clips: Any) -> list:
    """A list of clips from one path, one 1-D waveform, or a sequence of either (a string is one path, not
    its characters)."""
    if isinstance(clips, (str, os.PathLike)):
        return [clips]
    if getattr(clips, "ndim", None) == 1:  # one numpy array or torch tensor
        return [clips]
    return list(clips)
