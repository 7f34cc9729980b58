"""Cases of the fault campaign, each one clear line (exit 2 for a bad input) rather than a traceback, a hang or a
silent wrong answer: broken checkpoints (7k), legacy pickles as ``state.pt`` (7j), a FIFO or a device given as a
clip (7s) and a threshold outside the range its scorer's knownness can take (7e')."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from test_fuzz import TRAIN

from sourcetrace.artefacts import export
from sourcetrace.bundle import files
from sourcetrace.bundle.files import BundleError
from sourcetrace.bundle.model import SourceTracer, clip_evidence, file_sha256
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.errors import CheckpointError
from sourcetrace.evaluation.scorers import SCORERS, fit_scorer
from sourcetrace.models import build_model
from sourcetrace.training.checkpoint import load_model, load_state, save_checkpoint
from sourcetrace.training.loop import train

SMALL = {"model.channels": 2, "model.embedding_dim": 8}
META = {"known_systems": ["a", "b"], "embedding_dim": 8, "epoch": 1}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0], err
    return err[0]


# -- 7k: broken checkpoints ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real (untrained) checkpoint of the smallest model: it loads, so each damage below is what breaks it."""
    cfg = Config.from_dict(SMALL)
    state = {"model": build_model(cfg).state_dict(), "epoch": 1, "best_metrics": {"dev_eer": 30.0}}
    folder = save_checkpoint(tmp_path_factory.mktemp("ck") / "ck", cfg, state, META)
    assert load_model(folder).known_systems == ("a", "b")
    return folder


def _state(folder: Path) -> dict:
    return torch.load(folder / "state.pt", weights_only=True)


def _no_model(f: Path) -> None:
    state = _state(f)
    del state["model"]
    torch.save(state, f / "state.pt")


def _wrong_shape(f: Path) -> None:
    state = _state(f)
    key = next(k for k, v in state["model"].items() if v.ndim >= 1)
    state["model"][key] = torch.zeros(3, 3, 3)
    torch.save(state, f / "state.pt")


def _missing_key(f: Path) -> None:
    state = _state(f)
    state["model"].pop(next(iter(state["model"])))
    torch.save(state, f / "state.pt")


def _json(name: str, text: str):
    return lambda f: (f / name).write_text(text)


def _save(obj):
    return lambda f: torch.save(obj, f / "state.pt")


DAMAGES = {
    "state.pt without 'model'": (_no_model, r"state\.pt: no 'model' weights"),
    "weights of the wrong shape": (_wrong_shape, r"state\.pt: its 'model' weights do not fit .*size mismatch for"),
    "a weight missing": (_missing_key, r"state\.pt: its 'model' weights do not fit .*Missing key"),
    "state.pt a list": (_save([1, 2]), r"state\.pt: holds list, not a checkpoint's dict"),
    "state.pt a tensor": (_save(torch.zeros(2)), r"state\.pt: holds Tensor"),
    "'model' a list": (_save({"model": [1]}), r"state\.pt: 'model' holds list"),
    "'model' holding a number": (_save({"model": {"w": 3}}), r"state\.pt: 'model' entry 'w' holds int, not a tensor"),
    "'best_metrics' a string": (
        _save({"model": {}, "best_metrics": "x"}),
        r"state\.pt: 'best_metrics' must map metric names to numbers",
    ),
    "no meta.json": (lambda f: (f / "meta.json").unlink(), r"meta\.json: missing"),
    "no config.json": (lambda f: (f / "config.json").unlink(), r"config\.json: missing"),
    "meta.json a folder": (
        lambda f: ((f / "meta.json").unlink(), (f / "meta.json").mkdir()),
        r"meta\.json: not a regular file",
    ),
    "meta.json a FIFO": (lambda f: ((f / "meta.json").unlink(), os.mkfifo(f / "meta.json")), r"meta\.json: not a"),
    "meta.json a JSON list": (_json("meta.json", "[1, 2]"), r"meta\.json: must be an object .*got a list"),
    "meta.json not JSON": (_json("meta.json", '{"known_systems": ['), r"meta\.json: not valid JSON"),
    "known_systems numbers": (
        _json("meta.json", '{"known_systems": [1, 2]}'),
        r"meta\.json: 'known_systems\[0\]' must be a non-empty system name, got a number",
    ),
    "known_systems a string": (
        _json("meta.json", '{"known_systems": "a,b"}'),
        r"meta\.json: 'known_systems' must be a list of system names, got a string",
    ),
    "known_systems missing": (_json("meta.json", '{"epoch": 1}'), r"meta\.json: missing 'known_systems'"),
    "known_systems empty": (_json("meta.json", '{"known_systems": []}'), r"meta\.json: 'known_systems' has 0 names"),
    "known_systems repeated": (
        _json("meta.json", '{"known_systems": ["a", "a"]}'),
        r"meta\.json: 'known_systems\[1\]' repeats the name 'a'",
    ),
    "embedding_dim a string": (
        _json("meta.json", '{"known_systems": ["a", "b"], "embedding_dim": "8"}'),
        r"meta\.json: 'embedding_dim' must be an integer >= 1, got a string",
    ),
    "config.json a list": (_json("config.json", "[]"), r"config\.json: must be an object of config keys"),
    "config.json a bad value": (
        _json("config.json", '{"model.channels": "x"}'),
        r"config\.json: config key 'model\.channels'",
    ),
}


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_broken_checkpoint_is_one_checkpoint_error_naming_the_file(checkpoint, tmp_path, damage):
    edit, message = DAMAGES[damage]
    folder = shutil.copytree(checkpoint, tmp_path / "ck")
    edit(folder)
    with _released(folder / "meta.json"), pytest.raises(CheckpointError, match=message) as raised:
        load_model(folder)
    assert "\n" not in str(raised.value) and str(folder) in str(raised.value)


