"""Hostile and damaged bundle and fusion files: property-based mutations of every file a real tiny bundle and a
fusion folder hold (wrong types, NaN / infinity, huge sizes, truncation, invalid UTF-8, an empty file, JSON of
another shape, random bytes), each of which must give either a correct load or one ``SourcetraceError`` line
naming the file, never another exception and never a big allocation; then the size caps one by one, and the
commands that check where they will write before they load a model.

The bundle is trained for one step on the tiny real corpus and exported once per module; every example
mutates a fresh copy of it. Hypothesis runs derandomized (the same examples on every run, as CI needs)."""

from __future__ import annotations

import io
import json
import math
import os
import resource
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sourcetrace.artefacts import export
from sourcetrace.bundle import files
from sourcetrace.bundle.files import BundleError
from sourcetrace.bundle.model import SourceTracer
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.errors import SourcetraceError
from sourcetrace.fusion import FUSION_FILE, load_model, write_fusion
from sourcetrace.schemas import MAX_JSON_BYTES
from sourcetrace.training.loop import train

TRAIN = {  # the smallest model that trains and exports: one step, 2 channels, 8 dimensions
    "train.epochs": 1,
    "train.eval_every": 1,
    "train.warmup_epochs": 0,
    "train.steps_per_epoch": 1,
    "train.batch_size": 8,
    "train.eval_test": False,
    "model.embedding_dim": 8,
    "model.channels": 2,
    "loss.name": "aamsoftmax",
    "data.crop_seconds": 0.5,
    "data.eval_seconds": 0.5,
    "data.short_clips": "pad",
    "data.max_clips_per_class": 4,
}
FUZZ = settings(
    max_examples=20,
    derandomize=True,  # the same examples on every run
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
JSON_FILES = (files.MANIFEST, files.CONFIG, files.THRESHOLD, files.SCORER_JSON, files.ENROLLED, files.CALIBRATION)
WAVE = (np.sin(np.arange(16000) * 0.05) * 0.1).astype(np.float32)  # 1 s at 16 kHz


@pytest.fixture(scope="module")
def made(tiny_corpus, tmp_path_factory):
    """(run folder, bundle with one enrolled system, fusion folder of the run twice)."""
    base = tmp_path_factory.mktemp("fuzz")
    run = base / "run"
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), run)
    bundle = export(run, base / "bundle", device="cpu")
    ev = read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]
    SourceTracer(bundle, device="cpu").enroll("tts_models/xx/new/vits", sorted(ev["file"])[:2])
    fusion = write_fusion(base / "fusion", [run, run])
    return run, bundle, fusion


def _copy(src: Path) -> tuple[tempfile.TemporaryDirectory, Path]:
    tmp = tempfile.TemporaryDirectory(prefix="fuzz-")
    dest = Path(tmp.name) / src.name
    shutil.copytree(src, dest)
    return tmp, dest


def _one_clear_line(err: SourcetraceError, name: str) -> None:
    text = str(err)
    assert name in text, f"the error does not name {name}: {text}"
    assert "\n" not in text.strip() and "Traceback" not in text, text


def _load_bundle_or_clear_error(folder: Path, name: str) -> None:
    """A correct load (finite threshold, a trace with finite scores) or one clear error naming ``name``."""
    try:
        tracer = SourceTracer(folder, device="cpu")
    except SourcetraceError as err:
        _one_clear_line(err, name)
        return
    assert math.isfinite(tracer.threshold["value"]) and tracer.systems
    (res,) = tracer.trace([WAVE])
    assert res.error is None and res.decision in (*tracer.systems, "unknown")
    assert all(math.isfinite(score) for _, score in res.top) and math.isfinite(res.knownness)


# -- mutations -----------------------------------------------------------------------------------------------
HOSTILE = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf, True, False, None, 0, -1, 10**30, 1e308, "", [], {}]),
    st.just("x" * 100_000),
    st.just(list(range(100_000))),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.recursive(
        st.none() | st.booleans() | st.floats() | st.text(max_size=5),
        lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=5), kids, max_size=3),
        max_leaves=8,
    ),
)


def _paths(obj, here=()):
    """Every path (tuple of keys / indices) into a JSON value, the value itself first."""
    yield here
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*here, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:4]):  # a long list (an embedding) is represented by its head
            yield from _paths(v, (*here, i))


