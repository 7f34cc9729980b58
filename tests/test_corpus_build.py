"""The TTS corpus builder: layout, MLAAD protocol semantics, canonical audio, determinism, resume."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from sourcetrace.data.corpus import build as build_mod
from sourcetrace.data.corpus import build_corpus, engines
from sourcetrace.data.corpus.systems import (
    BY_NAME,
    PRESETS,
    SEEN_LANGUAGES,
    SYSTEMS,
    UNSEEN_LANGUAGES,
    cell_split_counts,
    plan,
)
from sourcetrace.data.corpus.text import LANGUAGES, text_pools
from sourcetrace.errors import SourcetraceError

CONDITIONS = build_mod.CONDITIONS


def read(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def protocol(root: Path) -> dict[str, list[dict]]:
    return {s: read(root / "protocol" / f"{s}.csv") for s in ("train", "dev", "eval")}


def tiny_systems() -> set[str]:
    return {s.name for s in SYSTEMS if set(s.languages) & set(PRESETS["tiny"].languages)}


# -- design (no synthesis) ----------------------------------------------------------------------
def test_system_table_follows_the_design():
    assert len(SYSTEMS) == 31 and len(BY_NAME) == 31
    tested = [s for s in SYSTEMS if not s.dev_only]  # the 28 of train and eval
    unseen = [s for s in tested if not s.seen]
    assert 8 <= len(unseen) <= 10, "about a third of the systems are unseen"
    assert len({s.engine for s in unseen}) >= 5, "unseen systems are spread over engine families"
    for s in SYSTEMS:
        assert s.engine in engines.ENGINES
        if s.seen:
            assert set(s.languages) & set(SEEN_LANGUAGES), f"{s.name} is seen but speaks no seen language"
    assert {s.name for s in unseen if s.in_dev} < {s.name for s in unseen}, "dev shows a strict subset of unseen"
    demo = PRESETS["demo"]
    assert len(demo.languages) >= 6
    assert all(sum(cell_split_counts(s, lang, 100).values()) == 100 for s in tested for lang in s.languages)
    dev_only = [s for s in SYSTEMS if s.dev_only]
    assert len(dev_only) == 3 and not any(s.seen or s.in_dev for s in dev_only)
    for s in dev_only:  # half a cell, in dev only, in seen and dev-visible languages only
        for lang in s.languages:
            want = {"dev": 50} if lang in SEEN_LANGUAGES or lang in ("it", "nl") else {}
            assert cell_split_counts(s, lang, 100) == want


def test_dev_has_unseen_near_relatives_in_unseen_languages_and_eval_does_not_change(monkeypatch):
    """The validation design: dev's unseen-system cells hold systems that are near relatives of each other (two
    espeak-ng variants beside the dev-visible klatt4) in an unseen language; eval's clips are exactly those of
    the design without dev's own systems."""
    from sourcetrace.data.corpus import systems

    clips = plan("demo", 0, "flac")
    dev_unseen_it = {c.system for c in clips if c.split == "dev" and c.language == "it" and not BY_NAME[c.system].seen}
    assert {"espeak_m2", "espeak_klatt5", "espeak_klatt4"} <= dev_unseen_it
    assert not {c.system for c in clips if c.split != "dev"} & {s.name for s in SYSTEMS if s.dev_only}
    monkeypatch.setattr(systems, "SYSTEMS", tuple(s for s in SYSTEMS if not s.dev_only))
    without = systems.plan("demo", 0, "flac")
    assert [c for c in clips if c.split != "dev"] == [c for c in without if c.split != "dev"]
    assert [c for c in clips if not BY_NAME[c.system].dev_only] == without


def test_text_pools_are_large_and_disjoint():
    for lang in ("en", "de", "fr", "es", "it", "nl", "pt", "pl"):
        pools = text_pools(lang)
        assert len(set().union(*pools.values())) >= 200
        assert not set(pools["train"]) & (set(pools["dev"]) | set(pools["eval"]))
    assert set(LANGUAGES) == set(SEEN_LANGUAGES) | set(UNSEEN_LANGUAGES)


def test_plan_is_deterministic_across_processes():
    code = (
        "import hashlib; from sourcetrace.data.corpus.systems import plan; "
        "print(hashlib.sha1(repr(plan('tiny', 3, 'flac')).encode()).hexdigest())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": str(h)},
        ).stdout
        for h in (1, 2)
    }
    assert len(outs) == 1
    a, b = plan("tiny", 0, "flac"), plan("tiny", 1, "flac")
    assert [(c.system, c.language, c.split) for c in a] == [(c.system, c.language, c.split) for c in b]
    assert [c.text for c in a] != [c.text for c in b], "the seed chooses the sentences"


def test_full_preset_is_100_clips_per_system_and_language():
    clips = [c for c in plan("full", 0, "flac") if not BY_NAME[c.system].dev_only]
    cells = Counter((c.system, c.language) for c in clips)
    assert set(cells.values()) == {100}
    assert len(cells) == sum(len(s.languages) for s in SYSTEMS if not s.dev_only)


