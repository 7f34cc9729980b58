"""``sourcetrace ui``: the MLflow UI on the sweeps' store, bound to 127.0.0.1 (the server: ``ui.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sourcetrace import interrupt
from sourcetrace.errors import ServeError, SourcetraceError
from sourcetrace.tracking.store import experiment_urls, resolve_store
from sourcetrace.ui import check_port, start_server, wait_listening


def run(args) -> int:
    """``sourcetrace ui``: the MLflow UI on the sweep store until Ctrl-C (exit 130) or SIGTERM (exit 143),
    then the server's whole process group is stopped."""
    if args.tracking_uri and args.tracking_uri.startswith(("http://", "https://")):
        raise SourcetraceError(f"{args.tracking_uri} is a server already: open it in a browser")
    store = resolve_store(args.tracking_uri)
    check_port(args.host, args.port)  # a busy port is one line and exit 1, before a server is started
    before = _signals_interrupt()
    try:
        proc = start_server(store, args.host, args.port)
        try:
            return _serve(proc, store, args.host, args.port)
        finally:
            _stop(proc)
    except KeyboardInterrupt:
        print("sourcetrace ui: interrupted; the MLflow server is stopped", file=sys.stderr, flush=True)
        return interrupt.exit_code()
    finally:
        if before is not None:  # None: a handler not set from Python, left as it is
            signal.signal(signal.SIGINT, before)


def _serve(proc: subprocess.Popen, store, host: str, port: int) -> int:
    """Wait for the server to listen, print its URLs, then wait for it (a ``ServeError`` if it dies)."""
    base = f"http://{host}:{port}"
    wait_listening(proc, host, port)  # the URL is printed only once it serves
    print(f"MLflow UI on {base} (store {store.uri}); Ctrl-C stops it", flush=True)
    for name, url in experiment_urls(store, base).items():
        print(f"  sweep {name}: {url}", flush=True)
    code = proc.wait()
    if code != 0:
        raise ServeError(f"the MLflow server on {host}:{port} stopped with status {code}")
    return 0


def _signals_interrupt():
    """SIGTERM (a ``killpg`` of this command's group, ``timeout``) and Ctrl-C both raise ``KeyboardInterrupt``
    and are recorded, so ``interrupt.exit_code()`` tells them apart (143, 130). An ignored SIGINT (a command
    started in the background) stays ignored. Returns the SIGINT handler to restore."""
    interrupt.term_as_interrupt()
    before = signal.getsignal(signal.SIGINT)
    if before is signal.default_int_handler:
        signal.signal(signal.SIGINT, _record_interrupt)
    return before


def _record_interrupt(sig, frame):
    interrupt.received.append(sig)
    raise KeyboardInterrupt


def _stop(proc: subprocess.Popen) -> None:
    """Stop the server's process group (SIGTERM, then SIGKILL after 10 s); a second Ctrl-C or SIGTERM meanwhile
    cannot cut this short and leave the server running."""
    if proc.poll() is not None:
        return
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    for sig in before:
        signal.signal(sig, signal.SIG_IGN)
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    except ProcessLookupError:  # the group is gone already
        pass
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