def _set(obj, path, value):
    if not path:
        return value
    parent = obj
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return obj


def _delete(obj, path):
    if path:
        parent = obj
        for key in path[:-1]:
            parent = parent[key]
        del parent[path[-1]]
    return obj


@st.composite
def json_damage(draw, text: str) -> bytes:
    """``text`` (a JSON file) with a value replaced or a key removed, truncated, made invalid UTF-8, emptied,
    replaced with JSON of another shape or with random bytes, or nested past any parser's depth."""
    data = text.encode()
    kind = draw(
        st.sampled_from(["value", "value", "value", "delete", "truncate", "utf8", "empty", "shape", "bytes", "deep"])
    )
    if kind in ("value", "delete"):
        obj = json.loads(text)
        paths = list(_paths(obj))
        path = draw(st.sampled_from(paths[1:] if kind == "delete" and len(paths) > 1 else paths))
        obj = _delete(obj, path) if kind == "delete" and path else _set(obj, path, draw(HOSTILE))
        return json.dumps(obj).encode()  # NaN and Infinity are written as Python's json writes them
    if kind == "truncate":
        return data[: draw(st.integers(0, max(len(data) - 1, 0)))]
    if kind == "utf8":
        at = draw(st.integers(0, len(data)))
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    if kind == "empty":
        return b""
    if kind == "shape":
        return json.dumps(draw(HOSTILE)).encode()
    if kind == "deep":
        return b"[" * 200_000 + b"]" * 200_000
    return draw(st.binary(max_size=200))


def _npy_header(shape, descr="<f4") -> bytes:
    header = repr({"descr": descr, "fortran_order": False, "shape": tuple(shape)}).encode()
    header += b" " * (63 - (len(header) + 10) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header


@st.composite
def npz_damage(draw, original: bytes, arrays: dict) -> bytes:
    kind = draw(st.sampled_from(["value", "value", "shape", "huge", "object", "truncate", "bytes", "empty", "json"]))
    if kind in ("value", "shape", "object"):
        key = draw(st.sampled_from(sorted(arrays)))
        changed = dict(arrays)
        if kind == "value":
            arr = arrays[key].astype(np.float64 if arrays[key].dtype.kind == "f" else arrays[key].dtype)
            if arr.size:
                flat = arr.reshape(-1).copy()
                flat[draw(st.integers(0, flat.size - 1))] = draw(
                    st.sampled_from([np.nan, np.inf, -np.inf, 0, -1, 1e30])
                    if arr.dtype.kind == "f"
                    else st.sampled_from([0, -1, 2**40])
                )
                arr = flat.reshape(arr.shape)
            changed[key] = arr
        elif kind == "shape":
            changed[key] = draw(st.sampled_from([np.zeros((0,)), np.zeros((3, 5, 2)), np.ones((2, 7)), np.array(1.0)]))
        else:
            changed[key] = np.array([{"a": 1}], dtype=object)
        buf = io.BytesIO()
        np.savez(buf, **changed)
        return buf.getvalue()
    if kind == "huge":  # a header asking for terabytes over a few bytes of data: never allocated
        import zipfile

        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for key in arrays:
                z.writestr(key + ".npy", _npy_header((10**7, 10**6)) if key == sorted(arrays)[0] else b"")
        return buf.getvalue()
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "json":
        return b'{"means": [1, 2]}'
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=200))


@st.composite
def weights_damage(draw, original: bytes) -> bytes:
    kind = draw(st.sampled_from(["truncate", "flip", "huge", "header", "bytes", "empty", "pickle"]))
    n = int.from_bytes(original[:8], "little")
    header = json.loads(original[8 : 8 + n])
    if kind == "truncate":
        return original[: draw(st.integers(0, len(original) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(original) - 1))
        return original[:at] + bytes([original[at] ^ draw(st.integers(1, 255))]) + original[at + 1 :]
    if kind in ("huge", "header"):
        key = draw(st.sampled_from(sorted(k for k in header if k != "__metadata__")))
        if kind == "huge":  # claims 4e12 float32 values
            header[key] = {"dtype": "F32", "shape": [2_000_000, 2_000_000], "data_offsets": [0, 16 * 10**12]}
        else:
            header[key] = draw(HOSTILE)
        text = json.dumps(header).encode()
        return len(text).to_bytes(8, "little") + text + original[8 + n :]
    if kind == "pickle":
        return b"\x80\x04K\x01."
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=200))


