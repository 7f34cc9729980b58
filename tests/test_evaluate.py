"""``sourcetrace evaluate`` on corpora the model never saw: renamed systems/languages, MLAAD's layout, bad input."""

import csv
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from sourcetrace.cli import main
from sourcetrace.commands.evaluate import score
from sourcetrace.config import Config
from sourcetrace.evaluation.baseline import NAME, clip_features, standardise
from sourcetrace.evaluation.evaluate import verdict
from sourcetrace.training.loop import train

QUICK = {
    "train.epochs": 1,
    "train.steps_per_epoch": 2,
    "train.eval_every": 1,
    "train.batch_size": 8,
    "train.eval_test": False,
    "model.embedding_dim": 16,
    "model.channels": 8,
    "data.crop_seconds": 1.0,
    "data.eval_seconds": 2.0,
    "data.short_clips": "pad",
}


@pytest.fixture(scope="module")
def model_run(tiny_corpus, tmp_path_factory):
    """A model trained for two steps on the tiny corpus (seed 0): the scores need a model, not a good one."""
    out = tmp_path_factory.mktemp("evaluate") / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **QUICK}), out)
    return out


def _metrics(out: Path) -> dict:
    return json.loads((out / "metrics.json").read_text())


def test_mlaad_layout_and_ours_give_identical_scores_beside_the_baseline(model_run, mlaad_corpus, tmp_path, capsys):
    ours, theirs = tmp_path / "ours", tmp_path / "mlaad"
    assert main(["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus), "--out", str(ours)]) == 0
    printed = capsys.readouterr().out
    args = ["--protocol", str(mlaad_corpus / "protocol_mlaad"), "--out", str(theirs)]
    assert main(["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus), *args]) == 0
    a, b = _metrics(ours), _metrics(theirs)
    assert b["conditions_from"] == "fine/ files"
    for scorer in ("model", "baseline"):  # MLAAD's duplicated eval rows are read once
        assert a["metrics"][scorer] == pytest.approx(b["metrics"][scorer])
    m = a["metrics"]["model"]
    assert {"eer", "min_dcf", "openset_auroc"} <= set(m)
    # the fixture's one unseen system makes its unseen-system conditions single-system: left out, not 0
    assert {k.partition(".")[2] for k in m if k.startswith("eer.")} == {
        "lang_seen___model_seen",
        "lang_not_seen___model_seen",
    }
    assert a["n_clips"] == 16 and a["n_systems"] == 4
    long = pd.read_parquet(ours / "metrics.parquet")
    assert set(long["scorer"]) == {"model", "baseline"}
    assert "baseline" in printed and "verdict:" in printed and f"{m['eer']:.2f}%" in printed


def test_baseline_column_is_the_standardised_mfcc_statistics(model_run, mlaad_corpus, tmp_path):
    """The baseline's EER equals the all-pairs EER of z-scored MFCC statistics computed independently here."""
    from sourcetrace.data.protocol import read_protocol
    from sourcetrace.evaluation.eer import all_pairs_eer

    res = score(model_run, mlaad_corpus, out=tmp_path / "o")
    table = read_protocol(mlaad_corpus, splits=("eval",)).tables["eval"]
    import soundfile as sf

    waves = [sf.read(f, dtype="float32")[0] for f in table["file"]]
    emb = standardise(clip_features(waves, seconds=QUICK["data.eval_seconds"]))
    assert res["metrics"]["baseline"]["eer"] == pytest.approx(all_pairs_eer(emb, table["system"]), abs=1e-6)


def test_eval_seconds_sets_the_window_of_model_and_baseline(model_run, mlaad_corpus, tmp_path, capsys):
    """--eval-seconds 0 embeds whole clips for both scorers (recorded in metrics.json); a bad value is exit 2."""
    from sourcetrace.data.protocol import read_protocol
    from sourcetrace.evaluation.eer import all_pairs_eer

    out = tmp_path / "whole"
    args = ["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus), "--out", str(out)]
    assert main([*args, "--eval-seconds", "0"]) == 0
    res = _metrics(out)
    assert res["eval_seconds"] == 0.0
    import soundfile as sf

    table = read_protocol(mlaad_corpus, splits=("eval",)).tables["eval"]
    emb = standardise(clip_features([sf.read(f, dtype="float32")[0] for f in table["file"]], seconds=0))
    assert res["metrics"]["baseline"]["eer"] == pytest.approx(all_pairs_eer(emb, table["system"]), abs=1e-6)
    assert _metrics(out)["metrics"] != score(model_run, mlaad_corpus, out=tmp_path / "default")["metrics"]
    capsys.readouterr()
    for bad in ("-1", "1e9", "0.001", "nan"):  # 1e9 asked for petabytes, 0.001 is shorter than one STFT frame
        assert main([*args[:-1], str(tmp_path / "bad"), "--eval-seconds", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert f"--eval-seconds {float(bad)!r} is not a window of 0.1 to 600 s" in err and len(err.splitlines()) == 1
        assert not (tmp_path / "bad").exists()


def test_no_train_split_gives_verification_metrics_only(model_run, mlaad_corpus, tmp_path, capsys):
    root = shutil.copytree(mlaad_corpus, tmp_path / "c")
    (root / "protocol_mlaad" / "train.csv").unlink()  # fine/ files still give the conditions
    args = ["--model", str(model_run), "--root", str(root), "--protocol", str(root / "protocol_mlaad")]
    assert main(["evaluate", *args, "--out", str(tmp_path / "fine")]) == 0
    with_fine = _metrics(tmp_path / "fine")
    assert with_fine["conditions_from"] == "fine/ files" and "openset_auroc" not in with_fine["metrics"]["model"]
    assert "eer.lang_seen___model_seen" in with_fine["metrics"]["model"]
    shutil.rmtree(root / "protocol_mlaad" / "fine")  # nothing says what is seen: overall scores only
    assert main(["evaluate", *args, "--out", str(tmp_path / "o")]) == 0
    m = _metrics(tmp_path / "o")["metrics"]
    assert set(m["model"]) == {"eer", "min_dcf"} and set(m["baseline"]) == {"eer", "min_dcf"}
    assert m["model"]["eer"] == pytest.approx(with_fine["metrics"]["model"]["eer"])
    assert "no train split" in capsys.readouterr().out


def _one_system(root: Path) -> None:
    for split in ("train", "dev", "eval"):
        f = root / "protocol" / f"{split}.csv"
        df = pd.read_csv(f)
        df[df["model_name"] == "espeak-ng/default"].to_csv(f, index=False)


def _no_eval(root: Path) -> None:
    (root / "protocol" / "eval.csv").unlink()


def _missing_file(root: Path) -> None:
    next((root / "fake").rglob("eval_*.flac")).unlink()


@pytest.mark.parametrize(
    "damage, message, lines",
    [(_one_system, "1 system(s)", 1), (_no_eval, "no 'eval' split", 1), (_missing_file, "1 protocol rows point at", 2)],
)
def test_bad_corpus_is_one_error_exit_2_nothing_written(
    model_run, mlaad_corpus, tmp_path, capsys, damage, message, lines
):
    """One error (the missing file named on its own line), no traceback, no output folder."""
    root = shutil.copytree(mlaad_corpus, tmp_path / "c")
    damage(root)
    out = tmp_path / "o"
    assert main(["evaluate", "--model", str(model_run), "--root", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sourcetrace evaluate: error: ") and message in err and len(err.splitlines()) == lines
    assert "Traceback" not in err and not out.exists()


def test_an_output_that_cannot_be_written_is_one_line_before_any_clip_is_decoded(
    model_run, mlaad_corpus, tmp_path, capsys, monkeypatch
):
    """--out occupied by a file: one line naming it, exit 2, and no clip decoded first (it used to score
    everything, then fail with a traceback)."""
    from sourcetrace.data.bank import WaveBank

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded before checking the output folder")

    monkeypatch.setattr(WaveBank, "load", no_decoding)
    occupied = tmp_path / "taken"
    occupied.write_text("a file, not a folder")
    assert main(["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus), "--out", str(occupied)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"the output folder {occupied} cannot be written" in err and "--out" in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err and occupied.read_text() == "a file, not a folder"


def test_model_folder_without_checkpoint_is_one_line_exit_2(mlaad_corpus, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "o"
    assert main(["evaluate", "--model", str(tmp_path / "empty"), "--root", str(mlaad_corpus), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "empty" in err and len(err.splitlines()) == 1 and not out.exists()


def test_verdict_needs_every_unseen_system_condition():
    base = {"eer": 10.0, "eer.lang_seen___model_not_seen": 10.0, "eer.lang_not_seen___model_not_seen": 10.0}
    assert "beats" in verdict({k: 5.0 for k in base}, base)
    worse = {k: 5.0 for k in base} | {"eer.lang_seen___model_not_seen": 11.0}
    assert "does NOT" in verdict(worse, base) and "lang_seen___model_not_seen" in verdict(worse, base)
    assert NAME.startswith("baseline")


# -- a second corpus: the tiny preset with another seed, every system and language renamed -----------------
def _renamed_copy(src: Path, dst: Path) -> tuple[dict, dict]:
    """Copy of ``src`` whose system folders and language folders carry new names; protocol rewritten to match."""
    tables = {p: pd.read_csv(p, dtype=str, keep_default_na=False) for p in (src / "protocol").rglob("*.csv")}
    systems = sorted({s for t in tables.values() for s in t["model_name"]})
    langs = sorted({p.split("/")[2] for t in tables.values() for p in t["path"]})
    sys_map = {s: f"vendor{i:02d}/voice" for i, s in enumerate(systems)}  # names with '/' as MLAAD's
    lang_map = {lang: f"x{i}" for i, lang in enumerate(langs)}
    for path, t in tables.items():
        parts = t["path"].str.split("/")
        t["path"] = [
            f"./fake/{lang_map[p[2]]}/{sys_map[s].replace('/', '_')}/{p[4]}" for p, s in zip(parts, t["model_name"])
        ]
        t["model_name"] = t["model_name"].map(sys_map)
        if "language" in t:
            t["language"] = t["language"].map(lambda x: lang_map.get(x, x))
        out = dst / path.relative_to(src)
        out.parent.mkdir(parents=True, exist_ok=True)
        t.to_csv(out, index=False, quoting=csv.QUOTE_MINIMAL)
    for f in (src / "fake").rglob("*"):
        if f.is_file():
            lang, system = f.parts[-3], f.parts[-2]
            new_sys = next(v for k, v in sys_map.items() if k.replace("/", "_") == system)
            target = dst / "fake" / lang_map[lang] / new_sys.replace("/", "_") / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
    return sys_map, lang_map


@pytest.fixture(scope="session")
def tiny_seed1(request) -> Path:
    """The ``tiny`` preset built with seed 1 (different texts and clips than the training corpus), cached."""
    import sourcetrace.data.corpus as corpus

    root = Path(request.config.cache.mkdir("sourcetrace_tiny_corpus_seed1"))
    corpus.build_corpus(root, preset="tiny", seed=1, workers=0, progress=False)
    return root


@pytest.mark.slow
def test_renamed_corpus_scores_exactly_like_the_original(model_run, tiny_seed1, tmp_path, capsys):
    """Nothing of the corpus's names is shared with the model's training data: scores come from the corpus alone,
    so renaming every system and language changes no number."""
    renamed = tmp_path / "renamed"
    sys_map, _ = _renamed_copy(tiny_seed1, renamed)
    loaded_known = json.loads((model_run / "best" / "meta.json").read_text())["known_systems"]
    assert not set(loaded_known) & set(sys_map.values())
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["evaluate", "--model", str(model_run), "--root", str(tiny_seed1), "--out", str(a)]) == 0
    assert main(["evaluate", "--model", str(model_run), "--root", str(renamed), "--out", str(b)]) == 0
    ma, mb = _metrics(a), _metrics(b)
    assert ma["conditions_from"] == mb["conditions_from"] == "fine/ files"
    for scorer in ("model", "baseline"):
        assert ma["metrics"][scorer] == pytest.approx(mb["metrics"][scorer])
    for scorer in ("model", "baseline"):
        m = mb["metrics"][scorer]
        assert "eer.lang_seen___model_not_seen" in m and "eer.lang_not_seen___model_not_seen" in m
        assert 0 < m["openset_n_known"] and 0 < m["openset_n_unknown"]


def test_degraded_conditions_are_scored_beside_clean(model_run, mlaad_corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))
    args = ["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus)]
    assert main([*args, "--degrade", "amr_nb,replay", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    res = _metrics(tmp_path / "o")
    assert set(res["degraded"]) == {"amr_nb", "replay"}
    for name, by_scorer in res["degraded"].items():
        assert len(list((tmp_path / "cache" / "degraded" / name).glob("*.wav"))) == res["n_clips"]
        for scorer, m in by_scorer.items():  # every clean metric (conditions, open set) has its degraded value
            assert set(m) == set(res["metrics"][scorer]) and m != res["metrics"][scorer]
    long = pd.read_parquet(tmp_path / "o" / "metrics.parquet")
    assert set(long["degradation"]) == {"clean", "amr_nb", "replay"}
    clean = long[(long["degradation"] == "clean") & (long["scorer"] == "model") & (long["condition"] == "all")]
    assert clean.set_index("metric")["value"]["eer"] == pytest.approx(res["metrics"]["model"]["eer"])
    assert "mean degraded - clean EER" in printed and "amr_nb" in printed
    assert main([*args, "--degrade", "amr_nb,mp3_128", "--out", str(tmp_path / "bad")]) == 2
    assert "unknown degradation 'mp3_128'; valid degradations" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_everyday_conditions_and_short_windows_through_score(model_run, mlaad_corpus, tmp_path, capsys, monkeypatch):
    """``--degrade everyday`` scores every everyday condition; the short ones are windows, not renderings: they
    equal scoring with that --eval-seconds (QUICK's eval window is 2 s, so short_2s is the clean score), a chain
    ending in one embeds its rendering with it; the summary holds mean and worst per scorer."""
    from sourcetrace.degrade import EVERYDAY
    from sourcetrace.evaluation.degraded import summary

    monkeypatch.setenv("SOURCETRACE_CACHE", str(tmp_path / "cache"))
    args = ["evaluate", "--model", str(model_run), "--root", str(mlaad_corpus)]
    assert main([*args, "--degrade", "everyday,amr_nb+short_1s", "--out", str(tmp_path / "o")]) == 0
    printed = capsys.readouterr().out
    res = _metrics(tmp_path / "o")
    names = [*EVERYDAY, "amr_nb+short_1s"]
    assert set(res["degraded"]) == set(names) and res["degrade_windows"] == {  # metrics.json sorts keys
        "short_1s": 1.0,
        "short_2s": 2.0,
        "amr_nb+short_1s": 1.0,
    }
    rendered = {p.name for p in (tmp_path / "cache" / "degraded").iterdir()}
    assert rendered == {"gain", "band_8k", "mp3_32", "opus_16", "amr_nb", "gsm", "replay"}  # no window rendered
    d, clean = res["degraded"], res["metrics"]
    one = score(model_run, mlaad_corpus, out=tmp_path / "one", eval_seconds=1.0)["metrics"]
    for scorer in ("model", "baseline"):
        assert d["short_2s"][scorer] == pytest.approx(clean[scorer])
        verification = [k for k in clean[scorer] if not k.startswith("openset_")]
        assert {k: d["short_1s"][scorer][k] for k in verification} == pytest.approx(
            {k: one[scorer][k] for k in verification}
        )  # the split embedded with a 1 s window (references stay at 2 s: open-set metrics differ)
        assert d["amr_nb+short_1s"][scorer] != d["amr_nb"][scorer] and d["amr_nb+short_1s"] != d["short_1s"]
        s = res["degraded_summary"][scorer]
        eers = {n: d[n][scorer]["eer"] for n in names}
        assert s["mean_eer"] == pytest.approx(sum(eers.values()) / len(eers))
        assert s["worst"] == max(eers, key=eers.get) and s["worst_eer"] == eers[s["worst"]]
        assert f"worst: {s['worst']} ({s['worst_eer']:.2f}%)" in printed
    wins = res["degraded_summary"]["model_beats_baseline"]
    intervals = res["intervals"]  # a win is a whole 95 % interval below zero, not a lower point estimate
    assert set(intervals) == {"clean", *names}
    for name in ["clean", *names]:
        iv = intervals[name]["all"]
        m, b = (clean if name == "clean" else d[name])["model"], (clean if name == "clean" else d[name])["baseline"]
        assert iv["diff"] == pytest.approx(m["eer"] - b["eer"]) and iv["lo"] <= iv["hi"]
        assert iv["n_clips"] == 16 and iv["n_systems"] == 4 and iv["n_boot"] > 0
    assert set(wins) == {n for n in names if intervals[n]["all"]["verdict"] == "beats"}
    assert all(d[n]["model"]["eer"] < d[n]["baseline"]["eer"] for n in wins)
    assert sorted(wins + res["degraded_summary"]["model_not_better"]) == sorted(names)
    assert set(wins) == set(summary(res)["model_beats_baseline"])
    assert f"(lower EER, by 95 % bootstrap intervals) on {len(wins)} of {len(names)} conditions" in printed
    assert "95 % bootstrap interval over systems and clips" in printed  # the clean verdict line
    assert "mean degraded - clean EER" in printed  # the existing lines stay
    long = pd.read_parquet(tmp_path / "o" / "metrics.parquet")
    assert set(long["degradation"]) == {"clean", *names}