@pytest.mark.parametrize("damage", ["state.pt without 'model'", "weights of the wrong shape", "no meta.json"])
def test_load_state_refuses_what_training_would_resume_from(checkpoint, tmp_path, damage):
    edit, message = DAMAGES[damage]
    folder = shutil.copytree(checkpoint, tmp_path / "ck")
    edit(folder)
    if damage == "weights of the wrong shape":  # shapes are the model's business: load_state reads the files
        load_state(folder)
        return
    with pytest.raises(CheckpointError, match=message):
        load_state(folder)


@pytest.mark.parametrize("command", ["export", "trace"])
@pytest.mark.parametrize(
    "damage", ["state.pt without 'model'", "weights of the wrong shape", "no config.json", "known_systems numbers"]
)
def test_export_and_trace_of_a_broken_checkpoint_exit_2_with_one_line(checkpoint, tmp_path, capsys, command, damage):
    edit, message = DAMAGES[damage]
    folder = shutil.copytree(checkpoint, tmp_path / "ck")
    edit(folder)
    argv = ["export", "--model", str(folder), "--out", str(tmp_path / "b")] if command == "export" else None
    argv = argv or ["trace", "--model", str(folder), str(tmp_path / "clip.wav")]
    assert main(argv) == 2
    line = _one_line(capsys)
    assert line.startswith(f"sourcetrace {command}: error: ") and str(folder) in line
    assert re.search(message, line), line
    assert not (tmp_path / "b").exists()


# -- 7j: legacy (non-zip) pickles as state.pt ---------------------------------------------------------------------
class EvalPayload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w').write('ran')",)


LEGACY = {
    "plain dict, protocol 0": (lambda m: pickle.dumps({"model": {}}, protocol=0), "not a weights-only"),
    "plain dict, protocol 2": (lambda m: pickle.dumps({"model": {}}, protocol=2), "corrupt or truncated"),
    "eval payload, protocol 0": (lambda m: pickle.dumps(EvalPayload(m), protocol=0), "not a weights-only"),
    "eval payload, protocol 2": (lambda m: pickle.dumps(EvalPayload(m), protocol=2), "not a weights-only"),
    "eval payload in a dict": (lambda m: pickle.dumps({"model": EvalPayload(m)}, protocol=2), "not a weights-only"),
}


@pytest.mark.parametrize("case", LEGACY)
def test_a_legacy_pickle_state_is_refused_in_one_line_and_runs_nothing(checkpoint, tmp_path, capsys, case):
    payload, message = LEGACY[case]
    marker = tmp_path / "ran"
    folder = shutil.copytree(checkpoint, tmp_path / "ck")
    (folder / "state.pt").write_bytes(payload(marker))
    with pytest.raises(CheckpointError, match=message) as raised:
        load_model(folder)
    text = str(raised.value)
    assert "\n" not in text and str(folder / "state.pt") in text
    if message == "not a weights-only":
        assert "refused to load" in text and "torch.load" not in text  # torch's advice to load unsafely is dropped
    assert main(["trace", "--model", str(folder), str(tmp_path / "clip.wav")]) == 2
    assert "refused to load" in _one_line(capsys) or message == "corrupt or truncated"
    assert not marker.exists()


def test_a_legacy_torch_save_of_tensors_only_still_loads(checkpoint, tmp_path):
    folder = shutil.copytree(checkpoint, tmp_path / "ck")
    torch.save(_state(checkpoint), folder / "state.pt", _use_new_zipfile_serialization=False)
    assert load_model(folder).known_systems == ("a", "b")