def test_missing_engine_is_named_with_its_package(monkeypatch):
    monkeypatch.setattr(engines.shutil, "which", lambda cmd: None if cmd == "pico2wave" else "/bin/true")
    lacks = engines.missing_requirements(BY_NAME["pico_griffinlim"])
    assert any("pico2wave" in m and "libttspico-utils" in m for m in lacks)
    assert engines.missing_requirements(BY_NAME["espeak_default"]) == []


def test_build_with_a_missing_engine_exits_2_before_making_a_clip(tmp_path, monkeypatch, capsys):
    from sourcetrace.cli import main

    monkeypatch.setattr(engines.shutil, "which", lambda cmd: None if cmd == "pico2wave" else "/bin/true")
    assert main(["corpus", "build", "--out", str(tmp_path / "c"), "--preset", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "TTS engines missing" in err and "pico_griffinlim" in err and "libttspico-utils" in err
    assert not list((tmp_path / "c").rglob("*.wav"))


def test_engine_failure_names_engine_system_and_text(tmp_path, monkeypatch):
    calls = []

    def broken(text, lang, tmpdir, **kw):
        calls.append(text)
        raise engines.EngineError("no audio")

    monkeypatch.setitem(engines.ENGINES, "flite", broken)
    clips = [c for c in plan("tiny", 0, "flac") if c.system == "flite_slt"][:2]
    monkeypatch.setattr(build_mod, "plan", lambda *a: clips)
    with pytest.raises(engines.EngineError) as err:
        build_corpus(tmp_path / "c", preset="tiny", workers=1, progress=False)
    msg = str(err.value)
    assert "2 of 2 clips failed" in msg and "engine flite" in msg and "system flite_slt" in msg
    assert repr(clips[0].text) in msg
    assert len(calls) == 4, "each clip is retried once"
    assert not list((tmp_path / "c").rglob("*.flac")), "no partial clip is left behind"
    assert not (tmp_path / "c" / "protocol").exists()


# -- the built tiny corpus ------------------------------------------------------------------------
def test_layout_and_protocol_columns(tiny_corpus):
    rows = protocol(tiny_corpus)
    for split, table in rows.items():
        assert table, split
        assert {"path", "model_name", "language", "text"} <= set(table[0])
        for r in table:
            parts = r["path"].split("/")
            assert parts[:2] == [".", "fake"] and parts[2] == r["language"] and parts[3] == r["model_name"]
            assert parts[4].endswith(".flac")
            assert (tiny_corpus / r["path"]).is_file()
    systems = {r["model_name"] for t in rows.values() for r in t}
    assert systems == tiny_systems() and len(systems) >= 25
    assert {r["language"] for t in rows.values() for r in t} == set(PRESETS["tiny"].languages)
    on_disk = {str(p.relative_to(tiny_corpus)) for p in (tiny_corpus / "fake").rglob("*.flac")}
    assert on_disk == {r["path"][2:] for t in rows.values() for r in t}


def test_split_semantics_mirror_mlaad(tiny_corpus):
    rows = protocol(tiny_corpus)
    train_sys = {r["model_name"] for r in rows["train"]}
    assert all(BY_NAME[s].seen for s in train_sys)
    assert {r["language"] for r in rows["train"]} <= set(SEEN_LANGUAGES)
    per_system = Counter(r["model_name"] for r in rows["train"])
    assert min(per_system.values()) >= 3 and np.median(list(per_system.values())) >= 6
    dev_sys = {r["model_name"] for r in rows["dev"]}
    eval_sys = {r["model_name"] for r in rows["eval"]}
    dev_only = {s.name for s in SYSTEMS if s.dev_only}
    assert eval_sys == tiny_systems() - dev_only, "eval shows every system but dev's own"
    assert train_sys < dev_sys - dev_only < eval_sys, "dev shows some unseen systems"
    assert dev_only <= dev_sys
    assert {r["language"] for r in rows["eval"]} == set(PRESETS["tiny"].languages)
    train_text = {(r["language"], r["text"]) for r in rows["train"]}
    assert not train_text & {(r["language"], r["text"]) for s in ("dev", "eval") for r in rows[s]}


def test_condition_files_partition_each_split(tiny_corpus):
    rows = protocol(tiny_corpus)
    for split, table in rows.items():
        got = []
        for cond in CONDITIONS:
            path = tiny_corpus / "protocol" / "fine" / f"{split}___{cond}.csv"
            header = path.read_text().splitlines()[0].split(",")
            assert header[:2] == ["path", "model_name"]
            part = read(path)
            if split == "train":
                assert bool(part) == (cond == "lang_seen___model_seen")
            else:
                assert part, f"{split} has no clips in condition {cond}"
            got += [r["path"] for r in part]
        assert sorted(got) == sorted(r["path"] for r in table)


def test_audio_is_canonical(tiny_corpus):
    rows = protocol(tiny_corpus)["eval"]
    one_per_system = {r["model_name"]: r for r in rows}
    for name, r in one_per_system.items():
        audio, sr = sf.read(tiny_corpus / r["path"], dtype="float32", always_2d=True)
        assert sr == 16000 and audio.shape[1] == 1, name
        x = audio[:, 0]
        assert 0.95 <= np.abs(x).max() <= 1.0, name
        assert len(x) / sr >= 2.0, f"{name}: shorter than the 2 s training crop"
        edge = int(0.03 * sr)  # speech (> -46 dBFS) within 30 ms of both ends
        assert np.abs(x[:edge]).max() > 0.005 and np.abs(x[-edge:]).max() > 0.005, f"{name}: silence not trimmed"
        assert abs(float(x.mean())) < 0.01, f"{name}: DC offset"
        assert abs(float(r["duration"]) - len(x) / sr) < 1e-2


# -- resume, manifest, CLI (on copies of the tiny corpus) --------------------------------------------
@pytest.fixture
def tiny_copy(tiny_corpus, tmp_path) -> Path:
    root = tmp_path / "tiny"
    shutil.copytree(tiny_corpus, root)
    return root


def test_resume_remakes_only_the_missing_clip(tiny_copy):
    before = protocol(tiny_copy)
    victim = tiny_copy / before["dev"][5]["path"]
    victim.unlink()
    stray = victim.with_name(f".{victim.stem}{build_mod.TMP_MARK}999{victim.suffix}")
    stray.write_bytes(b"truncated")
    summary = build_corpus(tiny_copy, preset="tiny", workers=1, progress=False)
    assert summary["made"] == 1 and summary["reused"] == summary["clips"] - 1
    assert summary["strays_removed"] == 1 and not stray.exists()
    assert sf.info(victim).samplerate == 16000
    after = protocol(tiny_copy)
    for split in before:
        assert [(r["path"], r["text"]) for r in after[split]] == [(r["path"], r["text"]) for r in before[split]]


def test_resume_with_other_settings_is_refused(tiny_copy):
    with pytest.raises(SourcetraceError, match="seed=0"):
        build_corpus(tiny_copy, preset="tiny", seed=1, progress=False)
    assert json.loads((tiny_copy / "corpus.json").read_text())["seed"] == 0


def test_corpus_of_an_older_format_is_refused_with_what_to_do(tiny_copy):
    manifest = tiny_copy / "corpus.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "version": 1}))
    with pytest.raises(SourcetraceError, match="format version 1.*delete that folder or use another --out"):
        build_corpus(tiny_copy, preset="tiny", progress=False)
    assert json.loads(manifest.read_text())["version"] == 1


def _digest(audio_and_rate) -> str:
    audio, sr = audio_and_rate
    return f"{sr}:{hashlib.sha1(np.ascontiguousarray(audio).tobytes()).hexdigest()}"


def test_piper_renders_a_sentence_the_same_whatever_came_before(tmp_path):
    """VITS noise comes from a generator inside the ONNX session: each clip must get its own, seeded by its text."""
    pytest.importorskip("piper")
    first = _digest(engines.piper("The lamp on the table is bright.", "en", tmp_path))
    engines.piper("A different sentence comes in between.", "en", tmp_path)
    again = _digest(engines.piper("The lamp on the table is bright.", "en", tmp_path))
    assert again == first


def test_mbrola_renders_the_same_audio_every_time(tmp_path):
    """mb-es2 lacks diphones and warns about each; espeak-ng's own MBROLA pipe made its audio vary run to run."""
    if engines.missing_requirements(BY_NAME["mbrola_es2"]):
        pytest.skip("MBROLA es2 voice not installed")
    text = "Una enfermera alegre escribe una historia corta en el centro de la ciudad una vez por semana."
    digests = {_digest(engines.espeak_mbrola(text, "es", tmp_path, {"es": "mb-es2"})) for _ in range(8)}
    assert len(digests) == 1


def test_cli_build_prints_a_summary(tiny_copy, capsys):
    from sourcetrace.cli import main

    assert main(["corpus", "build", "--out", str(tiny_copy), "--preset", "tiny", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "preset tiny" in out and "train" in out and "MB on disk" in out


@pytest.mark.slow
def test_same_seed_rebuilds_the_same_corpus(tiny_corpus, tmp_path):
    """A from-scratch rebuild (another worker count) gives the same protocol and the same audio, every engine."""
    summary = build_corpus(tmp_path / "again", preset="tiny", seed=0, workers=1, progress=False)
    assert summary["reused"] == 0
    a, b = protocol(tiny_corpus), protocol(tmp_path / "again")
    keys = ("path", "model_name", "language", "text")
    for split in a:
        assert [[r[k] for k in keys] for r in a[split]] == [[r[k] for k in keys] for r in b[split]]
    differ = [
        r["path"]
        for split in a
        for r in a[split]
        if not np.array_equal(sf.read(tiny_corpus / r["path"])[0], sf.read(tmp_path / "again" / r["path"])[0])
    ]
    assert differ == []