# -- the fuzz suite --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", JSON_FILES)
def test_damaged_bundle_json_loads_correctly_or_is_one_line_naming_the_file(made, name):
    _, bundle, _ = made
    text = (bundle / name).read_text()

    @FUZZ
    @given(json_damage(text))
    def check(data):
        tmp, copy = _copy(bundle)
        with tmp:
            (copy / name).write_bytes(data)
            _load_bundle_or_clear_error(copy, name)

    check()


def test_damaged_scorer_arrays_load_correctly_or_are_one_line_naming_the_file(made):
    _, bundle, _ = made
    original = (bundle / files.SCORER_ARRAYS).read_bytes()
    arrays = files.read_npz(bundle, files.SCORER_ARRAYS)

    @FUZZ
    @given(npz_damage(original, arrays))
    def check(data):
        tmp, copy = _copy(bundle)
        with tmp:
            (copy / files.SCORER_ARRAYS).write_bytes(data)
            _load_bundle_or_clear_error(copy, files.SCORER_ARRAYS)

    check()


def test_damaged_weights_load_correctly_or_are_one_line_naming_the_file(made):
    _, bundle, _ = made
    original = (bundle / files.WEIGHTS).read_bytes()

    @FUZZ
    @given(weights_damage(original))
    def check(data):
        tmp, copy = _copy(bundle)
        with tmp:
            (copy / files.WEIGHTS).write_bytes(data)
            _load_bundle_or_clear_error(copy, files.WEIGHTS)

    check()


def test_damaged_fusion_json_loads_correctly_or_is_one_line_naming_the_file(made):
    _, _, fusion = made
    text = (fusion / FUSION_FILE).read_text()

    @FUZZ
    @given(json_damage(text))
    def check(data):
        tmp, copy = _copy(fusion)
        with tmp:
            (copy / FUSION_FILE).write_bytes(data)
            try:
                loaded = load_model(copy, "cpu")
            except SourcetraceError as err:
                _one_clear_line(err, FUSION_FILE)
                return
            import torch

            with torch.no_grad():
                out = loaded.model(torch.from_numpy(WAVE)[None])
            assert out.shape == (1, loaded.model.embedding_dim) and bool(torch.isfinite(out).all())

    check()


# -- the caps, one by one --------------------------------------------------------------------------------------
def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _clip(folder: Path) -> str:
    import soundfile as sf

    sf.write(folder / "clip.wav", WAVE, 16000)
    return str(folder / "clip.wav")


def _edit_json(path: Path, edit) -> None:
    obj = json.loads(path.read_text())
    edit(obj)
    path.write_text(json.dumps(obj))


def test_a_config_asking_for_a_huge_model_is_one_line_and_nothing_is_allocated(made, tmp_path, capsys):
    """model.channels=100000 used to ask for hundreds of GB: now one line naming the file and the key, whether
    in the bundle's config.json or in a fusion member's config in bundle.json."""
    _, bundle, _ = made
    before = _max_rss_mb()
    own = Path(shutil.copytree(bundle, tmp_path / "own"))
    _edit_json(own / files.CONFIG, lambda c: c.update({"model.channels": 100000}))
    with pytest.raises(BundleError) as err:
        SourceTracer(own, device="cpu")
    assert str(err.value) == f"{own / files.CONFIG}: model.channels=100000 is above the cap of 256"

    member = Path(shutil.copytree(bundle, tmp_path / "member"))
    cfg = json.loads((member / files.CONFIG).read_text())
    spec = {"weights": [1, 1], "members": [{"config": cfg}, {"config": cfg | {"model.channels": 100000}}]}
    _edit_json(member / files.MANIFEST, lambda m: m.update({"network": {"fusion": spec}}))
    assert main(["trace", _clip(tmp_path), "--model", str(member)]) == 2
    out = capsys.readouterr().err.strip()
    assert out.endswith("bundle.json: network.fusion.members[1].config: model.channels=100000 is above the cap of 256")
    assert len(out.splitlines()) == 1 and "Traceback" not in out
    assert _max_rss_mb() - before < 500  # nothing near the model's size was allocated


