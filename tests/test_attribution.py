"""Analyses, enrolment and tracing (through the bundle a run exports on first use) with a model trained
for a minute on the tiny real TTS corpus."""

import json
import re

import numpy as np
import pandas as pd
import pytest

import sourcetrace
from sourcetrace.bundle import files
from sourcetrace.commands.analyze import analyze
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import SourcetraceError
from sourcetrace.training.loop import train

pytestmark = pytest.mark.slow

TRAIN = {
    "train.epochs": 25,
    "train.eval_every": 25,
    "train.warmup_epochs": 2,
    "train.batch_size": 32,
    "train.lr": 3e-3,
    "train.eval_test": False,
    "model.embedding_dim": 32,
    "model.channels": 8,
    "loss.name": "aamsoftmax",
    "data.crop_seconds": 1.0,
    "data.eval_seconds": 3.0,
    "data.short_clips": "pad",
}
NEW = ("sam", "flite_awb", "festival_ked_diphone", "mbrola_it4", "festival_lp_diphone")  # in no train/dev split


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("attribution") / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), out)
    return out


@pytest.fixture(scope="module")
def analysis(run, tiny_corpus):
    return analyze(run, tiny_corpus, split="dev")


def test_analyze_writes_every_artefact_and_a_confusion_matrix_of_every_dev_system(analysis, tiny_corpus):
    out = analysis["out"]
    names = {p.name for p in analysis["artifacts"]}
    assert {
        "confusion.parquet",
        "confusion.png",
        "umap.png",
        "umap.parquet",
        "det.png",
        "openset.json",
        "probe.json",
        "metrics.json",
    } <= names
    assert all(p.is_file() and p.stat().st_size > 0 for p in analysis["artifacts"])
    dev = read_protocol(tiny_corpus, splits=("dev",)).tables["dev"]
    cm = pd.read_parquet(out / "confusion.parquet")
    assert set(cm["true"]) == set(dev["system"]) == set(cm["predicted"])
    coords = pd.read_parquet(out / "umap.parquet")
    assert len(coords) == len(dev) and np.isfinite(coords[["x", "y"]].to_numpy()).all()
    m = analysis["metrics"]
    assert 0.0 <= m["probe_accuracy"] <= 1.0 and 0.0 <= m["eer"] <= 100.0
    assert 0.0 <= m["openset_auroc"] <= 1.0  # dev holds unseen systems: AUROC is reported
    openset = json.loads((out / "openset.json").read_text())
    assert openset["threshold"]["operating_point"] == "fur" and openset["threshold"]["false_unknown_rate"] <= 0.05
    assert set(openset["unknown_systems"]) == set(dev.loc[dev["label"] < 0, "system"])


def test_enrolled_unseen_systems_are_named_for_their_held_out_clips(run, tiny_corpus):
    m = sourcetrace.load(run, device="cpu")  # a run folder: its bundle is exported on first use
    assert files.is_bundle(run / "best" / "bundle") and m.path == run / "best" / "bundle"
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    held_out, truth = [], []
    for system in NEW:
        clips = sorted(ev.loc[ev["system"] == system, "file"])
        res = m.enroll(system, clips[:5])
        assert res.added == 5 and not res.failed
        held_out += clips[5:]
        truth += [system] * len(clips[5:])
    assert dict(m.enrolled_systems()) == dict.fromkeys(NEW, 5)
    results = m.trace(held_out, top_k=3)
    top1 = [r.top[0][0] for r in results]
    hit = np.mean([p == t for p, t in zip(top1, truth)])
    chance = 1 / len(m.systems)
    assert hit >= 0.3 > 5 * chance, (hit, list(zip(truth, top1)))  # 0.6 when written; chance ~0.04
    assert all(len(r.top) == 3 and r.decision in (r.top[0][0], "unknown") for r in results)
    assert all((r.decision == "unknown") == (r.knownness < m.threshold["value"]) for r in results)


