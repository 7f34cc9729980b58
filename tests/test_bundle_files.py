"""Bundle files without a model: strict readers, atomic writes, the lock, names, input expansion, light import."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sourcetrace.attribution import escape, expand_inputs
from sourcetrace.bundle import files
from sourcetrace.bundle.embedder import windows
from sourcetrace.bundle.files import BundleError
from sourcetrace.errors import SourcetraceError

REPO = Path(__file__).resolve().parents[1]


def test_readers_name_the_file_that_is_missing_truncated_or_pickled(tmp_path):
    with pytest.raises(BundleError, match=r"enrolled.json: missing"):
        files.read_json(tmp_path, files.ENROLLED)
    (tmp_path / files.THRESHOLD).write_text('{"value": 0.4')
    with pytest.raises(BundleError, match=r"threshold.json: not valid JSON .*truncated or damaged"):
        files.read_json(tmp_path, files.THRESHOLD)
    np.save(tmp_path / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.savez(tmp_path / files.SCORER_ARRAYS, means=np.array([{"a": 1}], dtype=object))
    with pytest.raises(BundleError, match=r"scorer.npz: holds pickled objects"):
        files.read_npz(tmp_path, files.SCORER_ARRAYS)
    (tmp_path / files.SCORER_ARRAYS).write_bytes(b"PK\x03\x04truncated")
    with pytest.raises(BundleError, match=r"scorer.npz: not a readable .npz"):
        files.read_npz(tmp_path, files.SCORER_ARRAYS)
    (tmp_path / files.WEIGHTS).write_bytes(b"\x80\x04K\x01.")  # a pickle
    with pytest.raises(BundleError, match=r"weights.safetensors: not a safetensors weights file"):
        files.read_weights(tmp_path)


def test_manifest_checks_format_version_and_required_files(tmp_path):
    with pytest.raises(BundleError, match="bundle.json: missing"):
        files.check_manifest(tmp_path)
    files.write_json(tmp_path / files.MANIFEST, {"format": "other"})
    with pytest.raises(BundleError, match="not a sourcetrace bundle manifest"):
        files.check_manifest(tmp_path)
    files.write_json(tmp_path / files.MANIFEST, {"format": files.FORMAT, "format_version": files.FORMAT_VERSION})
    with pytest.raises(BundleError, match="incomplete bundle, missing config.json, weights.safetensors"):
        files.check_manifest(tmp_path)
    for name in files.REQUIRED[1:]:
        (tmp_path / name).write_text("{}")
    with pytest.raises(BundleError, match="needs a non-empty 'known_systems' list"):
        files.check_manifest(tmp_path)


def test_atomic_writes_leave_the_old_file_and_the_lock_sweeps_stray_temporaries(tmp_path):
    target = tmp_path / files.ENROLLED
    files.write_json(target, {"systems": []})
    with pytest.raises(TypeError):
        files.atomic_write(target, 12345)  # fails mid-write: the old content stays, no temporary is left
    assert json.loads(target.read_text()) == {"systems": []}
    assert not list(tmp_path.glob(files.TMP_PREFIX + "*"))
    stray = tmp_path / f"{files.TMP_PREFIX}{files.ENROLLED}.abc"  # what a SIGKILLed writer leaves
    stray.write_text("{")
    with files.locked(tmp_path):
        assert not stray.exists()
        stray.write_text("{")  # a writer holds the lock: a reader leaves its temporaries alone
        files.sweep_strays(tmp_path)
        assert stray.exists()
    files.sweep_strays(tmp_path)  # nobody writes: leftovers go at the next load
    assert not stray.exists()


def test_the_lock_serialises_writers(tmp_path):
    files.write_json(tmp_path / "n.json", 0)

    def bump():
        with files.locked(tmp_path):
            n = files.read_json(tmp_path, "n.json")
            time.sleep(0.02)  # without the lock the other writers read the same n and updates are lost
            files.write_json(tmp_path / "n.json", n + 1)

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert files.read_json(tmp_path, "n.json") == 8


@pytest.mark.parametrize("bad", ["", " ", "a\tb", "a\nb", "a\rb", "a\x00b", "x\u2028y", " lead", "UNKNOWN"])
def test_bad_names_are_refused(bad):
    with pytest.raises(BundleError, match="invalid system name"):
        files.check_name(bad)


def test_names_with_slashes_and_unicode_are_values():
    for good in ("tts_models/en/ljspeech/vits", "facebook/mms-tts-deu", "../x", "système 2"):
        assert files.check_name(good) == good
    assert escape("a\tb\nc\\d\x01") == "a\\tb\\nc\\\\d\\x01"


def test_inputs_expand_folders_globs_and_lists(tmp_path):
    for rel in ("a/1.wav", "a/b/2.FLAC", "a/notes.txt", "c/3.mp3"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# case 7\n{tmp_path / 'c/3.mp3'}\n\n{tmp_path / 'missing.wav'}\n")
    got = expand_inputs([str(tmp_path / "a"), str(tmp_path / "c" / "*.mp3"), f"@{listing}"])
    assert got == [
        str(tmp_path / "a/1.wav"),
        str(tmp_path / "a/b/2.FLAC"),
        str(tmp_path / "c/3.mp3"),
        str(tmp_path / "c/3.mp3"),
        str(tmp_path / "missing.wav"),  # kept: its clip reports "does not exist"
    ]
    with pytest.raises(SourcetraceError, match="matches no file"):
        expand_inputs([str(tmp_path / "*.ogg")])
    with pytest.raises(SourcetraceError, match="list file .* does not exist"):
        expand_inputs([f"@{tmp_path / 'nope.txt'}"])
    os.mkdir(tmp_path / "empty")
    with pytest.raises(SourcetraceError, match="holds no audio files"):
        expand_inputs([str(tmp_path / "empty")])


def test_multi_crop_windows_cover_long_clips_with_half_overlap():
    wave = np.arange(10 * 16000, dtype=np.float32)
    ws = windows(wave, 3 * 16000)
    assert len(ws) == 6 and all(len(w) == 48000 for w in ws)
    assert ws[0][0] == 0 and ws[-1][-1] == wave[-1]
    assert len(windows(wave[:1000], 48000)) == 1 and len(windows(np.zeros(3600 * 16000), 48000)) == 10


def test_import_sourcetrace_stays_light():
    code = "import sys, sourcetrace; print(sorted(m for m in ('torch', 'numpy', 'pandas') if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_model_card_puts_the_sweeps_baseline_beside_the_model_per_condition(tmp_path):
    from sourcetrace.bundle.card import _split_metrics, markdown, sweep_baseline

    ckpt = tmp_path / "sweep" / "trial_0" / "checkpoint_000003"
    ckpt.mkdir(parents=True)
    assert sweep_baseline(ckpt) == {}
    (tmp_path / "sweep" / "sourcetrace_sweep.json").write_text("{}")
    (tmp_path / "sweep" / "baseline.json").write_text(json.dumps({"metrics": {"test_eer": 12.3, "test_eer.c1": 9.0}}))
    base = sweep_baseline(ckpt)
    assert base == {"baseline_test_eer": 12.3, "baseline_test_eer.c1": 9.0}
    table = _split_metrics({"test_eer": 8.7, "test_eer.c1": 2.1, "dev_eer": 11.4} | base)
    assert table["model"] == {"all": {"test_eer": 8.7, "dev_eer": 11.4}, "c1": {"test_eer": 2.1}}
    assert table["baseline"] == {"all": {"test_eer": 12.3}, "c1": {"test_eer": 9.0}}
    card = {
        "created": "now",
        "sourcetrace_version": "0",
        "git_commit": None,
        "source": {"kind": "run", "name": "p", "checkpoint": "best"},
        "model": {"name": "thin_resnet34", "loss": "ge2e", "embedding_dim": 50},
        "training_corpus": {
            "name": "r",
            "protocol": "protocol",
            "train_split": "train",
            "dev_split": "dev",
            "n_clips": 3,
            "systems": ["a"],
            "languages": [],
        },
        "metrics": table["model"],
        "baseline_metrics": table["baseline"],
        "intervals": {},
        "open_set": {"scorer": "centroid", "threshold": {"value": 0.5, "description": "x"}},
        "input": {"eval_seconds": 6.0},
    }
    md = markdown(card)
    assert "| condition | dev_eer | test_eer | baseline test_eer |" in md
    assert "| all | 11.40 | 8.70 | 12.30 |" in md and "| c1 |  | 2.10 | 9.00 |" in md


def test_devices_other_than_cpu_and_cuda_are_refused_by_name():
    import torch

    from sourcetrace.device import resolve_device

    assert resolve_device("cpu").type == "cpu" and resolve_device("auto").type in ("cpu", "cuda")
    for bad in ("tpu:7", "mps", "gpu"):
        with pytest.raises(SourcetraceError, match=f"--device '{bad}': use auto, cpu, cuda or cuda:N"):
            resolve_device(bad, f"--device {bad!r}")
    if not torch.cuda.is_available():
        with pytest.raises(SourcetraceError, match="CUDA is not available here"):
            resolve_device("cuda")
