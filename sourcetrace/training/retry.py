"""Tune's retry policy: crashes are retried from the last checkpoint, a ``SourcetraceError`` never is.

Bad data, a bad config or a diverged run fail the same way on every retry. The trial (``run_trial``)
reports one last result flagged ``NO_RETRY`` before re-raising such an error; ``NoRetryCallback`` sees
that result in the driver, before the error arrives, and sets the trial's ``max_failures`` to 0, so
Tune ends it as failed at once. A killed worker or a lost node still gets ``FailureConfig`` retries.
"""

from __future__ import annotations

from ray.tune import Callback

from sourcetrace.training.faults import NO_RETRY


class NoRetryCallback(Callback):
    """Driver side: a trial whose result carries ``NO_RETRY`` gets ``max_failures = 0``, so its error ends it."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(NO_RETRY):
            trial.max_failures = 0
