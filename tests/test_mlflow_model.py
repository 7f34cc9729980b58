"""The model a sweep hands over as a registered MLflow pyfunc model: logged from code (no pickle), loaded by
``models:/NAME/VERSION`` from the sqlite store, predicting on clips and waveforms, served over REST."""

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import soundfile as sf
from test_bundle import TRAIN  # the model trained for seconds on the tiny corpus, as in test_bundle

from sourcetrace.bundle.model import SourceTracer
from sourcetrace.cli import main
from sourcetrace.config import Config
from sourcetrace.data.protocol import read_protocol
from sourcetrace.tracking.pyfunc import log_bundle_model
from sourcetrace.tracking.store import client_for, ensure_experiment, resolve_store
from sourcetrace.training.loop import train

pytestmark = pytest.mark.slow  # a model trained for seconds on the tiny real corpus
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bundle(tiny_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pyfunc")
    train(Config.from_dict({"data.root": str(tiny_corpus), **TRAIN}), out / "run")
    assert main(["export", "--model", str(out / "run"), "--out", str(out / "bundle")]) == 0
    return out / "bundle"


@pytest.fixture(scope="module")
def clip(tiny_corpus):
    return sorted(read_protocol(tiny_corpus, splits=("eval",)).tables["eval"]["file"])[0]


@pytest.fixture(scope="module")
def registered(bundle, tmp_path_factory):
    """A sweep's store with two finished runs, each handing over the bundle: versions 1 and 2 of ``sw``."""
    store = resolve_store(f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlruns' / 'mlflow.db'}")
    client = client_for(store)
    exp = ensure_experiment(store, "sw")
    run_ids = []
    for name in ("first", "second"):
        run = client.create_run(exp, run_name=name)
        client.set_terminated(run.info.run_id, status="FINISHED")
        run_ids.append(run.info.run_id)
    versions = [log_bundle_model(store, "sw", run_id, bundle) for run_id in run_ids]
    return store, run_ids, versions


def test_the_bundle_registers_once_per_run_and_loads_from_the_registry(registered, bundle, clip, monkeypatch):
    store, run_ids, versions = registered
    client = client_for(store)
    assert [(v.name, v.version, v.run_id) for v in versions] == [("sw", 1, run_ids[0]), ("sw", 2, run_ids[1])]
    assert log_bundle_model(store, "sw", run_ids[0], bundle).version == 1  # reported again: no new version
    assert [m.name for m in client.search_registered_models()] == ["sw"]
    assert {r.info.status for r in map(client.get_run, run_ids)} == {"FINISHED"}  # reopened, closed as it was
    logged = client.search_logged_models([ensure_experiment(store, "sw")])
    assert sorted(m.source_run_id for m in logged) == sorted(run_ids)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    model = mlflow.pyfunc.load_model("models:/sw/1")
    sig = model.metadata.signature
    assert [c.name for c in sig.inputs.inputs] == ["clip", "waveform"] and sig.params.params[0].name == "top_k"
    example = model.metadata.load_input_example(model.metadata.artifact_path or "")
    assert example is None or "waveform" in example  # stored beside the model (the UI shows it)

    out = model.predict(pd.DataFrame({"clip": [clip, str(Path(clip).with_name("absent.wav"))]}), params={"top_k": 2})
    tracer = SourceTracer(bundle, device="cpu")
    (expected,) = tracer.trace([clip], top_k=2)
    first = out.iloc[0]
    assert list(first["top_systems"]) == [s for s, _ in expected.top] and first["decision"] == expected.decision
    assert first["knownness"] == pytest.approx(expected.knownness, abs=1e-5) and first["error"] == ""
    assert out.iloc[1]["error"] and list(out.iloc[1]["top_systems"]) == []  # a bad clip: its error, not a crash

    samples, rate = sf.read(clip, dtype="float32")  # the same clip as samples at the model's rate
    assert rate == tracer.config.data.sample_rate and samples.ndim == 1
    by_wave = model.predict(pd.DataFrame({"waveform": [samples.tolist()]}))
    (as_wave,) = tracer.trace([samples], top_k=3)
    assert list(by_wave.iloc[0]["top_systems"]) == [s for s, _ in as_wave.top]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_registered_model_serves_a_clip_over_rest_on_127_0_0_1(registered, bundle, clip, tmp_path):
    store, _, _ = registered
    port = _free_port()
    cmd = [sys.executable, "-m", "mlflow", "models", "serve", "-m", "models:/sw/2", "--env-manager", "local"]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # its uvicorn, as a venv has
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, PYTHONPATH=str(REPO), PATH=path)
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        body = json.dumps({"dataframe_split": {"columns": ["clip"], "data": [[clip]]}, "params": {"top_k": 2}})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        deadline, answer = time.time() + 180, None
        while answer is None and time.time() < deadline:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    answer = json.load(r)
            except OSError:
                time.sleep(1)
        assert answer is not None, (tmp_path / "serve.log").read_text()[-3000:]
        (row,) = answer["predictions"]
        (expected,) = SourceTracer(bundle, device="cpu").trace([clip], top_k=2)
        assert row["top_systems"] == [s for s, _ in expected.top] and row["decision"] == expected.decision
        assert row["knownness"] == pytest.approx(expected.knownness, abs=1e-5)
    finally:
        os.killpg(server.pid, 15)
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
        log.close()