# -- 7s: a FIFO or a device as a clip -----------------------------------------------------------------------------
def _release(path: Path) -> None:
    """Open the FIFO ``path`` for writing and close it: a reader blocked on it gets end-of-file."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # not a FIFO, or nobody reading it: nothing to release
        pass


@contextlib.contextmanager
def _released(path: Path, seconds: float = 20.0):
    """Should the block open the FIFO ``path`` for reading (the bug), it is released after ``seconds`` instead
    of hanging the test run, and the test then fails on what it got."""
    timer = threading.Timer(seconds, _release, (path,))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def _returns_within(fn, *args, seconds: float = 20.0):
    """``fn(*args)``'s result, or a failure if it has not returned in ``seconds`` (its daemon thread is left)."""
    out = []
    worker = threading.Thread(target=lambda: out.append(fn(*args)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"{fn.__name__}{args} did not return in {seconds:g} s"
    return out[0]


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "clip.wav"
    os.mkfifo(path)
    yield path
    _release(path)  # a reader blocked on it (the bug) gets end-of-file and lets its thread end


def test_clip_evidence_of_a_fifo_a_device_or_a_folder_opens_nothing(fifo, tmp_path):
    for clip in (fifo, "/dev/zero", tmp_path):
        assert _returns_within(clip_evidence, str(clip), 16000) == {}
    for clip in (fifo, "/dev/zero", tmp_path):
        with pytest.raises(Exception, match="is not a regular file"):
            file_sha256(clip)
    wav = tmp_path / "x.bin"
    wav.write_bytes(b"abc")
    assert file_sha256(wav) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# -- 7e': a threshold outside the range of its scorer's knownness ------------------------------------------------
@pytest.fixture(scope="module")
def bundle(tiny_corpus, tmp_path_factory) -> tuple[Path, Path, Path]:
    """(run, bundle with the default scorer (knn), a clip) from the fuzz tests' one-step model."""
    base = tmp_path_factory.mktemp("faults")
    run = base / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), run)
    clip = sorted((tiny_corpus / "fake").rglob("*.flac"))[0]
    return run, export(run, base / "bundle", device="cpu"), clip


def _threshold(folder: Path, **values) -> None:
    path = folder / files.THRESHOLD
    path.write_text(json.dumps(json.loads(path.read_text()) | values))


def test_a_trace_with_a_fifo_and_a_device_among_its_clips_traces_the_others(bundle, fifo, capsys):
    _, folder, clip = bundle
    with _released(fifo):
        code = main(["trace", "--model", str(folder), "--format", "json", str(fifo), "/dev/null", str(clip)])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1 and [r["path"] for r in rows] == [str(fifo), "/dev/null", str(clip)]
    assert all("is not a regular file" in r["error"] and r["sha256"] is None for r in rows[:2])
    assert rows[2]["error"] is None and rows[2]["decision"] and rows[2]["sha256"]


@pytest.mark.parametrize(
    ("value", "effect"), [(-5, "no clip would ever be called unknown"), (1e308, "every clip would be called unknown")]
)
def test_a_threshold_its_cosine_scorer_cannot_reach_is_refused(bundle, tmp_path, capsys, value, effect):
    _, folder, clip = bundle
    copy = shutil.copytree(folder, tmp_path / "b")
    _threshold(copy, value=value)
    with pytest.raises(
        BundleError, match=rf"threshold\.json: 'value'={re.escape(repr(value))} is out of range: .*{effect}"
    ):
        SourceTracer(copy, device="cpu")
    assert main(["trace", "--model", str(copy), str(clip)]) == 2
    line = _one_line(capsys)
    assert "threshold.json: 'value'" in line and "knn scorer's knownness lies in [-1, 1]" in line


def test_a_threshold_inside_the_range_still_loads_and_decides(bundle, tmp_path):
    _, folder, clip = bundle
    copy = shutil.copytree(folder, tmp_path / "b")
    for value, decision in ((-1.0, "known"), (1.0005, "unknown")):  # the ends, with room for float rounding
        _threshold(copy, value=value)
        (res,) = SourceTracer(copy, device="cpu").trace([str(clip)])
        assert (res.decision == "unknown") == (decision == "unknown")


def test_a_threshold_naming_another_scorer_is_refused(bundle, tmp_path):
    _, folder, _ = bundle
    copy = shutil.copytree(folder, tmp_path / "b")
    _threshold(copy, scorer="centroid")
    with pytest.raises(BundleError, match=r"threshold\.json: field 'scorer' is 'centroid', but .*scorer\.json.*'knn'"):
        SourceTracer(copy, device="cpu")


def test_a_mahalanobis_threshold_may_be_any_negative_number_but_not_above_zero(bundle, tmp_path):
    run, _, _ = bundle
    maha = export(run, tmp_path / "maha", device="cpu", scorer="mahalanobis")
    _threshold(maha, value=-1e6)
    SourceTracer(maha, device="cpu")  # far below -1: a squared distance is not bounded
    _threshold(maha, value=5.0)
    with pytest.raises(BundleError, match=r"threshold\.json: 'value'=5\.0 is out of range: .*at or below 0, so every"):
        SourceTracer(maha, device="cpu")


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorers_knownness_lies_in_the_range_the_threshold_check_assumes(name):
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(60, 8)).astype(np.float32)
    systems = np.repeat(["a", "b", "c"], 20)
    scorer = fit_scorer(name, ref, systems)
    queries = np.concatenate([rng.normal(size=(200, 8)), -ref, ref]).astype(np.float32)
    known, _ = scorer.score(queries)
    lo, hi = SCORERS[name].knownness_range
    assert (known >= lo - 1e-5).all() and (known <= hi + 1e-5).all(), (known.min(), known.max())
