"""Protocol reader: MLAAD's CSVs and ours read identically; every bad protocol is a clear ProtocolError."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from mlaad_fixture import EVAL_COPIES, SEEN_SYSTEMS, copy_corpus

from sourcetrace.data.protocol import (
    COLUMNS,
    CONDITIONS,
    SPLITS,
    check_files,
    check_fine,
    read_protocol,
)
from sourcetrace.errors import ProtocolError


def test_mlaad_and_our_layout_give_identical_tables(mlaad_corpus):
    ours = read_protocol(mlaad_corpus)
    mlaad = read_protocol(mlaad_corpus, mlaad_corpus / "protocol_mlaad")
    assert ours.folder.name == "protocol" and mlaad.folder.name == "protocol_mlaad"
    for split in SPLITS:
        assert list(mlaad.tables[split].columns) == list(COLUMNS)
        pd.testing.assert_frame_equal(ours.tables[split], mlaad.tables[split], check_dtype=True, check_exact=True)
    assert ours.known_systems == mlaad.known_systems == tuple(sorted(SEEN_SYSTEMS))
    assert ours.seen_languages == mlaad.seen_languages == ("de", "en")


def test_duplicates_dropped_and_counted(mlaad_corpus):
    mlaad = read_protocol(mlaad_corpus, "protocol_mlaad")  # relative to the root
    ours = read_protocol(mlaad_corpus)
    n_eval = len(ours.tables["eval"])
    assert mlaad.duplicates_dropped == {"train": 0, "dev": 0, "eval": n_eval * (EVAL_COPIES - 1)}
    assert ours.duplicates_dropped == {"train": 0, "dev": 0, "eval": 0}
    assert mlaad.tables["eval"]["path"].is_unique and len(mlaad.tables["eval"]) == n_eval == 16


def test_columns_labels_and_conditions(mlaad_corpus):
    p = read_protocol(mlaad_corpus, "protocol_mlaad")
    train, dev, ev = (p.tables[s] for s in SPLITS)
    # language comes from the path (MLAAD's own column says "English"), file is absolute under the root
    assert set(train["language"]) == {"en", "de"} and set(ev["language"]) == {"en", "de", "fr", "it"}
    assert all(f.startswith(str(p.root)) and f.endswith(path[1:]) for f, path in zip(ev["file"], ev["path"]))
    assert train["label"].between(0, len(p.known_systems) - 1).all()
    assert (train["condition"] == "lang_seen___model_seen").all()
    assert set(dev["condition"]) == set(ev["condition"]) == set(CONDITIONS)
    unseen = ev[~ev["system_seen"]]
    assert (unseen["label"] == -1).all() and set(unseen["system"]) == {"espeak-ng/klatt"}
    seen = ev[ev["system_seen"]]
    assert [p.known_systems[i] for i in seen["label"]] == list(seen["system"])
    assert (ev["language_seen"] == ev["language"].isin(["en", "de"])).all()


def test_only_requested_splits_but_train_defines_classes(mlaad_corpus):
    p = read_protocol(mlaad_corpus, splits=("eval",))
    assert p.splits == ("eval",) and p.known_systems == tuple(sorted(SEEN_SYSTEMS))


def test_tab_separated_and_extra_whitespace_read_the_same(mlaad_corpus, tmp_path):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    for split in SPLITS:
        csv = root / "protocol_mlaad" / f"{split}.csv"
        df = pd.read_csv(csv, dtype=str, keep_default_na=False)
        df.columns = [f" {c} " for c in df.columns]
        df.to_csv(csv, sep="\t", index=False)
    a = read_protocol(root, root / "protocol_mlaad")
    b = read_protocol(root)
    for split in SPLITS:
        pd.testing.assert_frame_equal(a.tables[split], b.tables[split])


def test_read_protocol_does_not_stat_audio_but_check_files_does(mlaad_corpus, tmp_path):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    p = read_protocol(root)
    gone = p.tables["dev"]["file"][3]
    (root / p.tables["dev"]["path"][3]).unlink()
    p = read_protocol(root)  # still reads: only CSVs are touched
    problems = check_files(p)
    assert problems == [f"dev: {p.tables['dev']['path'][3]} -> {gone}: file does not exist"]


def test_check_fine_agrees_and_catches_a_mislabelled_fine_file(mlaad_corpus, tmp_path):
    assert check_fine(read_protocol(mlaad_corpus)) == []
    assert check_fine(read_protocol(mlaad_corpus, "protocol_mlaad")) == []
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    fine = root / "protocol" / "fine"
    seen = fine / "eval___lang_seen___model_seen.csv"
    unseen = fine / "eval___lang_seen___model_not_seen.csv"
    moved = pd.read_csv(unseen, dtype=str, keep_default_na=False).iloc[:1]
    pd.concat([pd.read_csv(seen, dtype=str, keep_default_na=False), moved]).to_csv(seen, index=False)
    problems = check_fine(read_protocol(root))
    assert any(
        "eval___lang_seen___model_seen.csv: lists" in p and "has condition lang_seen___model_not_seen" in p
        for p in problems
    ), problems


# -- errors -----------------------------------------------------------------------------------------
def test_missing_protocol_folder_lists_what_is_there(mlaad_corpus):
    with pytest.raises(ProtocolError, match=r"protocol folder .*nope.* does not exist; .* holds: fake, protocol"):
        read_protocol(mlaad_corpus, mlaad_corpus / "nope")


def test_missing_root(tmp_path):
    with pytest.raises(ProtocolError, match="data root .* is not a folder"):
        read_protocol(tmp_path / "absent")


def test_missing_split_csv_lists_the_csvs_there(mlaad_corpus, tmp_path):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    (root / "protocol" / "dev.csv").unlink()
    with pytest.raises(
        ProtocolError, match=r"missing split CSV: .*dev\.csv' does not exist; .* has: eval\.csv, train\.csv"
    ):
        read_protocol(root)
    assert set(read_protocol(root, splits=("train", "eval")).tables) == {"train", "eval"}
    (root / "protocol" / "train.csv").unlink()
    with pytest.raises(ProtocolError, match=r"missing split CSV: .*train\.csv' \(it defines the known systems\)"):
        read_protocol(root, splits=("eval",))


def test_unknown_split_name(mlaad_corpus):
    with pytest.raises(
        ProtocolError,
        match=r"unknown split 'test': .*test\.csv' does not exist; .* has: dev\.csv, eval\.csv, train\.csv",
    ):
        read_protocol(mlaad_corpus, splits=("train", "test"))


@pytest.mark.parametrize("column", ["path", "model_name"])
def test_missing_column_names_file_and_columns(mlaad_corpus, tmp_path, column):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    csv = root / "protocol_mlaad" / "dev.csv"
    pd.read_csv(csv, dtype=str).drop(columns=[column]).to_csv(csv, index=False)
    with pytest.raises(ProtocolError, match=rf"dev\.csv: missing column '{column}'; its columns are: .*transcript"):
        read_protocol(root, "protocol_mlaad")


def test_bad_path_rows_are_named(mlaad_corpus, tmp_path):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    csv = root / "protocol" / "train.csv"
    df = pd.read_csv(csv, dtype=str)
    df.loc[2, "path"] = "en/espeak/x.flac"
    df.loc[5, "path"] = "./real/en/espeak/x.flac"
    df.to_csv(csv, index=False)
    with pytest.raises(ProtocolError) as err:
        read_protocol(root)
    msg = str(err.value)
    assert "train.csv: column 'path' does not look like ./fake/<lang>/<system>/<file> in 2 row(s)" in msg
    assert "row 2 (line 4): 'en/espeak/x.flac'" in msg and "row 5 (line 7): './real/en/espeak/x.flac'" in msg


def test_empty_model_name_and_conflicting_duplicates(mlaad_corpus, tmp_path):
    root = copy_corpus(mlaad_corpus, tmp_path / "c")
    csv = root / "protocol" / "dev.csv"
    df = pd.read_csv(csv, dtype=str)
    bad = df.copy()
    bad.loc[1, "model_name"] = ""
    bad.to_csv(csv, index=False)
    with pytest.raises(ProtocolError, match=r"dev\.csv: empty column 'model_name' in 1 row\(s\):\n  row 1 \(line 3\)"):
        read_protocol(root)
    twice = pd.concat([df, df.iloc[[0]].assign(model_name="other/system")])
    twice.to_csv(csv, index=False)
    with pytest.raises(ProtocolError, match="the same path is listed with different model_name values"):
        read_protocol(root)


def test_tiny_corpus_protocol_is_consistent(tiny_corpus):
    """The corpus builder's tiny corpus reads cleanly and agrees with its own fine/ files."""
    p = read_protocol(tiny_corpus)
    assert len(p.known_systems) >= 2 and np.all(p.tables["train"]["label"] >= 0)
    for split in ("dev", "eval"):
        assert set(p.tables[split]["condition"]) == set(CONDITIONS)
    assert check_fine(p) == [] and check_files(p) == []
