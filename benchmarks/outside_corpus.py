"""Build a small check corpus of TTS systems and languages that the corpus builder never uses.

A model trained on the project's corpus is meant to trace clips of systems it has never seen. This
script renders such clips with the engines that install here, using voices and languages that
``sourcetrace.data.corpus.systems`` does not contain, in MLAAD's layout (``fake/<lang>/<system>/``,
``protocol/{train,dev,eval}.csv`` and ``protocol/fine/``), so ``sourcetrace evaluate`` scores any model on
it beside the featureless baseline:

* systems: espeak-ng voice variants outside the corpus (f2, Andy, robosoft, Gene, grandpa, klatt2),
  SAM at another pitch and speed, SVOX Pico's en-GB voice, and two re-vocoded ones (WORLD over
  espeak +f2, Griffin-Lim over Pico en-GB);
* languages: English (the corpus's texts, eval pool) and Swedish, Czech, Romanian, Finnish, which the
  corpus has none of. Their texts are sequences of numbers, which espeak-ng reads in each language's
  own words, so no word list is needed.

Within this corpus, half the systems and the languages en, sv have a train split (references for
the open-set metrics and the seen/unseen conditions); the other systems and cs, ro, fi are eval only.
Nothing here is a training set for the product: it is a measurement.

    .venv/bin/python benchmarks/outside_corpus.py --out data/outside [--per-cell 12]
    .venv/bin/sourcetrace evaluate --model MODEL --root data/outside
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import soundfile as sf

from sourcetrace.data.corpus import engines
from sourcetrace.data.corpus.canonical import RATE, canonicalise
from sourcetrace.data.corpus.text import pick_texts
from sourcetrace.data.protocol import CONDITIONS, SPLITS, condition_name

ESPEAK_LANG = {"en": "en-us", "sv": "sv", "cs": "cs", "ro": "ro", "fi": "fi"}
MULTI = ("en", "sv", "cs", "ro", "fi")
# name -> (family, languages, has train split, how to render)
SYSTEMS = {
    "espeak_f2": ("formant", MULTI, True, ("espeak", "f2")),
    "espeak_andy": ("formant", MULTI, True, ("espeak", "Andy")),
    "espeak_robosoft": ("formant", MULTI, False, ("espeak", "robosoft")),
    "espeak_gene": ("formant", MULTI, False, ("espeak", "Gene")),
    "espeak_grandpa": ("formant", MULTI, True, ("espeak", "grandpa")),
    "espeak_klatt2": ("formant", MULTI, False, ("espeak", "klatt2")),
    "sam_high_fast": ("formant_8bit", ("en",), True, ("sam", None)),
    "pico_en_gb": ("hmm_parametric", ("en",), True, ("pico_gb", None)),
    "espeak_f2_world": ("world_vocoder", MULTI, False, ("world", "f2")),
    "pico_gb_griffinlim": ("griffin_lim", ("en",), False, ("griffinlim", None)),
}
TRAIN_LANGS = ("en", "sv")


def number_text(key: str) -> str:
    """Five or six numbers, read by espeak-ng in the voice's own language (3-8 s of speech)."""
    rng = random.Random(key)
    nums = [str(rng.choice([rng.randint(2, 99), rng.randint(100, 999), rng.randint(1000, 99999)])) for _ in range(6)]
    return ", ".join(nums[:3]) + ". " + ", ".join(nums[3 : 3 + rng.randint(2, 3)]) + "."


def _run(cmd: list[str], out: Path) -> tuple[np.ndarray, int]:
    res = subprocess.run(cmd, capture_output=True, timeout=120)
    if res.returncode != 0 or not out.exists():
        raise RuntimeError(f"{cmd[0]} failed: {res.stderr.decode(errors='replace')[-200:]}")
    audio, sr = sf.read(str(out), dtype="float64", always_2d=False)
    return audio, int(sr)


def render(system: str, lang: str, text: str, tmp: Path) -> tuple[np.ndarray, int]:
    kind, arg = SYSTEMS[system][3]
    if kind in ("espeak", "world"):
        audio, sr = _run(
            ["espeak-ng", "-v", f"{ESPEAK_LANG[lang]}+{arg}", "-w", str(tmp / "e.wav"), text], tmp / "e.wav"
        )
        return (engines.world(audio, sr), sr) if kind == "world" else (audio, sr)
    if kind == "sam":
        from samtts import SamTTS

        SamTTS(speed=60, pitch=48).save(text, str(tmp / "s.wav"))
        audio, sr = sf.read(str(tmp / "s.wav"), dtype="float64")
        return audio, int(sr)
    audio, sr = _run(["pico2wave", "-l", "en-GB", "-w", str(tmp / "p.wav"), text], tmp / "p.wav")
    return (engines.griffinlim(audio, sr), sr) if kind == "griffinlim" else (audio, sr)


