"""``sourcetrace ui``: its MLflow server listens on 127.0.0.1 and dies with it, even on SIGKILL."""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient

from sourcetrace.tracking.store import KIND_TRAINING, TAG_KIND, ensure_experiment, experiment_urls, resolve_store

REPO = Path(__file__).parent.parent


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listeners(port):
    return [c for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]


@pytest.mark.slow
def test_sigkilled_ui_takes_its_server_along(tmp_path):
    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    ensure_experiment(store, "sw")
    port = _free_port()
    cmd = [sys.executable, "-m", "sourcetrace.cli", "ui", "--tracking-uri", store.uri, "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    log = open(tmp_path / "ui.log", "w")
    ui = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    server = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _listeners(port):
            assert ui.poll() is None, "sourcetrace ui exited"
            time.sleep(0.5)
        found = _listeners(port)
        assert found, "the MLflow server never listened"
        assert {c.laddr.ip for c in found} <= {"127.0.0.1"}
        while time.time() < deadline and "/runs" not in (tmp_path / "ui.log").read_text():
            time.sleep(0.5)  # the URLs are printed once the server answers
        printed = (tmp_path / "ui.log").read_text()
        assert f"sweep sw: http://127.0.0.1:{port}/#/experiments/" in printed and "/runs" in printed
        server = [psutil.Process(c.pid) for c in found if c.pid] + psutil.Process(ui.pid).children(recursive=True)
        assert server, "no server process found"
        os.kill(ui.pid, signal.SIGKILL)
        ui.wait(10)
        gone, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, f"server processes outlived a SIGKILLed `sourcetrace ui`: {alive}"
        assert not _listeners(port)
    finally:
        for p in server:
            if p.is_running():
                p.kill()
        if ui.poll() is None:
            ui.kill()
        log.close()


def test_ui_imports_no_ray():
    """``sourcetrace ui`` needs the MLflow store only: its module imports no Ray (a fresh interpreter)."""
    code = "import sys, sourcetrace.ui; print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_sweep_experiments_open_in_the_training_view(tmp_path):
    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    exp_id = ensure_experiment(store, "sw", str(tmp_path / "ray" / "sw"))
    assert MlflowClient(store.uri).get_experiment(exp_id).tags[TAG_KIND] == KIND_TRAINING
    assert experiment_urls(store, "http://127.0.0.1:5000") == {
        "sw": f"http://127.0.0.1:5000/#/experiments/{exp_id}/runs"
    }


def test_ui_on_a_busy_port_exits_1_with_one_line_and_prints_no_url(tmp_path, capsys):
    from sourcetrace.cli import main

    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    ensure_experiment(store, "sw")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["ui", "--tracking-uri", store.uri, "--port", str(port)])
    out, err = capsys.readouterr()
    assert code == 1 and "http://" not in out
    assert err.count("\n") == 1 and err.startswith("sourcetrace ui: error: cannot serve on 127.0.0.1:")
    assert f":{port}: " in err and "--port" in err


def test_a_server_that_exits_before_serving_is_an_error():
    from sourcetrace.errors import ServeError
    from sourcetrace.ui import wait_listening

    proc = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(ServeError, match=r"127\.0\.0\.1:\d+ exited with status 3 before it served"):
        wait_listening(proc, "127.0.0.1", _free_port())
