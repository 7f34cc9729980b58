"""Analyses, enrolment and tracing with a model trained for a minute on the tiny real TTS corpus."""

import json

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from sourcetrace.attribution import CALIBRATION, ENROLLMENT, Enrollment, enroll, trace
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import SourcetraceError
from sourcetrace.evaluation.analyze import analyze
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
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    held_out, truth = [], []
    for system in NEW:
        files = sorted(ev.loc[ev["system"] == system, "file"])
        enr = enroll(run, system, files[:5])
        assert not enr.skipped
        held_out += files[5:]
        truth += [system] * len(files[5:])
    stored = Enrollment.load(enr.path)
    assert stored.path.name == ENROLLMENT and (enr.path.parent / CALIBRATION).is_file()
    assert all(stored.n_clips[stored.systems.index(s)] == 5 for s in NEW)
    results, threshold, _ = trace(run, held_out, top_k=3)
    top1 = [r.top[0][0] for r in results]
    hit = np.mean([p == t for p, t in zip(top1, truth)])
    chance = 1 / len(stored.systems)
    assert hit >= 0.3 > 5 * chance, (hit, list(zip(truth, top1)))  # 0.6 when written; chance ~0.04
    assert all(len(r.top) == 3 and r.decision in (r.top[0][0], "unknown") for r in results)
    assert all((r.decision == "unknown") == (r.top[0][1] < threshold.value) for r in results)


def test_extending_a_system_updates_its_mean_exactly(run, tiny_corpus, tmp_path):
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    files = sorted(ev.loc[ev["system"] == "mbrola_de2", "file"])[:4]
    first = enroll(run, "mbrola_de2_test", files[:2])
    m2 = first.means[first.systems.index("mbrola_de2_test")].copy()
    both = enroll(run, "mbrola_de2_test", files[2:] + files[:1])  # the repeated clip is not counted twice
    i = both.systems.index("mbrola_de2_test")
    assert both.n_clips[i] == 4 and list(both.skipped) == [files[0]]
    alone = enroll(run, "mbrola_de2_alone", files[2:])
    m_alone = alone.means[alone.systems.index("mbrola_de2_alone")]
    np.testing.assert_allclose(both.means[i], (2 * m2 + 2 * m_alone) / 4, atol=1e-5)


def test_bad_clips_get_error_lines_and_good_ones_are_still_traced(run, tiny_corpus, tmp_path, capsys):
    good = sorted(read_protocol(tiny_corpus, splits=("dev",)).tables["dev"]["file"])[:2]
    silent, short, junk = tmp_path / "silent.wav", tmp_path / "short.wav", tmp_path / "junk.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    sf.write(short, 0.3 * np.sin(np.linspace(0, 900, 3200)).astype(np.float32), 16000)  # 0.2 s
    junk.write_text("not audio")
    clips = [good[0], str(silent), str(short), str(junk), str(tmp_path / "missing.wav"), good[1]]
    assert main(["trace", "--model", str(run), "--top-k", "2", *clips]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("# operating point: 'unknown' below cosine") and "5% false-unknown rate" in lines[1]
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert [r[0] for r in rows] == clips
    assert [r[1] == "ERROR" for r in rows] == [False, True, True, True, True, False]
    assert "silence" in rows[1][2] and "too short" in rows[2][2] and "unreadable" in rows[3][2]
    assert "does not exist" in rows[4][2]
    assert len(rows[0][2].split("  ")) == 2  # top-2 with scores


def test_clear_errors(run, tmp_path):
    with pytest.raises(SourcetraceError, match="invalid system name"):
        enroll(run, "unknown", ["x.wav"])
    with pytest.raises(SourcetraceError, match="no usable clip"):
        enroll(run, "nothing", [str(tmp_path / "missing.wav")])
    with pytest.raises(SourcetraceError, match="neither a checkpoint folder"):
        trace(tmp_path, ["x.wav"])


def test_eval_analysis_applies_the_dev_threshold(run, tiny_corpus, tmp_path):
    res = analyze(run, tiny_corpus, split="eval", out=tmp_path / "eval")
    thr = res["threshold"]
    assert thr.split == "dev" and thr.operating_point == "fur"
    m = res["metrics"]
    assert 0.0 <= m["openset_false_unknown_rate"] <= 1.0 and 0.0 <= m["openset_false_known_rate"] <= 1.0
    assert 0.0 <= m["openset_auroc"] <= 1.0


def test_a_model_without_data_root_traces_enrolled_systems_then_gains_known_ones(run, tiny_corpus, tmp_path):
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(run / "best", ckpt, ignore=shutil.ignore_patterns(ENROLLMENT, CALIBRATION))
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"data.root": ""}))
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    sam = sorted(ev.loc[ev["system"] == "sam", "file"])
    with pytest.raises(SourcetraceError, match="enrol systems first"):
        trace(ckpt, sam[:1])
    enr = enroll(ckpt, "sam", sam[:5])
    assert enr.systems == ["sam"] and not (ckpt / CALIBRATION).exists()
    results, threshold, _ = trace(ckpt, sam[5:])
    assert threshold is None and all(r.decision == "sam" for r in results)  # never "unknown" uncalibrated
    enr = enroll(ckpt, "sam", sam[5:7], root=tiny_corpus)  # with a root: known systems join, sam is kept
    assert "sam" in enr.systems and enr.n_clips[enr.systems.index("sam")] == 7
    assert sum(s == "train" for s in enr.sources) == len(read_protocol(tiny_corpus, splits=()).known_systems)
    assert (ckpt / CALIBRATION).is_file()
