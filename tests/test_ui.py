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


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ui_stopped_by_a_signal_exits_130_or_143_and_stops_its_server(tmp_path, capsys, monkeypatch, sig, code):
    """The documented exit codes of every command (it exited 0 before), with one line; the server's process
    group is stopped all the same (a stand-in server here; ``test_ui_stopped_by_a_signal_for_real`` runs mlflow)."""
    import sourcetrace.commands.ui as command
    from sourcetrace.cli import main

    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    ensure_experiment(store, "sw")
    servers = []

    def start(store, host, port):
        servers.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True))
        return servers[-1]

    def listening(proc, host, port):
        os.kill(os.getpid(), sig)  # what Ctrl-C or a `kill` sends while the server starts
        time.sleep(30)  # the handler raises here
        raise AssertionError(f"{sig!r} did not interrupt sourcetrace ui")

    monkeypatch.setattr(command, "start_server", start)
    monkeypatch.setattr(command, "wait_listening", listening)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (`pytest &` ignores SIGINT)
    try:
        assert main(["ui", "--tracking-uri", store.uri, "--port", str(_free_port())]) == code
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # ui put back what it found
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
    assert len(servers) == 1 and servers[0].wait(10) is not None  # its group was stopped (not left for 120 s)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("sourcetrace ui: interrupted"), err


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_ui_stopped_by_a_signal_for_real(tmp_path, sig, code):
    """``sourcetrace ui`` with its real MLflow server, then Ctrl-C or SIGTERM: exit 130 / 143, nothing listens."""
    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    ensure_experiment(store, "sw")
    port = _free_port()
    cmd = [sys.executable, "-m", "sourcetrace.cli", "ui", "--tracking-uri", store.uri, "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    ui = subprocess.Popen(  # SIGINT as a terminal's foreground command gets it (`pytest &` would ignore it)
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    server = []
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not _listeners(port):
            assert ui.poll() is None, "sourcetrace ui exited"
            time.sleep(0.5)
        found = _listeners(port)
        assert found, "the MLflow server never listened"
        server = [psutil.Process(c.pid) for c in found if c.pid] + psutil.Process(ui.pid).children(recursive=True)
        ui.send_signal(sig)
        _, err = ui.communicate(timeout=60)
        assert ui.returncode == code, err[-2000:]
        assert "Traceback" not in err and "sourcetrace ui: interrupted" in err
        gone, alive = psutil.wait_procs(server, timeout=30)
        assert not alive, f"server processes outlived `sourcetrace ui`: {alive}"
        assert not _listeners(port)
    finally:
        for p in server:
            if p.is_running():
                p.kill()
        if ui.poll() is None:
            ui.kill()
