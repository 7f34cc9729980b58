"""``sourcetrace ui``: the MLflow UI on the sweeps' store, bound to 127.0.0.1 (the server: ``ui.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from sourcetrace.errors import ServeError, SourcetraceError
from sourcetrace.tracking.store import experiment_urls, resolve_store
from sourcetrace.ui import check_port, start_server, wait_listening


def run(args) -> int:
    """``sourcetrace ui``: the MLflow UI on the sweep store until Ctrl-C, then the whole group is stopped."""
    if args.tracking_uri and args.tracking_uri.startswith(("http://", "https://")):
        raise SourcetraceError(f"{args.tracking_uri} is a server already: open it in a browser")
    store = resolve_store(args.tracking_uri)
    check_port(args.host, args.port)  # a busy port is one line and exit 1, before a server is started
    proc = start_server(store, args.host, args.port)
    base = f"http://{args.host}:{args.port}"
    # SIGTERM (e.g. a killpg of this command's group) must still stop the server's own group below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        wait_listening(proc, args.host, args.port)  # the URL is printed only once it serves
        print(f"MLflow UI on {base} (store {store.uri}); Ctrl-C stops it", flush=True)
        for name, url in experiment_urls(store, base).items():
            print(f"  sweep {name}: {url}", flush=True)
        code = proc.wait()
        if code != 0:
            raise ServeError(f"the MLflow server on {args.host}:{args.port} stopped with status {code}")
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