def test_sizes_within_their_caps_that_multiply_past_the_memory_cap_are_refused_before_building(
    made, tmp_path, monkeypatch
):
    """The memory a config asks for is counted by a dry run on the meta device before the model is built."""
    import sourcetrace.models

    _, bundle, _ = made
    built = []
    real = sourcetrace.models.build_model
    monkeypatch.setattr(sourcetrace.models, "build_model", lambda cfg: built.append(cfg) or real(cfg))
    monkeypatch.setattr(files, "MAX_MODEL_BYTES", 1 << 20)  # 1 MiB: the tiny model asks for ~150 kB
    big = Path(shutil.copytree(bundle, tmp_path / "big"))
    _edit_json(big / files.CONFIG, lambda c: c.update({"model.channels": 64}))
    with pytest.raises(BundleError, match=r"config.json: its model asks for [\d,]+ bytes .* more than the cap of"):
        SourceTracer(big, device="cpu")
    assert len(built) == 1  # the dry run only
    SourceTracer(bundle, device="cpu")  # the tiny model fits


def test_size_caps_of_scorer_arrays_weights_json_and_lists(made, tmp_path):
    _, bundle, _ = made
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    import zipfile

    with zipfile.ZipFile(b / files.SCORER_ARRAYS, "w") as z:  # 40 TB asked for in a 200-byte file
        z.writestr("embeddings.npy", _npy_header((10**7, 10**6)))
    with pytest.raises(BundleError, match=r"scorer.npz: array 'embeddings' has shape \(10000000, 1000000\)"):
        files.read_npz(b, files.SCORER_ARRAYS)
    header = json.dumps({"w": {"dtype": "F32", "shape": [10**6, 10**6], "data_offsets": [0, 4 * 10**12]}}).encode()
    (b / files.WEIGHTS).write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(BundleError, match=r"weights.safetensors: its tensors take 4,000,000,000,000 bytes"):
        files.read_weights(b)
    with open(b / files.ENROLLED, "wb") as f:
        f.truncate(MAX_JSON_BYTES + 1)  # sparse: no disk used
    with pytest.raises(BundleError, match=r"enrolled.json: 268,435,457 bytes, more than"):
        files.read_json(b, files.ENROLLED)
    many = {"systems": [{"name": "s", "clips": [{"sha256": "0" * 64, "embedding": [0.0]}] * 100_001}]}
    (b / files.ENROLLED).write_text(json.dumps(many))
    with pytest.raises(BundleError, match=r"enrolled.json: 'systems\[0\].clips' has 100001 items; at most 100000"):
        files.read_json(b, files.ENROLLED)
    _edit_json(b / files.MANIFEST, lambda m: m.update({"known_systems": ["s"] * 10_001}))
    with pytest.raises(BundleError, match=r"bundle.json: 'known_systems' has 10001 items; at most 10000 allowed"):
        files.check_manifest(b)


@pytest.mark.parametrize(
    "name, edit, message",
    [
        (files.THRESHOLD, {"value": True}, "threshold.json: 'value' must be a finite number, got a boolean (true)"),
        (files.THRESHOLD, {"target": "5%"}, "threshold.json: 'target' must be a finite number or null, got '5%'"),
        (files.MANIFEST, {"format_version": True}, "bundle.json: bundle format version True"),
        (files.MANIFEST, {"embedding_dim": 8.5}, "bundle.json: needs a non-empty 'known_systems' list"),
        (files.SCORER_JSON, {"systems": "abc"}, "scorer.json: 'systems' must be a list, got 'abc'"),
        (files.SCORER_JSON, {"k": 0}, "scorer.json: 'k'=0 is out of range: it must be >= 1"),
        (files.ENROLLED, {"systems": [{"name": 3, "clips": []}]}, "enrolled.json: 'systems[0].name' must be a string"),
    ],
)
def test_typed_json_errors_name_the_file_and_the_field(made, tmp_path, name, edit, message):
    _, bundle, _ = made
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    _edit_json(b / name, lambda obj: obj.update(edit))
    with pytest.raises(BundleError) as err:
        SourceTracer(b, device="cpu")
    assert message in str(err.value) and "\n" not in str(err.value)


