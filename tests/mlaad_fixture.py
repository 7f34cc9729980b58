"""A small MLAAD-shaped corpus of real espeak-ng clips, written under two protocol folders.

``make_corpus(root)`` synthesises 36 clips once into ``root/fake/<lang>/<system_dir>/<stem>.flac``
(16 kHz mono, 16-bit) and writes the same splits twice:

- ``root/protocol``: the project's layout (path, model_name, language, duration, text);
- ``root/protocol_mlaad``: MLAAD's layout (path, model_name, language as a full name,
  is_original_language, duration, training_data, architecture, transcript with commas), every
  ``eval.csv`` row written ``EVAL_COPIES`` times as in MLAAD, and a ``fine/`` folder.

Systems A-C and languages en/de are seen (in train.csv); system D and languages fr/it are not, so dev
and eval hold all four conditions. Also: helpers that write bad files for the error tests.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

# model_name -> (espeak-ng voice variant, directory name as MLAAD spells it: '/' -> '_')
SYSTEMS = {"espeak-ng/default": "", "espeak-ng/f3": "+f3", "espeak-ng/m3": "+m3", "espeak-ng/klatt": "+klatt"}
SEEN_SYSTEMS = ("espeak-ng/default", "espeak-ng/f3", "espeak-ng/m3")
LANG_NAMES = {"en": "English", "de": "German", "fr": "French", "it": "Italian"}
SENTENCES = {
    "en": [
        "The quick brown fox jumps over the lazy dog near the river bank.",
        "Please call me back tomorrow morning before the meeting starts.",
        "She sells sea shells by the sea shore every single summer.",
        "A journey of a thousand miles begins with a single step forward.",
    ],
    "de": [
        "Der schnelle braune Fuchs springt über den faulen Hund am Fluss.",
        "Bitte rufen Sie mich morgen früh vor der Besprechung zurück.",
        "Im Sommer fahren wir gerne mit dem Fahrrad an den See.",
        "Eine Reise von tausend Meilen beginnt mit dem ersten Schritt.",
    ],
    "fr": [
        "Le renard brun rapide saute par-dessus le chien paresseux.",
        "Rappelez-moi demain matin avant le début de la réunion, merci.",
        "Nous allons souvent au marché le samedi pour acheter des fruits.",
        "Un voyage de mille lieues commence toujours par un premier pas.",
    ],
    "it": [
        "La volpe veloce salta sopra il cane pigro vicino al fiume.",
        "Per favore richiamami domani mattina prima della riunione.",
        "In estate andiamo spesso al mare con tutta la famiglia.",
        "Un viaggio di mille miglia comincia sempre con un solo passo.",
    ],
}
EVAL_COPIES = 3  # MLAAD's eval.csv repeats rows: each eval row appears this many times
MLAAD_COLUMNS = [
    "path",
    "model_name",
    "language",
    "is_original_language",
    "duration",
    "training_data",
    "architecture",
    "transcript",
]
OUR_COLUMNS = ["path", "model_name", "language", "duration", "text"]
CONDITIONS = (
    "lang_seen___model_seen",
    "lang_seen___model_not_seen",
    "lang_not_seen___model_seen",
    "lang_not_seen___model_not_seen",
)


@dataclass(frozen=True)
class Clip:
    split: str
    system: str
    lang: str
    text: str
    path: str  # ./fake/<lang>/<system_dir>/<stem>.flac
    duration: float


def system_dir(system: str) -> str:
    return system.replace("/", "_")


def plan() -> list[tuple[str, str, str, int]]:
    """(split, system, lang, sentence index): train A-C x en/de x 2; dev A-D x en/fr; eval A-D x 4 langs."""
    rows = [("train", s, lang, k) for s in SEEN_SYSTEMS for lang in ("en", "de") for k in (0, 1)]
    rows += [("dev", s, lang, 2) for s in SYSTEMS for lang in ("en", "fr")]
    rows += [("eval", s, lang, 3) for s in SYSTEMS for lang in ("en", "de", "fr", "it")]
    return rows


def synthesise(voice: str, text: str, out: Path, sample_rate: int = 16000) -> float:
    """espeak-ng -> 16-bit mono FLAC at ``sample_rate`` (sox); returns the duration in seconds."""
    out.parent.mkdir(parents=True, exist_ok=True)
    raw = out.with_suffix(".raw.wav")
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(sample_rate), "-c", "1", "-b", "16", str(out)], check=True, capture_output=True
    )
    raw.unlink()
    return sf.info(str(out)).duration


def make_corpus(root: Path) -> list[Clip]:
    """Write the audio, ``protocol/`` and ``protocol_mlaad/`` under ``root``; returns the clips."""
    root = Path(root)
    clips = []
    for i, (split, system, lang, k) in enumerate(plan()):
        rel = f"fake/{lang}/{system_dir(system)}/{split}_{i:03d}.flac"
        dur = synthesise(lang + SYSTEMS[system], SENTENCES[lang][k], root / rel)
        clips.append(Clip(split, system, lang, SENTENCES[lang][k], "./" + rel, round(dur, 3)))
    _write_ours(root / "protocol", clips)
    _write_mlaad(root / "protocol_mlaad", clips)
    return clips


def condition(clip: Clip) -> str:
    ls = clip.lang in ("en", "de")
    ss = clip.system in SEEN_SYSTEMS
    return f"lang_{'' if ls else 'not_'}seen___model_{'' if ss else 'not_'}seen"


def _write(csv_path: Path, columns: list[str], rows: list[list], delimiter: str = ",") -> None:
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with open(csv_path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh, delimiter=delimiter)
        w.writerow(columns)
        w.writerows(rows)


def _write_ours(folder: Path, clips: list[Clip]) -> None:
    for split in ("train", "dev", "eval"):
        rows = [[c.path, c.system, c.lang, c.duration, c.text] for c in clips if c.split == split]
        _write(folder / f"{split}.csv", OUR_COLUMNS, rows)
        for cond in CONDITIONS:
            sub = [
                [c.path, c.system, c.lang, c.duration, c.text]
                for c in clips
                if c.split == split and condition(c) == cond
            ]
            if sub:
                _write(folder / "fine" / f"{split}___{cond}.csv", OUR_COLUMNS, sub)


def mlaad_row(c: Clip) -> list:
    arch = "formant" if "klatt" not in c.system else "klatt"
    return [
        c.path,
        c.system,
        LANG_NAMES[c.lang],
        c.lang == "en",
        c.duration,
        "none",
        arch,
        f'{c.text} (said, "slowly")',
    ]


def _write_mlaad(folder: Path, clips: list[Clip]) -> None:
    for split in ("train", "dev", "eval"):
        rows = [mlaad_row(c) for c in clips if c.split == split]
        if split == "eval":  # MLAAD's duplicate rows: the whole list again, EVAL_COPIES times in all
            rows = rows * EVAL_COPIES
        _write(folder / f"{split}.csv", MLAAD_COLUMNS, rows)
        for cond in CONDITIONS:
            sub = [mlaad_row(c) for c in clips if c.split == split and condition(c) == cond]
            if sub:
                _write(folder / "fine" / f"{split}___{cond}.csv", MLAAD_COLUMNS, sub)


def copy_corpus(src: Path, dst: Path) -> Path:
    """A private copy of a built corpus that a test may damage."""
    shutil.copytree(src, dst)
    return dst


# -- bad inputs -------------------------------------------------------------------------------
def write_tone(path: Path, seconds: float = 1.0, sample_rate: int = 16000, channels: int = 1, amplitude: float = 0.5):
    """A 440 Hz tone (or silence with amplitude=0) as 16-bit PCM."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    x = (amplitude * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sample_rate, subtype="PCM_16")
    return path


def write_junk(path: Path, n_bytes: int = 4000, seed: int = 0) -> Path:
    """Random bytes under an audio name: unreadable."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).integers(0, 256, n_bytes, dtype=np.uint8).tobytes())
    return path


def write_empty(path: Path, sample_rate: int = 16000) -> Path:
    """A valid WAV header with 0 frames."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.zeros(0, np.float32), sample_rate, subtype="PCM_16")
    return path


# -- pytest fixture (import it into a test module: ``from mlaad_fixture import mlaad_corpus``) --------
import pytest  # noqa: E402

_BUILT: dict[str, Path] = {}


@pytest.fixture(scope="session")
def mlaad_corpus(tmp_path_factory) -> Path:
    """Root of a corpus built by ``make_corpus`` once per session; copy it (``copy_corpus``) to damage it."""
    key = str(tmp_path_factory.getbasetemp())
    if key not in _BUILT:
        root = tmp_path_factory.mktemp("mlaad")
        make_corpus(root)
        _BUILT[key] = root
    return _BUILT[key]
