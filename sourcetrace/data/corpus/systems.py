"""The 31 TTS systems of the corpus (28 in train and eval, 3 in dev only), the seen/unseen design, the
presets and the clip plan.

Split design (mirrors MLAAD's source-tracing protocol):

* Seen languages en, de, fr, es; unseen it, nl, pt, pl. Nine of the 28 systems of train and eval (a third) are
  unseen, spread over the families: most have a seen relative (mbrola_us2 vs festival_us2_mbrola,
  espeak_klatt4 vs espeak_klatt, pico_griffinlim vs pico_world), some none (sam).
* A cell is one system in one language. Seen system x seen language: 60 % train, 20 % dev,
  20 % eval. Train holds nothing else.
* Dev holds a subset of the unseen: the systems marked ``in_dev`` and the languages in
  ``DEV_LANGUAGES``. A cell whose system and language are both seen or dev-visible splits 50/50
  between dev and eval; every other cell goes to eval only. So eval has every system and language.
* Dev also holds three systems of its own (``dev_only``), never in train or eval: two espeak-ng variants
  (``m2``, ``klatt5``: near relatives of each other and of seen and dev-visible variants) and Festival's
  ``us3_mbrola`` (a relative of the seen ``mbrola_us3``). They give dev what eval has and dev lacked: unseen
  systems that are near relatives of one another, in unseen languages (it, nl) as in seen ones, so every
  recipe and scorer choice can be made on dev while eval's own unseen systems stay unseen by the choice.
  Eval is the same with or without them (its cells, clips and texts do not change).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from sourcetrace.data.corpus.text import LANGUAGES, pick_texts

SEEN_LANGUAGES = ("en", "de", "fr", "es")
UNSEEN_LANGUAGES = ("it", "nl", "pt", "pl")
DEV_LANGUAGES = ("it", "nl")  # unseen languages that dev already shows (eval shows all)
_ESPEAK_LANGS = ("en", "de", "fr", "es", "it", "nl", "pt", "pl")
_PICO_LANGS = ("en", "de", "fr", "es", "it")


@dataclass(frozen=True)
class System:
    """One TTS system: its engine (a key of engines.ENGINES), parameters and languages."""

    name: str
    family: str  # architecture label written to the protocol
    engine: str
    languages: tuple[str, ...]
    params: dict = field(default_factory=dict, hash=False, compare=False)
    seen: bool = True  # in train
    in_dev: bool = False  # unseen but already shown in dev
    dev_only: bool = False  # unseen, and shown in dev only (never in eval): the validation design's own systems
    costly: bool = False  # neural / re-vocoded: fewer clips in the small presets


def _espeak(variant: str, **kw) -> System:
    name = "espeak_" + (variant or "default")
    return System(name, "formant", "espeak", _ESPEAK_LANGS, {"variant": variant}, **kw)


def _mbrola(voice: str, langs: dict[str, str], **kw) -> System:
    return System(f"mbrola_{voice}", "diphone", "espeak_mbrola", tuple(langs), {"voices": langs}, **kw)


SYSTEMS: tuple[System, ...] = (
    _espeak(""),
    _espeak("f3"),
    _espeak("m3"),
    _espeak("klatt"),
    _espeak("klatt4", seen=False, in_dev=True),
    _mbrola("us1", {"en": "mb-us1"}),
    _mbrola("us2", {"en": "mb-us2"}, seen=False, in_dev=True),
    _mbrola("us3", {"en": "mb-us3"}),
    _mbrola("de1", {"de": "mb-de1", "en": "mb-de1-en"}),
    _mbrola("de2", {"de": "mb-de2", "en": "mb-de2-en"}, seen=False),
    _mbrola("fr4", {"fr": "mb-fr4", "en": "mb-fr4-en"}),
    _mbrola("es2", {"es": "mb-es2"}),
    _mbrola("it4", {"it": "mb-it4"}, seen=False),
    System("pico", "hmm_parametric", "pico", _PICO_LANGS),
    System("flite_kal16", "diphone", "flite", ("en",), {"voice": "kal16"}),
    System("flite_slt", "clustergen", "flite", ("en",), {"voice": "slt"}),
    System("flite_rms", "clustergen", "flite", ("en",), {"voice": "rms"}),
    System("flite_awb", "clustergen", "flite", ("en",), {"voice": "awb"}, seen=False),
    System("festival_kal_diphone", "diphone", "festival", ("en",), {"voice": "kal_diphone"}),
    System("festival_ked_diphone", "diphone", "festival", ("en",), {"voice": "ked_diphone"}, seen=False),
    System("festival_slt_hts", "hmm_hts", "festival", ("en",), {"voice": "cmu_us_slt_arctic_hts"}),
    System("festival_us2_mbrola", "diphone", "festival", ("en",), {"voice": "us2_mbrola"}),
    System("festival_lp_diphone", "diphone", "festival", ("it",), {"voice": "lp_diphone"}, seen=False),
    System("sam", "formant_8bit", "sam", ("en",), seen=False),
    System("piper_joe", "vits", "piper", ("en",), costly=True),
    System("pico_world", "world_vocoder", "revocode", _PICO_LANGS, {"source": "pico", "method": "world"}, costly=True),
    System(
        "pico_griffinlim",
        "griffin_lim",
        "revocode",
        _PICO_LANGS,
        {"source": "pico", "method": "griffinlim"},
        seen=False,
        in_dev=True,
        costly=True,
    ),
    System(
        "piper_world", "world_vocoder", "revocode", ("en",), {"source": "piper_joe", "method": "world"}, costly=True
    ),
    # dev only (appended: the clips and texts of every system above do not depend on them)
    _espeak("m2", seen=False, dev_only=True),
    _espeak("klatt5", seen=False, dev_only=True),
    System("festival_us3_mbrola", "diphone", "festival", ("en",), {"voice": "us3_mbrola"}, seen=False, dev_only=True),
)
BY_NAME = {s.name: s for s in SYSTEMS}
assert {lang for s in SYSTEMS for lang in s.languages} <= set(LANGUAGES)


@dataclass(frozen=True)
class Preset:
    """How much to build: languages, clips per cell (cheap / costly systems)."""

    languages: tuple[str, ...]
    per_cell: int
    per_cell_costly: int


PRESETS = {
    "tiny": Preset(("en", "de", "it", "nl"), per_cell=10, per_cell_costly=5),
    "demo": Preset(LANGUAGES, per_cell=30, per_cell_costly=20),
    "full": Preset(LANGUAGES, per_cell=100, per_cell_costly=100),
}


@dataclass(frozen=True)
class Clip:
    """One planned clip; ``rel`` is its path relative to the corpus root."""

    system: str
    language: str
    split: str
    text: str
    rel: str


def cell_split_counts(system: System, lang: str, n: int) -> dict[str, int]:
    """Clips of one (system, language) cell per split, following the design above."""
    lang_seen = lang in SEEN_LANGUAGES
    if system.dev_only:
        return {"dev": max(1, n // 2)} if lang_seen or lang in DEV_LANGUAGES else {}
    if system.seen and lang_seen:
        dev = ev = max(1, round(0.2 * n))
        return {"train": max(1, n - dev - ev), "dev": dev, "eval": ev}
    if (system.seen or system.in_dev) and (lang_seen or lang in DEV_LANGUAGES):
        dev = max(1, n // 2)
        return {"train": 0, "dev": dev, "eval": max(1, n - dev)}
    return {"train": 0, "dev": 0, "eval": n}


def plan(preset: str, seed: int, fmt: str) -> list[Clip]:
    """Every clip of ``preset`` in a fixed order: same preset and seed, same clips and texts."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    p = PRESETS[preset]
    clips: list[Clip] = []
    for system in SYSTEMS:
        n = p.per_cell_costly if system.costly else p.per_cell
        for lang in system.languages:
            if lang not in p.languages:
                continue
            for split, count in cell_split_counts(system, lang, n).items():
                key = f"{seed}/{system.name}/{lang}/{split}"
                for i, text in enumerate(pick_texts(lang, split, count, key)):
                    digest = hashlib.sha1(f"{key}/{i}/{text}".encode()).hexdigest()[:8]
                    stem = f"{system.name}_{lang}_{split}{i:03d}_{digest}"
                    clips.append(Clip(system.name, lang, split, text, f"fake/{lang}/{system.name}/{stem}.{fmt}"))
    return clips
