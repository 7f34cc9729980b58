"""The fresh outside check set (benchmarks/fresh_corpus.py) shares no system setting, language or text with
the corpus (its dev-only systems included) or with the old outside set, and plans all four conditions in
eval. Nothing is rendered."""

from __future__ import annotations

import re
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import fresh_corpus as fresh  # noqa: E402
import outside_corpus as outside  # noqa: E402

from sourcetrace.data.corpus import engines, systems, text  # noqa: E402
from sourcetrace.data.protocol import CONDITIONS  # noqa: E402

# the lead's three dev-only systems, named here as well in case the corpus table changes
DEV_ONLY = {("espeak", "m2"), ("espeak", "klatt5"), ("festival", "us3_mbrola")}
SAM_DEFAULT = ("sam", 72, 64, 128, 128)


def corpus_keys(system: systems.System) -> set[tuple]:
    """Every engine setting one corpus system renders with (a re-vocoder: its own and its source's)."""
    p = system.params
    if system.engine == "espeak":
        return {("espeak", p["variant"].lower())}
    if system.engine == "espeak_mbrola":
        return {("mbrola", v.split("-")[1]) for v in p["voices"].values()}
    if system.engine in ("festival", "flite"):
        return {(system.engine, p["voice"])}
    if system.engine == "pico":
        return {("pico", engines._PICO_LANG[lang], 100, 100) for lang in system.languages}
    if system.engine == "sam":
        return {SAM_DEFAULT}
    if system.engine == "piper":
        return {("piper", "joe")}
    if system.engine == "revocode":
        source = corpus_keys(systems.BY_NAME[p["source"]])
        return source | {("revocode", p["method"], key) for key in source}
    raise AssertionError(f"no setting key for corpus engine {system.engine!r}: extend this test")


def outside_keys(kind: str, arg) -> set[tuple]:
    if kind == "espeak":
        return {("espeak", arg.lower())}
    if kind == "world":
        return {("espeak", arg.lower()), ("revocode", "world", ("espeak", arg.lower()))}
    if kind == "sam":
        return {("sam", 60, 48, 128, 128)}
    if kind == "pico_gb":
        return {("pico", "en-GB", 100, 100)}
    if kind == "griffinlim":
        return {("pico", "en-GB", 100, 100), ("revocode", "griffinlim", ("pico", "en-GB", 100, 100))}
    raise AssertionError(f"no setting key for outside kind {kind!r}: extend this test")


def fresh_key(engine: str, settings: dict) -> tuple:
    if engine == "espeak":
        return ("espeak", settings["variant"].lower())
    if engine in ("festival", "flite"):
        return (engine, settings["voice"])
    if engine == "sam":
        return ("sam", settings["speed"], settings["pitch"], settings["mouth"], settings["throat"])
    if engine == "pico":
        return ("pico", settings["voice"], settings["pitch"], settings["speed"])
    if engine == "revocode":
        return ("revocode", settings["method"], fresh_key(*settings["source"]))
    raise AssertionError(f"no setting key for fresh engine {engine!r}: extend this test")


def used_keys() -> set[tuple]:
    keys = set(DEV_ONLY)
    for s in systems.SYSTEMS:
        keys |= corpus_keys(s)
    for _, _, _, (kind, arg) in outside.SYSTEMS.values():
        keys |= outside_keys(kind, arg)
    return keys


def test_no_fresh_system_setting_or_name_was_used_before():
    used = used_keys()
    assert ("espeak", "f3") in used and ("espeak", "andy") in used and ("festival", "us3_mbrola") in used
    for name, (_, _, _, (engine, settings)) in fresh.SYSTEMS.items():
        key = fresh_key(engine, settings)
        assert key not in used, f"{name}: {key} is used by the corpus or the old outside set"
        if engine == "revocode":  # a new source too, not only a new method over an old one
            assert key[2] not in used, f"{name}: its source {key[2]} is used before"
    assert len({fresh_key(*spec) for *_, spec in fresh.SYSTEMS.values()}) == len(fresh.SYSTEMS)
    old_names = {s.name for s in systems.SYSTEMS} | set(outside.SYSTEMS)
    assert not set(fresh.SYSTEMS) & old_names
    families = Counter(family for family, *_ in fresh.SYSTEMS.values())
    assert len(families) >= 5 and "lpc_vocoder" in families and "world_vocoder" in families


def test_fresh_languages_are_new():
    used = set(text.LANGUAGES) | {lang for s in systems.SYSTEMS for lang in s.languages} | set(outside.MULTI)
    assert 3 <= len(fresh.LANGS) <= 5
    assert not set(fresh.LANGS) & used
    assert {lang for _, langs, _, _ in fresh.SYSTEMS.values() for lang in langs} == set(fresh.LANGS)
    assert set(fresh.SENTENCES) == set(fresh.LANGS) == set(fresh.ESPEAK_LANG)


def test_fresh_texts_are_new_sentences_without_numbers():
    corpus_sentences = {x for lang in text.LANGUAGES for x in text.sentences(lang)}
    old_texts = {row["text"] for row in outside.plan(12, 0)}
    for lang, sents in fresh.SENTENCES.items():
        assert len(sents) >= 30 and len(set(sents)) == len(sents), lang
        assert not set(sents) & corpus_sentences
        assert not any(re.search(r"\d", x) for x in sents), f"{lang}: number texts are the old outside set's"
        pools = fresh.sentence_pools(lang)
        assert not set(pools["train"]) & set(pools["eval"]) and len(pools["train"]) + len(pools["eval"]) == len(sents)
    assert all(x.isascii() for x in fresh.SENTENCES["id"])  # read by English front ends too
    rows = fresh.plan(12, 0)
    assert not {r["text"] for r in rows} & (old_texts | corpus_sentences)
    for r in rows:  # each clip reads two sentences of its own split's pool
        pool = fresh.sentence_pools(r["language"])[r["split"]]
        assert any(r["text"] == f"{a} {b}" for a in pool for b in pool if a != b), r["text"]


def test_the_plan_has_every_condition_in_eval_and_a_modest_size():
    rows = fresh.plan(12, 0)
    assert rows == fresh.plan(12, 0)  # reproducible
    assert len({r["path"] for r in rows}) == len(rows)
    by_split = outside.conditions(rows)  # the protocol both check sets write
    assert all(by_split["eval"][cond] for cond in CONDITIONS), {c: len(v) for c, v in by_split["eval"].items()}
    assert not any(by_split["dev"].values())
    assert set(map(len, by_split["train"].values())) - {0} and not any(
        by_split["train"][c] for c in CONDITIONS if c != "lang_seen___model_seen"
    )
    train = [r for r in rows if r["split"] == "train"]
    assert {r["language"] for r in train} == set(fresh.TRAIN_LANGS) and 1 <= len(fresh.TRAIN_LANGS) <= 2
    seen = {r["model_name"] for r in train}
    assert seen == {name for name, (_, _, has_train, _) in fresh.SYSTEMS.items() if has_train}
    assert 0 < len(seen) < len(fresh.SYSTEMS)
    cells = Counter((r["model_name"], r["language"]) for r in rows)
    assert set(cells.values()) == {12} and 300 <= len(rows) <= 700
    for r in rows:
        assert r["path"] == f"./fake/{r['language']}/{r['model_name']}/{Path(r['path']).name}"
        assert r["architecture"] == fresh.SYSTEMS[r["model_name"]][0]