def test_a_bundle_file_that_is_a_pipe_or_a_folder_is_not_a_regular_file(made, tmp_path):
    _, bundle, _ = made
    b = Path(shutil.copytree(bundle, tmp_path / "b"))
    (b / files.ENROLLED).unlink()
    os.mkfifo(b / files.ENROLLED)  # reading it would block forever
    with pytest.raises(BundleError, match=r"enrolled.json: not a regular file"):
        files.read_json(b, files.ENROLLED)
    with pytest.raises(BundleError, match=r"enrolled.json: not a regular file"):
        SourceTracer(b, device="cpu")
    (b / files.ENROLLED).unlink()
    (b / files.ENROLLED).mkdir()
    with pytest.raises(BundleError, match=r"enrolled.json: not a regular file"):
        SourceTracer(b, device="cpu")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"[]", "fusion.json: (top level) must be an object, got a list of 0 items"),
        (b'{"format": "sourcetrace-fusion", "members": [{"checkpoint": "\xff"}]}', "fusion.json: not UTF-8"),
        (b"", "fusion.json: not valid JSON"),
        (None, "fusion.json: 'metrics' must be an object, got a list of 2 items"),
    ],
)
def test_a_damaged_fusion_record_is_one_line_exit_2(made, tmp_path, capsys, content, message):
    _, _, fusion = made
    f = Path(shutil.copytree(fusion, tmp_path / "f"))
    if content is None:
        _edit_json(f / FUSION_FILE, lambda r: r.update({"metrics": [1, 2]}))
    else:
        (f / FUSION_FILE).write_bytes(content)
    assert main(["trace", _clip(tmp_path), "--model", str(f)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


# -- outputs checked before work -------------------------------------------------------------------------------
def _no_model_load(monkeypatch):
    import sourcetrace.commands.analyze as analyze
    import sourcetrace.training.checkpoint as checkpoint

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the output was checked")

    monkeypatch.setattr(checkpoint, "load_model", refuse)
    monkeypatch.setattr(analyze, "load_any", refuse)


@pytest.mark.parametrize("command", ["export", "analyze"])
def test_export_and_analyze_check_their_output_before_loading_the_model(made, tmp_path, capsys, monkeypatch, command):
    """An output under a regular file (which fails for root too): one line naming it, exit 2, nothing loaded."""
    run, _, _ = made
    _no_model_load(monkeypatch)
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    args = ["export", "--model", str(run)] if command == "export" else ["analyze", "--model", str(run)]
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "cannot be written" in err and str(blocker) in err and "--out" in err
    assert len(err.splitlines()) == 1 and blocker.read_text() == "not a folder"


def test_report_checks_its_folder_before_reading_the_sweep(tmp_path, capsys, monkeypatch):
    import sourcetrace.sweep.report as report

    def refuse(*args, **kwargs):
        raise AssertionError("the sweep was read before the report folder was checked")

    monkeypatch.setattr(report, "write_reports", refuse)
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["report", str(sweep), "--out", str(blocker / "report")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sourcetrace report: error: the report folder") and "cannot be written" in err
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("split", ["../../outside", "sub/dev", "..", "/etc/passwd"])
def test_split_names_a_split_not_a_path(tmp_path, capsys, split):
    protocol = tmp_path / "corpus" / "protocol"
    protocol.mkdir(parents=True)
    for name in ("dev", "eval", "train"):
        (protocol / f"{name}.csv").write_text("file,system\n")
    (tmp_path / "outside.csv").write_text("file,system\n")
    args = ["evaluate", "--model", str(tmp_path / "no_model"), "--root", str(tmp_path / "corpus"), "--split", split]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert f"--split {split!r} names a split, not a path" in err and err.endswith("dev, eval, train")
    assert len(err.splitlines()) == 1


def test_a_build_the_dry_run_cannot_follow_is_still_refused_before_its_big_allocation():
    """Should a model's construction read values back (which the meta device cannot give), the real build runs
    under a live budget: the tensor that would pass the cap is refused before it is allocated."""
    import torch

    from sourcetrace.validation import ModelTooLarge, build_within_cap

    def build():
        assert torch.zeros(3).tolist() == [0.0, 0.0, 0.0]  # fails on the meta device: no dry run
        return torch.nn.Linear(100_000, 100_000)  # 40 GB

    before = _max_rss_mb()
    with pytest.raises(ModelTooLarge, match="refused before it is built"):
        build_within_cap(build, "the model", 1 << 20)
    assert _max_rss_mb() - before < 500
    assert build_within_cap(lambda: torch.nn.Linear(10, 10), "the model", 1 << 20).weight.shape == (10, 10)