def test_extending_a_system_adds_only_new_clips(run, tiny_corpus):
    m = sourcetrace.load(run, device="cpu")
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    files_ = sorted(ev.loc[ev["system"] == "mbrola_de2", "file"])[:4]
    assert m.enroll("mbrola_de2_test", files_[:2]).n_clips == 2
    both = m.enroll("mbrola_de2_test", files_[2:] + files_[:1])  # the repeated clip is not counted twice
    assert both.n_clips == 4 and both.added == 2 and both.duplicates == [files_[0]]


def test_analyze_takes_a_bundle(run, tiny_corpus, tmp_path):
    res = analyze(sourcetrace.load(run, device="cpu").path, tiny_corpus, split="dev", out=tmp_path / "a")
    assert 0.0 <= res["metrics"]["eer"] <= 100.0


def test_clear_errors(run, tmp_path):
    m = sourcetrace.load(run, device="cpu")
    with pytest.raises(SourcetraceError, match="invalid system name"):
        m.enroll("unknown", ["x.wav"])
    with pytest.raises(SourcetraceError, match="no usable clip"):
        m.enroll("nothing", [str(tmp_path / "missing.wav")])
    with pytest.raises(SourcetraceError, match="not a bundle"):
        sourcetrace.load(tmp_path)


def test_eval_analysis_applies_the_dev_threshold(run, tiny_corpus, tmp_path):
    res = analyze(run, tiny_corpus, split="eval", out=tmp_path / "eval")
    thr = res["threshold"]
    assert thr.split == "dev" and thr.operating_point == "fur"
    m = res["metrics"]
    assert 0.0 <= m["openset_false_unknown_rate"] <= 1.0 and 0.0 <= m["openset_false_known_rate"] <= 1.0
    assert 0.0 <= m["openset_auroc"] <= 1.0


def test_enrolment_warns_when_a_new_system_overlaps_a_near_relative(run, tiny_corpus, tmp_path, capsys):
    """pico_griffinlim (pico re-vocoded with Griffin-Lim, absent from training) is pico to the model: enrolling
    it says it overlaps pico (or its other re-vocoding, pico_world); sam, an 8-bit formant synthesiser with no
    relative in training, is enrolled without a warning."""
    import shutil

    from sourcetrace.cli import main

    bundle = tmp_path / "bundle"
    shutil.copytree(sourcetrace.load(run, device="cpu").path, bundle)
    m = sourcetrace.load(bundle, device="cpu")
    for name, _ in m.enrolled_systems():  # what the other tests enrolled
        m.remove(name)
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    griffin = sorted(ev.loc[ev["system"] == "pico_griffinlim", "file"])
    sam = sorted(ev.loc[ev["system"] == "sam", "file"])
    capsys.readouterr()
    assert main(["enroll", "--model", str(bundle), "--system", "new_griffin", *griffin]) == 0
    out, err = capsys.readouterr()
    assert re.search(r"^warning: new_griffin overlaps pico(_world)?: the bundle already attributed \d+ of its", err)
    res = sourcetrace.load(bundle, device="cpu").enroll("new_griffin_api", griffin)
    ov = res.overlap
    assert ov.overlaps and ov.nearest in ("pico", "pico_world", "new_griffin") and ov.n_clips == len(griffin)
    assert ov.known_as > len(griffin) / 2 and sum(ov.decisions.values()) == len(griffin)
    card = json.loads((bundle / files.CARD_JSON).read_text())
    first = next(e for e in card["enrolled_systems"] if e["name"] == "new_griffin")
    assert first["overlap"]["overlaps"] and first["overlap"]["nearest"] in ("pico", "pico_world")
    assert main(["enroll", "--model", str(bundle), "--system", "new_sam", *sam]) == 0
    out, err = capsys.readouterr()
    assert "warning" not in err and "new_sam: nearest existing system" in out