def plan(per_cell: int, seed: int) -> list[dict]:
    rows = []
    for system, (family, langs, seen, _) in SYSTEMS.items():
        for lang in langs:
            n_train = per_cell // 2 if seen and lang in TRAIN_LANGS else 0
            for split, n in (("train", n_train), ("eval", per_cell - n_train if n_train else per_cell)):
                key = f"outside/{seed}/{system}/{lang}/{split}"
                texts = (
                    pick_texts("en", split, n, key) if lang == "en" else [number_text(f"{key}/{i}") for i in range(n)]
                )
                for i, text in enumerate(texts):
                    rel = f"fake/{lang}/{system}/{system}_{lang}_{split}{i:03d}.flac"
                    rows.append(
                        {
                            "split": split,
                            "path": f"./{rel}",
                            "model_name": system,
                            "language": lang,
                            "architecture": family,
                            "text": text,
                        }
                    )
    return rows


def render_clip(root: str, row: dict, render_fn, prefix: str = "outside") -> tuple[str, float | None, str | None]:
    """Render one planned row with ``render_fn(system, language, text, tmpdir)`` into ``root``, canonicalised
    as the corpus is (kept if already there): (path, seconds, None) or (path, None, the error)."""
    final = Path(root) / row["path"][2:]
    if final.exists():
        return row["path"], sf.info(str(final)).duration, None
    try:
        with tempfile.TemporaryDirectory(prefix=f"sourcetrace-{prefix}-") as tmp:
            audio, sr = render_fn(row["model_name"], row["language"], row["text"], Path(tmp))
        y = canonicalise(audio, sr)
        final.parent.mkdir(parents=True, exist_ok=True)
        part = final.with_name(f".{final.name}.part.flac")
        sf.write(str(part), y, RATE, format="FLAC", subtype="PCM_16")
        os.replace(part, final)
        return row["path"], len(y) / RATE, None
    except Exception as err:  # noqa: BLE001 - reported per clip
        return row["path"], None, f"{row['model_name']}/{row['language']}: {type(err).__name__}: {err}"


def make(root: str, row: dict) -> tuple[str, float | None, str | None]:
    return render_clip(root, row, render)


def conditions(rows: list[dict]) -> dict[str, dict[str, list[dict]]]:
    """split -> condition -> rows; seen systems and languages are those of the train rows (as MLAAD)."""
    train = [r for r in rows if r["split"] == "train"]
    seen_models, seen_langs = {r["model_name"] for r in train}, {r["language"] for r in train}
    out: dict[str, dict[str, list[dict]]] = {split: {cond: [] for cond in CONDITIONS} for split in SPLITS}
    for r in rows:
        out[r["split"]][condition_name(r["language"] in seen_langs, r["model_name"] in seen_models)].append(r)
    return out


def write_protocol(root: str, rows: list[dict]) -> None:
    """``protocol/{train,dev,eval}.csv`` and ``protocol/fine/<split>___<condition>.csv`` of the rendered rows
    (dev stays empty: a check set calibrates nothing)."""
    proto = Path(root) / "protocol"
    (proto / "fine").mkdir(parents=True, exist_ok=True)
    for split, by_cond in conditions(rows).items():
        write_csv(proto / f"{split}.csv", [r for r in rows if r["split"] == split])
        for cond, part in by_cond.items():
            write_csv(proto / "fine" / f"{split}___{cond}.csv", part)


def write_csv(path: Path, rows: list[dict]) -> None:
    cols = ("path", "model_name", "language", "architecture", "duration", "text")
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--per-cell", type=int, default=12, help="clips per system and language")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    a = ap.parse_args()
    rows = plan(a.per_cell, a.seed)
    with ProcessPoolExecutor(a.workers) as pool:
        done = list(pool.map(make, [a.out] * len(rows), rows, chunksize=8))
    errors = [e for _, _, e in done if e]
    if errors:
        print(f"{len(errors)} clips failed; first: {errors[0]}", file=sys.stderr)
        return 1
    for row, (_, dur, _) in zip(rows, done):
        row["duration"] = f"{dur:.3f}"
    write_protocol(a.out, rows)
    train = [r for r in rows if r["split"] == "train"]
    hours = sum(float(r["duration"]) for r in rows) / 3600
    print(
        f"{len(rows)} clips ({len(train)} train), {len(SYSTEMS)} systems, {len(MULTI)} languages, {hours:.2f} h "
        f"-> {a.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
