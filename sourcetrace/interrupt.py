"""SIGTERM handled like Ctrl-C: what Slurm, Kubernetes and ``timeout`` send must not abort a run midway.

Every command: SIGTERM raises ``KeyboardInterrupt`` in the main thread, so ``finally`` blocks run and the
CLI exits 143 (130 for SIGINT) with one line. A sweep: while Tune runs, SIGTERM triggers Tune's own
graceful stop (the handler Tune installs for SIGUSR1 and SIGINT): trials end, the experiment is
checkpointed, MLflow runs are closed as KILLED, the report is written and ``--resume`` continues it.
"""

from __future__ import annotations

import contextlib
import signal
from types import SimpleNamespace

EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
received: list[int] = []  # signals this process was interrupted by, newest last


def _raise_interrupt(sig, frame):
    received.append(sig)
    raise KeyboardInterrupt


def term_as_interrupt() -> None:
    """SIGTERM raises ``KeyboardInterrupt`` in the main thread, as Ctrl-C does."""
    signal.signal(signal.SIGTERM, _raise_interrupt)


def exit_code() -> int:
    """130 after Ctrl-C, 143 after SIGTERM."""
    return EXIT_CODES.get(received[-1] if received else signal.SIGINT, 130)


@contextlib.contextmanager
def sigterm_stops_tune():
    """Around ``Tuner.fit``: SIGTERM asks Tune to stop gracefully; yields a state whose ``signal`` tells if one came.

    Install it after ``ray.init`` (Ray's core worker installs its own SIGTERM handler, which aborts). After
    the block, a SIGTERM is recorded but lets the report finish.
    """
    state = SimpleNamespace(signal=None, tune=True)
    before = signal.getsignal(signal.SIGUSR1)

    def on_term(sig, frame):
        state.signal = sig
        received.append(sig)
        if not state.tune:
            return
        handler = signal.getsignal(signal.SIGUSR1)
        if callable(handler) and handler is not before:
            handler(signal.SIGUSR1, frame)  # Tune's stop: checkpoint the experiment, end the trials
        else:
            raise KeyboardInterrupt  # Tune is not running yet

    signal.signal(signal.SIGTERM, on_term)
    try:
        yield state
    finally:
        state.tune = False
