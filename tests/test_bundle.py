"""Portable bundles with a model trained for seconds on the tiny real TTS corpus: export, move away
from the data, trace, enrol (also concurrently), list, remove; damaged and malicious bundles; the API."""

import csv
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

import sourcetrace
from sourcetrace.artefacts import resolve_model
from sourcetrace.bundle import files
from sourcetrace.bundle.files import BundleError
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import SourcetraceError
from sourcetrace.training.loop import train

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
TRAIN = {
    "train.epochs": 2,
    "train.eval_every": 2,
    "train.warmup_epochs": 1,
    "train.steps_per_epoch": 4,
    "train.batch_size": 16,
    "train.eval_test": False,
    "model.embedding_dim": 16,
    "model.channels": 8,
    "loss.name": "aamsoftmax",
    "data.crop_seconds": 1.0,
    "data.eval_seconds": 2.0,
    "data.short_clips": "pad",
}
NEW = "tts_models/xx/new/vits"  # MLAAD-style name: '/' is a value here, never a path


def _env():
    return dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def run(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle_run") / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), out)
    return out


@pytest.fixture(scope="module")
def exported(run, tmp_path_factory):
    out = tmp_path_factory.mktemp("exported") / "bundle"
    assert main(["export", "--model", str(run), "--out", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def clips(tiny_corpus, tmp_path_factory):
    """Copies of a few eval clips (in nested folders) that outlive the corpus being moved away."""
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    dest = tmp_path_factory.mktemp("clips")
    out = {}
    for system in ("sam", "flite_awb"):
        files_ = sorted(ev.loc[ev["system"] == system, "file"])[:7]
        out[system] = []
        for i, f in enumerate(files_):
            target = dest / "case" / system.replace("/", "_") / f"{i}{Path(f).suffix}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, target)
            out[system].append(str(target))
    return dest, out


@pytest.fixture
def moved(exported, tmp_path):
    """A copy of the bundle in a fresh folder."""
    target = tmp_path / "elsewhere" / "model"
    shutil.copytree(exported, target)
    return target


@pytest.fixture
def no_corpus(tiny_corpus):
    """The training corpus renamed away for the test (restored afterwards)."""
    away = tiny_corpus.with_name(tiny_corpus.name + ".away")
    os.rename(tiny_corpus, away)
    try:
        yield
    finally:
        os.rename(away, tiny_corpus)


def test_a_moved_bundle_traces_enrols_lists_and_removes_without_the_corpus(moved, clips, no_corpus, capsys):
    folder, by_system = clips
    assert sorted(p.name for p in moved.iterdir()) == sorted(
        [*files.REQUIRED, files.CALIBRATION, files.CARD_MD, files.CARD_JSON]
    ), "export leaves exactly the bundle files"
    capsys.readouterr()
    assert main(["trace", "--model", str(moved), "--format", "json", str(folder)]) == 0
    rows = json.loads(capsys.readouterr().out)
    expected = sorted(str(p) for p in folder.rglob("*") if p.is_file())
    assert [r["path"] for r in rows] == expected
    for r in rows:
        assert r["error"] is None and len(r["top"]) == 3 and r["decision"] in ("unknown", r["top"][0]["system"])
        assert r["top"][0]["score"] >= r["top"][1]["score"] >= r["top"][2]["score"]
        assert r["threshold"] == pytest.approx(json.loads((moved / files.THRESHOLD).read_text())["value"])
        assert "false-unknown" in r["operating_point"] and r["crop"] == "center"
        assert (r["decision"] == "unknown") == (r["knownness"] < r["threshold"])

    five, rest = by_system["sam"][:5], by_system["sam"][5:]
    assert main(["enroll", "--model", str(moved), "--system", NEW, *five]) == 0
    assert "5 clips added, 5 in total" in capsys.readouterr().out
    assert main(["enroll", "--model", str(moved), "--system", NEW, *five]) == 0  # identical clips: a no-op
    assert "nothing to do" in capsys.readouterr().out
    assert main(["enroll", "--model", str(moved), "--list"]) == 0
    listed = [line.split("\t") for line in capsys.readouterr().out.splitlines()[1:]]
    assert [NEW, "enrolled", "5"] in listed and sum(r[1] == "training" for r in listed) >= 2
    assert main(["trace", "--model", str(moved), "--format", "csv", "--top-k", "1", *rest]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].startswith("path,decision,system1,score1") and len(table) == 1 + len(rest)
    assert all(line.split(",")[2] in sam_systems(moved) for line in table[1:])
    sam = sourcetrace.load(moved, device="cpu")
    assert NEW in sam.systems and sam.enrolled_systems() == [(NEW, 5)]
    assert main(["enroll", "--model", str(moved), "--remove", NEW]) == 0
    assert NEW not in sourcetrace.load(moved, device="cpu").systems
    assert not list(moved.glob(files.TMP_PREFIX + "*"))


def sam_systems(bundle):
    return set(sourcetrace.load(bundle, device="cpu").systems)


def test_two_enrolments_at_once_both_land(moved, clips):
    _, by_system = clips
    cmd = [sys.executable, "-m", "sourcetrace.cli", "enroll", "--model", str(moved), "--device", "cpu"]
    procs = [
        subprocess.Popen(cmd + ["--system", name, *by_system[src][:5]], env=_env(), stderr=subprocess.PIPE, text=True)
        for name, src in (("alpha", "sam"), ("beta", "flite_awb"))
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    tracer = sourcetrace.load(moved, device="cpu")
    assert dict(tracer.enrolled_systems()) == {"alpha": 5, "beta": 5}


def test_a_pickled_weights_file_is_refused_and_runs_nothing(moved, clips, tmp_path, capsys):
    import torch

    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (exec, (f"open({str(marker)!r}, 'w').write('ran')",))

    torch.save({"conv.weight": Payload()}, moved / files.WEIGHTS)
    with pytest.raises(BundleError, match=r"weights.safetensors: not a safetensors weights file"):
        sourcetrace.load(moved, device="cpu")
    (moved / files.WEIGHTS).write_bytes(pickle.dumps(Payload()))
    assert main(["trace", "--model", str(moved), clips[1]["sam"][0]]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a safetensors weights file" in err[0]
    assert not marker.exists()


def test_damaged_bundles_give_one_clear_error_naming_the_file(moved, clips):
    enrolled = moved / files.ENROLLED
    enrolled.write_text('{"systems": [{"name": "x", "clips": [{"sha')
    with pytest.raises(BundleError, match=r"enrolled.json: not valid JSON .* truncated"):
        sourcetrace.load(moved, device="cpu")
    enrolled.write_text(json.dumps({"systems": [{"name": "a\tb", "clips": []}]}))
    with pytest.raises(BundleError, match="control character"):
        sourcetrace.load(moved, device="cpu")
    enrolled.write_text(json.dumps({"systems": []}))
    arrays = dict(np.load(moved / files.SCORER_ARRAYS))
    key = next(k for k, v in arrays.items() if v.ndim == 2)
    np.savez(moved / files.SCORER_ARRAYS, **(arrays | {key: np.zeros((arrays[key].shape[0], 7), np.float32)}))
    with pytest.raises(BundleError, match=r"scorer.npz: array .* has shape .*16 dimensions"):
        sourcetrace.load(moved, device="cpu")
    bad = arrays[key].copy()
    bad[0, 0] = np.nan  # was traced with exit 0: every clip the same system, score nan
    np.savez(moved / files.SCORER_ARRAYS, **(arrays | {key: bad}))
    with pytest.raises(BundleError, match=r"scorer.npz: array .* holds NaN or infinite values"):
        sourcetrace.load(moved, device="cpu")
    np.savez(moved / files.SCORER_ARRAYS, **arrays)
    threshold = (moved / files.THRESHOLD).read_text()
    for value in ("NaN", "-Infinity", "true"):  # nothing could be "unknown"; true is no number
        (moved / files.THRESHOLD).write_text(json.dumps(json.loads(threshold) | {"value": "X"}).replace('"X"', value))
        with pytest.raises(BundleError, match=r"threshold.json: 'value' must be a finite number"):
            sourcetrace.load(moved, device="cpu")
    (moved / files.THRESHOLD).write_text(threshold)
    first = arrays[key][0].tolist()
    clip = {"sha256": "0" * 64, "embedding": first[:-1] + [float("nan")]}
    enrolled.write_text(json.dumps({"systems": [{"name": "n", "clips": [clip]}]}))
    with pytest.raises(BundleError, match="enrolled.json: a clip of 'n' has non-finite embedding values"):
        sourcetrace.load(moved, device="cpu")
    enrolled.write_text(json.dumps({"systems": []}))
    (moved / files.THRESHOLD).write_text('{"value": 0.')
    with pytest.raises(BundleError, match="threshold.json: not valid JSON"):
        sourcetrace.load(moved, device="cpu")
    (moved / files.THRESHOLD).unlink()
    with pytest.raises(BundleError, match="incomplete bundle, missing threshold.json"):
        sourcetrace.load(moved, device="cpu")
    manifest = json.loads((moved / files.MANIFEST).read_text())
    (moved / files.MANIFEST).write_text(json.dumps(manifest | {"format_version": 99}))
    with pytest.raises(BundleError, match="format version 99"):
        sourcetrace.load(moved, device="cpu")


def test_enrol_names_are_validated_and_slashes_are_values(moved, clips, tmp_path):
    tracer = sourcetrace.load(moved, device="cpu")
    five = clips[1]["sam"][:5]
    for bad in ("a\tb", "line\nbreak", "", "  ", "unknown", "x" * 300):
        with pytest.raises(BundleError, match="invalid system name"):
            tracer.enroll(bad, five)
    res = tracer.enroll("../../etc/passwd", five)
    assert res.added == 5 and not (tmp_path / "etc").exists()
    assert sorted(p.name for p in moved.iterdir() if not p.name.startswith(".")) == sorted(
        [*files.REQUIRED, files.CARD_MD, files.CARD_JSON, files.CALIBRATION]
    )
    with pytest.raises(SourcetraceError, match="is not enrolled"):
        tracer.remove("nobody")
    trained = tracer.known_systems[0]  # merging clips into a training system was silent; --list showed it twice
    with pytest.raises(SourcetraceError, match=f"{trained!r} is a system the model was trained on"):
        tracer.enroll(trained, five)
    assert trained not in [name for name, _ in tracer.enrolled_systems()]


def test_bad_clips_are_reported_and_good_ones_still_traced(moved, clips, tmp_path, capsys):
    good = clips[1]["flite_awb"][:2]
    silent, short, junk = tmp_path / "silent.wav", tmp_path / "short.wav", tmp_path / "junk.wav"
    sf.write(silent, np.zeros(32000, np.float32), 16000)
    sf.write(short, 0.3 * np.sin(np.linspace(0, 900, 3200)).astype(np.float32), 16000)  # 0.2 s
    junk.write_text("not audio")
    args = [good[0], str(silent), str(short), str(junk), str(tmp_path / "missing.wav"), good[1]]
    assert main(["trace", "--model", str(moved), "--top-k", "2", *args]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith("# operating point: 'unknown' below") and "5% false-unknown rate" in lines[1]
    assert lines[2].startswith("# crop: center (default")
    rows = [line.split("\t") for line in lines if not line.startswith("#")]
    assert [r[0] for r in rows] == args
    assert [r[1] == "ERROR" for r in rows] == [False, True, True, True, True, False]
    assert "silence" in rows[1][2] and "too short" in rows[2][2] and "unreadable" in rows[3][2]
    assert "does not exist" in rows[4][2] and len(rows[0][2].split("  ")) == 2
    assert main(["trace", "--model", str(moved), str(tmp_path / "nothing*.wav")]) == 2
    assert main(["trace", "--model", str(tmp_path), good[0]]) == 2
    assert "not a bundle" in capsys.readouterr().err
    assert main(["trace", "--model", str(moved), "--device", "tpu:7", good[0]]) == 2
    assert "--device 'tpu:7'" in capsys.readouterr().err


def test_crops_lists_and_the_python_api(moved, clips, tmp_path, capsys):
    sam = clips[1]["sam"]
    listing = tmp_path / "list.txt"
    listing.write_text("# evidence\n" + "\n".join(sam[:3]) + "\n")
    long_clip = tmp_path / "long.wav"
    wave = np.concatenate([sf.read(p, dtype="float32")[0] for p in sam])
    sf.write(long_clip, wave, 16000)
    for crop in ("center", "full", "multi"):
        assert (
            main(["trace", "--model", str(moved), "--crop", crop, "--format", "json", f"@{listing}", str(long_clip)])
            == 0
        )
        rows = json.loads(capsys.readouterr().out)
        assert len(rows) == 4 and all(r["crop"] == crop for r in rows)
    m = sourcetrace.load(moved, device="cpu")
    emb = m.embed(sam[:3])
    assert emb.shape == (3, 16) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    res = m.trace([sam[0], sf.read(sam[0], dtype="float32")[0]], top_k=2)
    assert [s for s, _ in res[0].top] == [s for s, _ in res[1].top]
    np.testing.assert_allclose([v for _, v in res[0].top], [v for _, v in res[1].top], atol=1e-6)
    assert isinstance(res[0], sourcetrace.Attribution) and res[1].path == "<waveform 1>"
    assert m.enroll("api_system", sam[:5]).added == 5 and "api_system" in m.systems


def test_readme_api_example_runs(moved, clips):
    text = (REPO / "README.md").read_text()
    start = text.index("<!-- api-example -->")
    code = text[start:].split("```python\n", 1)[1].split("```", 1)[0]
    ns = {"BUNDLE": str(moved), "CLIPS": clips[1]["flite_awb"][:3], "NEW_CLIPS": clips[1]["sam"][:5]}
    exec(compile(code, "README.md", "exec"), ns)
    assert "my_new_system" in ns["m"].systems


def test_the_trace_path_stays_light(moved, clips):
    code = (
        "import sys, sourcetrace; assert 'torch' not in sys.modules; "
        "from sourcetrace.cli import main; "
        f"rc = main(['trace', '--model', {str(moved)!r}, {clips[1]['sam'][0]!r}]); "
        "heavy = [m for m in ('ray', 'mlflow', 'sklearn', 'matplotlib', 'umap', 'transformers', 'pandas') "
        "if m in sys.modules]; print('HEAVY', heavy); sys.exit(rc)"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "HEAVY []" in out.stdout


def test_models_resolve_from_run_and_checkpoint_folders(run, tmp_path, capsys):
    assert resolve_model(run).kind == "run" and resolve_model(run / "best").checkpoint == run / "best"
    with pytest.raises(SourcetraceError, match="not a bundle"):
        resolve_model(tmp_path)
    with pytest.raises(SourcetraceError, match="is a bundle already"):
        from sourcetrace.artefacts import export

        shutil.copytree(run / "best", tmp_path / "ckpt")
        target = export(tmp_path / "ckpt", tmp_path / "b", scorer="centroid")
        export(target, tmp_path / "c")
    with pytest.raises(SourcetraceError, match="unknown open-set scorer 'bogus'; valid: .*centroid"):
        export(run, tmp_path / "z", scorer="bogus")
    assert not (tmp_path / "z").exists() and not (tmp_path / "c").exists()
    assert json.loads((target / files.THRESHOLD).read_text())["scorer"] == "centroid"
    assert json.loads((target / files.MANIFEST).read_text())["scorer"] == "centroid"
    card = json.loads((tmp_path / "b" / files.CARD_JSON).read_text())
    assert card["training_corpus"]["systems"] and card["metrics"]["all"]["dev_eer"] >= 0
    assert card["sourcetrace_version"] == sourcetrace.__version__ and card["created"]
    assert "## Training data" in (tmp_path / "b" / files.CARD_MD).read_text()  # a Hugging Face card


def test_onnx_export_matches_pytorch(exported, tmp_path):
    from sourcetrace.bundle.onnx_export import TOLERANCE, export_onnx

    bundle = tmp_path / "b"
    shutil.copytree(exported, bundle)
    path, diff = export_onnx(bundle, bundle / "embedding.onnx")
    assert path.is_file() and diff <= TOLERANCE


GAINS_DB = (-40.0, -27.0, -12.5, -3.0, 0.0)


def test_a_clip_at_any_level_gets_the_same_embedding_and_decision_from_a_bundle_and_its_onnx(exported, clips, tmp_path):
    """features.level=rms (the default) sets the input level inside the network: a clip scaled by any gain in
    [-40, 0] dB embeds the same through the bundle (waveforms to 1e-4; 16-bit files to the same decision and
    top system) and through the ONNX graph exported from it."""
    import onnxruntime as ort

    from sourcetrace.bundle.onnx_export import export_onnx
    from sourcetrace.data.audio import load_audio

    tracer = sourcetrace.load(exported, device="cpu")
    assert tracer.config.features.level == "rms"
    paths = clips[1]["sam"][:2] + clips[1]["flite_awb"][:2]
    waves = [load_audio(p, 16000) for p in paths]
    ref = tracer.embed(waves)
    for db in GAINS_DB:
        g = 10 ** (db / 20)
        np.testing.assert_allclose(tracer.embed([w * g for w in waves]), ref, atol=1e-4)
    # as files: float WAVs embed the same at every gain; 16-bit ones keep their decisions down to -20 dB
    # (below that a 16-bit file has lost bits before anything reads it)
    decisions = [(r.decision, r.top[0][0]) for r in tracer.trace(paths)]
    for db in GAINS_DB:
        as_float, as_16 = [], []
        for i, w in enumerate(waves):
            for subtype, group in (("FLOAT", as_float), ("PCM_16", as_16)):
                f = tmp_path / f"{i}_{db}_{subtype}.wav"
                sf.write(f, w * 10 ** (db / 20), 16000, subtype=subtype)
                group.append(str(f))
        np.testing.assert_allclose(tracer.embed(as_float), ref, atol=1e-4)
        if db >= -20:
            assert [(r.decision, r.top[0][0]) for r in tracer.trace(as_16)] == decisions
    bundle = tmp_path / "b"
    shutil.copytree(exported, bundle)
    onnx_path, _ = export_onnx(bundle, bundle / "embedding.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    crop = waves[0][None, : 2 * 16000].astype(np.float32)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    base = unit(session.run(None, {"wave": crop})[0])
    for db in GAINS_DB:
        got = unit(session.run(None, {"wave": (crop * 10 ** (db / 20)).astype(np.float32)})[0])
        np.testing.assert_allclose(got, base, atol=1e-4)


def test_the_api_takes_one_path_or_one_waveform_as_well_as_a_list(exported, clips):
    """``m.trace("clip.flac")`` is one clip, not one per character of its path."""
    import torch

    from sourcetrace.data.audio import load_audio

    m = sourcetrace.load(exported, device="cpu")
    path = clips[1]["sam"][0]
    (one,) = m.trace(path)
    (listed,) = m.trace([path])
    assert one.path == path and not one.error and (one.decision, one.top) == (listed.decision, listed.top)
    wave = load_audio(path, 16000)
    np.testing.assert_allclose(m.embed(wave), m.embed([path]), atol=1e-5)
    np.testing.assert_allclose(m.embed(torch.from_numpy(wave)), m.embed(Path(path)), atol=1e-5)


def test_trace_reads_phone_band_and_stereo_clips_and_says_so_unless_strict(exported, clips, tmp_path, capsys):
    """An 8 kHz clip is resampled (its output says narrow-band) and a stereo one mixed down (said too), in
    every format; --strict refuses both as before (exit 1, the others still traced)."""
    import torchaudio

    from sourcetrace.data.audio import load_audio

    src = clips[1]["sam"][0]
    wave = load_audio(src, 16000)
    phone, stereo = tmp_path / "phone.wav", tmp_path / "stereo.wav"
    sf.write(phone, torchaudio.functional.resample(torch_tensor(wave), 16000, 8000).numpy(), 8000, subtype="PCM_16")
    sf.write(stereo, np.stack([wave, 0.5 * wave], 1), 16000, subtype="PCM_16")
    args = ["trace", "--model", str(exported), "--no-progress"]
    assert main(args + ["--format", "json", src, str(phone), str(stereo)]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["input"] for r in rows] == [
        [],
        ["narrow-band: recorded at 8000 Hz, resampled to 16000 Hz (nothing above 4000 Hz)"],
        ["mixed down from 2 channels"],
    ]
    assert all(r["decision"] and not r["error"] for r in rows)
    assert rows[2]["top"][0]["system"] == rows[0]["top"][0]["system"]  # same clip, same level-free embedding
    assert main(args + ["--format", "table", str(phone)]) == 0
    assert "(narrow-band: recorded at 8000 Hz" in capsys.readouterr().out
    assert main(args + ["--format", "csv", str(stereo)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(",mixed down from 2 channels")
    assert main(args + ["--strict", "--format", "json", src, str(phone), str(stereo)]) == 1
    rows = json.loads(capsys.readouterr().out)
    assert rows[0]["decision"] and "below the target 16000 Hz" in rows[1]["error"]
    assert "2 channels, but clips must be mono" in rows[2]["error"]


def torch_tensor(x):
    import torch

    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


SWEEP = """
BASE = {base!r}
SPACE = {{"loss.name": "aamsoftmax"}}
TUNE = {{"scheduler": "fifo", "keep_checkpoints": 1}}
RESOURCES = {{"cpu": 1}}
"""


def test_a_sweep_exports_prints_and_logs_its_best_bundle_and_its_folder_is_a_model(tiny_corpus, tmp_path, clips):
    from mlflow import MlflowClient

    sweep_file = tmp_path / "one.py"
    sweep_file.write_text(SWEEP.format(base={k: v for k, v in TRAIN.items() if k != "loss.name"}))
    db = tmp_path / "mlruns" / "mlflow.db"
    cmd = [sys.executable, "-m", "sourcetrace.cli", "sweep", str(sweep_file), "--root", str(tiny_corpus)]
    cmd += ["--storage", str(tmp_path / "ray"), "--tracking-uri", f"sqlite:///{db}", "--no-analyze"]
    out = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    exp = tmp_path / "ray" / "one"
    assert f"best model bundle: {exp / 'best_model'}" in out.stdout
    assert files.is_bundle(exp / "best_model") and resolve_model(exp).bundle == exp / "best_model"
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    runs = client.search_runs([client.get_experiment_by_name("one").experiment_id])
    (run,) = [r for r in runs if "reference" not in r.data.tags]  # beside it: the baseline's run
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "bundle")}
    assert {f"bundle/{files.MANIFEST}", f"bundle/{files.WEIGHTS}", f"bundle/{files.CARD_MD}"} <= logged
    m = sourcetrace.load(exp, device="cpu")  # the sweep folder itself is a model argument
    assert m.path == exp / "best_model" and m.trace(clips[1]["sam"][:1])[0].error is None


def test_a_wav2vec2_bundle_loads_without_its_ssl_source(tiny_corpus, tmp_path, clips, monkeypatch):
    """The SSL architecture travels in the bundle: the pretrained folder (or hub) is not needed to trace."""
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    from sourcetrace.artefacts import export
    from sourcetrace.training.checkpoint import load_model

    tiny = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)
    tiny |= dict(conv_dim=(16, 16, 16), conv_kernel=(10, 8, 8), conv_stride=(5, 8, 8), num_conv_pos_embeddings=16)
    tiny |= dict(num_conv_pos_embedding_groups=2, do_stable_layer_norm=True, feat_extract_norm="layer", conv_bias=True)
    source = tmp_path / "ssl"
    torch.manual_seed(0)
    Wav2Vec2Model(Wav2Vec2Config(**tiny)).save_pretrained(source)
    Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(source)  # differs from the config's default
    cfg = {k: v for k, v in TRAIN.items() if not k.startswith(("model.channels", "loss."))}
    cfg |= {"data.root": str(tiny_corpus), "model.name": "w2v2_aasist", "ssl.source": str(source)}
    cfg |= {"ssl.layer": 1, "ssl.finetune": "top", "ssl.top_layers": 1, "train.epochs": 1, "train.eval_every": 1}
    train(Config.from_dict(cfg), tmp_path / "run")
    bundle = export(tmp_path / "run", tmp_path / "bundle", device="cpu")
    sam = clips[1]["sam"][:2]
    want = sourcetrace.load(bundle, device="cpu").embed(sam)
    ref = load_model(tmp_path / "run").model
    assert not ref.frontend.normalize
    shutil.rmtree(source)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    m = sourcetrace.load(bundle, device="cpu")
    assert not m.model.frontend.normalize and m.model.frontend.n_layers == 1
    np.testing.assert_allclose(m.embed(sam), want, atol=1e-6)
    with torch.no_grad():
        wave = torch.from_numpy(sf.read(sam[0], dtype="float32")[0][None, :32000])
        np.testing.assert_allclose(m.model(wave).numpy(), ref(wave).numpy(), atol=1e-5)


def test_trace_output_is_evidence_and_validates_against_the_shipped_schema(moved, clips, tmp_path, capsys):
    """JSON and CSV carry each clip's SHA-256, duration and rate as read, the input handling (level included),
    the bundle's and enrolled.json's hashes, the version and the UTC time; the JSON validates against the schema
    shipped with the package; the table gets one header line; copying or enrolling keeps the bundle's hash."""
    import hashlib
    from datetime import UTC, datetime

    import jsonschema
    import torchaudio

    from sourcetrace.attribution import trace_schema
    from sourcetrace.data.audio import load_audio

    src = clips[1]["sam"][0]
    phone = tmp_path / "phone.wav"
    wave = load_audio(src, 16000)
    sf.write(phone, torchaudio.functional.resample(torch_tensor(wave), 16000, 8000).numpy(), 8000, subtype="PCM_16")
    missing = tmp_path / "missing.wav"
    before = datetime.now(UTC).replace(microsecond=0)
    args = ["trace", "--model", str(moved), "--no-progress"]
    assert main(args + ["--format", "json", src, str(phone), str(missing)]) == 1
    rows = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator(trace_schema()).validate(rows)
    digest = files.bundle_sha256(moved)
    for row, path in zip(rows, (src, phone, missing)):
        assert row["bundle_sha256"] == digest and row["sourcetrace_version"] == sourcetrace.__version__
        assert row["enrolled_sha256"] == hashlib.sha256((moved / files.ENROLLED).read_bytes()).hexdigest()
        when = datetime.strptime(row["traced_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert before <= when <= datetime.now(UTC)
        if path != missing:
            info = sf.info(str(path))
            assert row["sha256"] == hashlib.sha256(Path(path).read_bytes()).hexdigest()
            assert row["duration_s"] == pytest.approx(info.frames / info.samplerate)
            assert row["sample_rate"] == info.samplerate
            assert "peak-normalised" in row["level"] and "-20 dBFS RMS inside the model" in row["level"]
    assert rows[1]["sample_rate"] == 8000 and rows[1]["input"][0].startswith("narrow-band")
    assert rows[2]["error"] and rows[2]["sha256"] is None and rows[2]["level"] is None

    assert main(args + ["--format", "csv", src]) == 0
    head, line = list(csv.reader(capsys.readouterr().out.splitlines()))
    got = dict(zip(head, line))
    assert head[-1] == "input" and got["sha256"] == rows[0]["sha256"] and got["bundle_sha256"] == digest
    assert got["sample_rate"] == str(rows[0]["sample_rate"]) and got["level"] == rows[0]["level"]
    assert {"duration_s", "enrolled_sha256", "sourcetrace_version", "traced_at"} <= set(head)
    assert main(args + [src]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln for ln in lines if ln.startswith("# bundle sha256 ")][0].startswith(f"# bundle sha256 {digest}, ")

    m = sourcetrace.load(moved, device="cpu")  # through the API, a waveform's hash is that of its float32 samples
    (r,) = m.trace(wave)
    assert r.sha256 == hashlib.sha256(wave.astype(np.float32).tobytes()).hexdigest()
    assert r.sample_rate == 16000 and r.duration_s == pytest.approx(len(wave) / 16000)

    copy = tmp_path / "copy"
    shutil.copytree(moved, copy)
    assert files.bundle_sha256(copy) == digest
    sourcetrace.load(copy, device="cpu").enroll("evidence_test", clips[1]["flite_awb"][:5])
    assert files.bundle_sha256(copy) == digest
    assert files.file_sha256(copy / files.ENROLLED) != rows[0]["enrolled_sha256"]
    (copy / files.THRESHOLD).write_text((copy / files.THRESHOLD).read_text() + " ")
    assert files.bundle_sha256(copy) != digest


def test_the_exported_card_holds_the_metrics_its_limits_and_no_machine_path(run, exported, tiny_corpus):
    import yaml

    data = json.loads((exported / files.CARD_JSON).read_text())
    md = (exported / files.CARD_MD).read_text()
    best = json.loads((run / "results.json").read_text())["best"]
    for key, value in best.items():  # the numbers are the checkpoint's metrics
        name, _, cond = key.partition(".")
        assert data["metrics"][cond or "all"][name] == pytest.approx(value)
    manifest = json.loads((exported / files.MANIFEST).read_text())
    assert data["model"]["embedding_dim"] == manifest["embedding_dim"] == 16
    dev = read_protocol(tiny_corpus, splits=("dev",)).tables["dev"]
    assert data["evaluation"]["dev"]["n_clips"] == len(dev)
    for cond, rows in dev.groupby("condition"):
        assert data["evaluation"]["dev"]["conditions"][cond]["n_clips"] == len(rows)
    text = json.dumps(data) + md
    for path in (str(tiny_corpus), str(run), str(exported), str(REPO), os.path.expanduser("~")):
        assert path not in text
    assert data["training_corpus"]["name"] == tiny_corpus.name and "root" not in data["training_corpus"]
    header = yaml.safe_load(md.split("---\n")[1])
    assert header["library_name"] == "sourcetrace" and "tags" in header and header["license"]
    assert "## Out-of-scope use" in md and "## Known failure modes" in md
    calibration = json.loads((exported / files.CALIBRATION).read_text())
    assert data["calibration"]["description"] == calibration["description"] and calibration["description"] in md


def test_enrolment_and_removal_rewrite_the_card(moved, clips, capsys):
    five = clips[1]["sam"][:5]
    assert main(["enroll", "--model", str(moved), "--system", NEW, *five]) == 0
    out = capsys.readouterr().out
    assert f"{NEW}: nearest existing system " in out
    data = json.loads((moved / files.CARD_JSON).read_text())
    (entry,) = data["enrolled_systems"]
    assert entry["name"] == NEW and entry["n_clips"] == 5 and entry["overlap"]["n_clips"] == 5
    assert entry["overlap"]["nearest"] in data["training_corpus"]["systems"]
    assert f"- {NEW}: 5 clips; before enrolment" in (moved / files.CARD_MD).read_text()
    assert main(["enroll", "--model", str(moved), "--remove", NEW]) == 0
    assert json.loads((moved / files.CARD_JSON).read_text())["enrolled_systems"] == []
    assert NEW not in (moved / files.CARD_MD).read_text()
    assert not list(moved.glob(files.TMP_PREFIX + "*"))
