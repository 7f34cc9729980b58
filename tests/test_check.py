"""``corpus check``: counts per split and condition, and every bad file listed at once with its problem."""

from __future__ import annotations

import pandas as pd
import pytest
from mlaad_fixture import (
    EVAL_COPIES,
    copy_corpus,
    synthesise,
    write_empty,
    write_junk,
    write_tone,
)

from sourcetrace.cli import main
from sourcetrace.data.check import check_corpus, validate_file
from sourcetrace.data.protocol import CONDITIONS


def test_clean_corpus_passes_with_counts(mlaad_corpus, capsys):
    assert (
        main(["corpus", "check", "--root", str(mlaad_corpus), "--protocol", str(mlaad_corpus / "protocol_mlaad")]) == 0
    )
    out = capsys.readouterr().out
    assert "OK: no problems found" in out and "validated 36 files" in out
    assert f"duplicate rows dropped: eval.csv {16 * (EVAL_COPIES - 1)}" in out
    assert "known systems (train.csv): 3; seen languages: de, en" in out
    lines = out.splitlines()
    assert any(line.split()[:5] == ["eval", "all", "16", "4", "4"] for line in lines)
    assert any(line.split()[:5] == ["dev", "lang_not_seen___model_not_seen", "1", "1", "1"] for line in lines)


def test_summary_table(mlaad_corpus):
    report = check_corpus(mlaad_corpus, min_seconds=2.0)
    s = report.summary
    assert report.ok and report.n_files == 36
    assert list(s.columns) == ["split", "condition", "clips", "systems", "languages", "hours"]
    ev = s[s["split"] == "eval"].set_index("condition")
    assert ev.loc["all", "clips"] == 16 and set(ev.index) == {"all", *CONDITIONS}
    assert ev.loc[list(CONDITIONS), "clips"].sum() == 16
    assert s.loc[s["split"] == "train", "condition"].tolist() == ["all", "lang_seen___model_seen"]
    assert 0 < ev.loc["all", "hours"] < 0.1


@pytest.fixture
def damaged(mlaad_corpus, tmp_path):
    """A copy whose eval.csv lists one file of each bad kind (and a train clip, leaking into eval)."""
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    d = root / "fake" / "en" / "espeak-ng_default"
    bad = {
        "missing.flac": None,
        "junk.wav": write_junk(d / "junk.wav"),
        "empty.wav": write_empty(d / "empty.wav"),
        "zeros.wav": write_tone(d / "zeros.wav", seconds=3.0, amplitude=0.0),
        "stereo.wav": write_tone(d / "stereo.wav", seconds=3.0, channels=2),
        "low.wav": write_tone(d / "low.wav", seconds=3.0, sample_rate=8000),
        "short.flac": synthesise("en", "Hi.", d / "short.flac"),
    }
    csv = root / "protocol" / "eval.csv"
    table = pd.read_csv(csv, dtype=str, keep_default_na=False)
    train = pd.read_csv(root / "protocol" / "train.csv", dtype=str, keep_default_na=False)
    extra = pd.DataFrame([{**table.iloc[0].to_dict(), "path": f"./fake/en/espeak-ng_default/{name}"} for name in bad])
    pd.concat([table, extra, train.iloc[[0]]]).to_csv(csv, index=False)
    return root, train["path"][0]


def test_every_problem_listed_at_once(damaged, capsys):
    root, leaked = damaged
    assert main(["corpus", "check", "--root", str(root), "--min-seconds", "2"]) == 1
    out = capsys.readouterr().out
    expected = {
        "missing.flac": "file does not exist",
        "junk.wav": "unreadable or corrupt audio file (Format not recognised",
        "empty.wav": "empty audio file (0 frames)",
        "zeros.wav": "all samples are zero (digital silence)",
        "stereo.wav": "2 channels, but clips must be mono (MLAAD's are); mix it down, e.g. `sox in.wav -c 1 out.wav`",
        "low.wav": "sample rate 8000 Hz is below the target 16000 Hz",
        "short.flac": " s is shorter than 2 s (the training crop)",
    }
    problems = out.split("problem(s):\n", 1)[1].splitlines()
    assert out.count("problem(s):") == 1 and len(problems) == len(expected) + 2
    for name, message in expected.items():
        assert any(f"espeak-ng_default/{name}: " in p and message in p for p in problems), (name, problems)
    assert any(leaked[2:] in p and "listed in several splits (train, eval)" in p for p in problems)
    assert any("fine/eval___lang_seen___model_seen.csv: omits 8 clips" in p for p in problems)  # not in fine/
    assert "eval   all                                24" in out  # 16 + 7 bad + 1 leaked row are counted


def test_validate_file_lists_all_problems_of_one_file(tmp_path):
    both = write_tone(tmp_path / "both.wav", seconds=0.5, channels=2, sample_rate=16000)
    duration, problems = validate_file(str(both), min_seconds=2.0)
    assert duration == pytest.approx(0.5)
    assert len(problems) == 2 and "2 channels" in problems[0] and "0.50 s is shorter than 2 s" in problems[1]


def test_unreadable_protocol_is_an_error_not_a_traceback(tmp_path, capsys):
    (tmp_path / "fake").mkdir()
    assert main(["corpus", "check", "--root", str(tmp_path)]) == 2
    assert "protocol folder" in capsys.readouterr().err


def test_tiny_corpus_checks_clean(tiny_corpus):
    report = check_corpus(tiny_corpus, min_seconds=1.0)
    assert report.ok, report.problems
    assert report.n_files == sum(len(t) for t in report.protocol.tables.values())
    assert set(report.summary["condition"]) == {"all", *CONDITIONS}
