"""``sourcetrace ui``: ``mlflow server`` on the sweep store, bound to 127.0.0.1, dying with its parent.

The server runs in its own process group (it spawns workers), stopped as a group on Ctrl-C or SIGTERM.
On Linux it also gets ``PR_SET_PDEATHSIG``: if ``sourcetrace ui`` is SIGKILLed, the kernel sends the
server SIGTERM, so no orphan keeps the port (mlflow then stops its own workers).
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from sourcetrace.errors import ServeError, SourcetraceError
from sourcetrace.tracking.store import Store

PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(sig: int = signal.SIGTERM) -> None:
    """In a child before ``exec`` (a ``preexec_fn``): the kernel sends ``sig`` when the parent dies (Linux)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def _preexec(parent: int) -> None:
    os.setsid()  # its own process group, as start_new_session=True would do
    die_with_parent(signal.SIGTERM)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def server_command(store: Store, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
        "--uvicorn-opts",
        "--no-access-log --log-level warning",  # no line per request
    ]
    if store.artifact_location:
        cmd += ["--artifacts-destination", store.artifact_location]
    return cmd


def check_port(host: str, port: int) -> None:
    """A ``ServeError`` naming ``host:port`` when nothing could listen there (busy, or not this machine's)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no conflict
            sock.bind((host, port))
    except OSError as err:
        why = err.strerror or str(err)
        raise ServeError(f"cannot serve on {host}:{port}: {why}; pass --port with a free port") from None


def wait_listening(proc: subprocess.Popen, host: str, port: int, poll_s: float = 0.2) -> None:
    """Return once ``proc`` accepts connections on ``host:port``; a ``ServeError`` if it exits first."""
    while True:
        code = proc.poll()
        if code is not None:
            raise ServeError(f"the MLflow server on {host}:{port} exited with status {code} before it served")
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            time.sleep(poll_s)


def start_server(store: Store, host: str = "127.0.0.1", port: int = 5000) -> subprocess.Popen:
    """``mlflow server`` on ``store`` in its own process group (stop it with ``os.killpg``); dies with us."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    if store.uri.startswith("sqlite:///") and not Path(store.uri[len("sqlite:///") :]).is_file():
        raise SourcetraceError(f"no MLflow store at {store.uri}: run a sweep first or pass --tracking-uri")
    parent = os.getpid()
    return subprocess.Popen(server_command(store, host, port), env=env, preexec_fn=lambda: _preexec(parent))
