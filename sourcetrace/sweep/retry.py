"""Tune's retry policy: a lost worker is retried generously, a code error ``max_failures`` times, a
``SourcetraceError`` never; every retry resumes from the trial's newest checkpoint.

Tune's ``FailureConfig`` has one budget for every failure. Ray 2.60 already leaves out of it an actor whose
node the autoscaler drained for preemption (``Trial._handle_ray_actor_error`` counts only errors whose
``preempted`` is false), but a spot node that vanishes without a drain, an OOM kill or a SIGKILLed worker
(an ``ActorDiedError``) counts like a bug. Tune cannot tell those apart; the trial can: ``run_trial`` reports
one last result flagged ``NO_RETRY`` (a ``SourcetraceError``: bad data, bad config, divergence) or
``CODE_ERROR`` (any other exception of the code) before re-raising, and a failure without a flag is a lost
worker. So Tune's budget is ``max_failures + lost_worker_retries`` (the sweep's TUNE), and the callbacks below
see a flagged result in the driver before its error arrives: they set the trial's ``max_failures`` to 0 when
its error must end it.
"""

from __future__ import annotations

from ray import tune
from ray.tune import Callback

from sourcetrace.sweep.spec import TuneSettings
from sourcetrace.training.faults import CODE_ERROR, NO_RETRY


def failure_config(settings: TuneSettings) -> tune.FailureConfig:
    """Tune's budget for all failures of a trial: code errors plus lost workers (-1 in either: no limit)."""
    code, lost = settings.max_failures, settings.lost_worker_retries
    return tune.FailureConfig(max_failures=-1 if -1 in (code, lost) else code + lost)


class NoRetryCallback(Callback):
    """Driver side: a trial whose result carries ``NO_RETRY`` gets ``max_failures = 0``, so its error ends it."""

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get(NO_RETRY):
            trial.max_failures = 0


class CodeErrorLimit(Callback):
    """Driver side: a trial's code errors (results flagged ``CODE_ERROR``) end it once there are more than
    ``max_failures`` (-1: never); lost workers use the rest of Tune's budget. The counts are kept in the
    experiment's snapshot, so a resumed sweep goes on counting."""

    def __init__(self, max_failures: int):
        self.max_failures = max_failures
        self.code_errors: dict[str, int] = {}  # trial id -> code errors so far

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if not result.get(CODE_ERROR):
            return
        count = self.code_errors[trial.trial_id] = self.code_errors.get(trial.trial_id, 0) + 1
        if 0 <= self.max_failures < count:
            trial.max_failures = 0

    def get_state(self) -> dict:
        return {"code_errors": dict(self.code_errors)}

    def set_state(self, state: dict) -> None:
        self.code_errors = dict(state.get("code_errors", {}))
