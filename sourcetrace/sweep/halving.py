"""Synchronous successive halving: a Tune scheduler whose choices do not depend on which trial ran first.

Ray's ASHA decides each trial's fate the moment it reaches a rung, against the trials that happen to be
there already: with two trials at a time the first to arrive is always promoted, so which model a sweep
hands over depends on timing. Here every live trial runs to the rung (an evaluation epoch) and is paused
there - Tune keeps its checkpoint and frees its CPUs for the next trial - until all live trials have
reported; then the best ``ceil(n / reduction_factor)`` go on and the others stop. Per-trial training is
deterministic for a seed, so the whole sweep is. Rungs are ``grace, grace*rf, grace*rf^2 ...`` below
``max_t``; the last survivors train to their own ``train.epochs``.

``GroupedHalving`` halves within each group of trials (the values of a sweep's TUNE ``fuse`` key): each
group keeps its own best, so the sweep can fuse one trial per group.

After a driver crash Tune restores trials but not a scheduler's memory: a resumed trial's first
evaluation at or past a rung stands for that rung (ASHA forgets the same way), and the trials that had
already ended (finished, or stopped by a rung) are counted but hold no rung: they never report again.

>>> rungs(grace=4, reduction_factor=2, max_t=20)
[4, 8, 16]
>>> rungs(grace=5, reduction_factor=3, max_t=45)
[5, 15]
"""

from __future__ import annotations

import math

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler


def rungs(grace: int, reduction_factor: float, max_t: int) -> list[int]:
    """The milestones: ``grace * rf**k`` for every k that stays below ``max_t``."""
    out, t = [], grace
    while t < max_t:
        out.append(int(t))
        t *= reduction_factor
    return out


class SyncHalvingScheduler(FIFOScheduler):
    """Successive halving in lock step: decide a rung only when every live trial has reached it."""

    def __init__(
        self, time_attr: str, metric: str, mode: str, grace: int, reduction_factor: float, max_t: int, n_trials: int
    ):
        super().__init__()
        self._n_trials = n_trials  # Tune may add trials lazily: no rung is decided before all of them exist
        if reduction_factor <= 1 or grace < 1:
            raise ValueError(
                f"successive halving needs grace >= 1 and reduction_factor > 1: {grace}, {reduction_factor}"
            )
        self._time_attr, self._metric, self._sign = time_attr, metric, (1.0 if mode == "min" else -1.0)
        self._rf = reduction_factor
        self._rungs = rungs(grace, reduction_factor, max_t)
        self._added = 0
        self._live: list[Trial] = []  # in the order Tune added them: ties break the same way every time
        self._level: dict[Trial, int] = {}  # index of the next rung each live trial must reach
        self._scores: dict[int, dict[Trial, float]] = {i: {} for i in range(len(self._rungs))}
        self._decided: set[int] = set()  # rungs already halved: a later departure never halves them again
        self._resume: set[Trial] = set()  # paused winners to hand back to Tune
        self.stopped: list[tuple[str, int, float]] = []  # (trial id, rung, score) of each trial halving stopped

    def set_search_properties(self, metric, mode, **spec) -> bool:  # Tune passes TuneConfig's metric/mode
        return True

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._added += 1
        if trial.status == Trial.TERMINATED:  # restored after a driver crash, ended (finished or stopped by a
            return  # rung): it will never report again, so no rung may wait for it
        self._live.append(trial)
        self._level[trial] = 0

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        level = self._level.get(trial, len(self._rungs))
        if level >= len(self._rungs) or self._metric not in result:
            return TrialScheduler.CONTINUE
        if result.get(self._time_attr, 0) < self._rungs[level]:
            return TrialScheduler.CONTINUE
        self._scores[level][trial] = self._sign * float(result[self._metric])
        self._level[trial] = level + 1
        return self._decide(tune_controller, level, current=trial)

    def _decide(self, tune_controller, level: int, current: Trial | None) -> str:
        """PAUSE ``current`` while others still have to reach rung ``level``; else halve and say its fate."""
        scores = self._scores[level]
        waiting = [t for t in self._live if self._level[t] <= level]
        if waiting or self._added < self._n_trials:
            return TrialScheduler.PAUSE
        contenders = [t for t in self._live if t in scores]
        self._decided.add(level)
        keep = math.ceil(len(contenders) / self._rf)
        ranked = sorted(contenders, key=lambda t: (scores[t], contenders.index(t)))
        action = TrialScheduler.CONTINUE
        for t in ranked[keep:]:
            self.stopped.append((t.trial_id, self._rungs[level], self._sign * scores[t]))
            self._forget(t)
            if t is current:
                action = TrialScheduler.STOP
            elif t.status == Trial.PAUSED or t.is_saving:
                tune_controller.stop_trial(t)
                # Tune 2.60 re-snapshots only trials with an actor: without this the experiment state (what
                # reports and --resume read) would keep a stopped loser PAUSED, i.e. unfinished
                mark = getattr(tune_controller, "_mark_trial_to_checkpoint", None)
                if mark is not None:
                    mark(t)
        for t in ranked[:keep]:
            if t is not current and (t.status == Trial.PAUSED or t.is_saving):
                self._resume.add(t)
        return action

    def _forget(self, trial: Trial) -> None:
        if trial in self._live:
            self._live.remove(trial)
            self._level.pop(trial, None)
            self._resume.discard(trial)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        """A trial that ended on its own (finished, failed, stopped) no longer holds a rung back."""
        if trial not in self._live:
            return
        self._forget(trial)
        if self._added < self._n_trials:
            return
        for level in range(len(self._rungs)):  # a rung that only this trial held back is decided now
            reached = any(t in self._scores[level] for t in self._live)
            if level not in self._decided and reached and not any(self._level[t] <= level for t in self._live):
                self._decide(tune_controller, level, current=None)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self.on_trial_remove(tune_controller, trial)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self.on_trial_remove(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PENDING:
                return trial
        for trial in tune_controller.get_trials():
            if trial.status == Trial.PAUSED and trial in self._resume:
                self._resume.discard(trial)
                return trial
        return None

    def debug_string(self) -> str:
        alive = ", ".join(f"{t.trial_id}@{self._rungs[min(self._level[t], len(self._rungs) - 1)]}" for t in self._live)
        return f"Synchronous successive halving, rungs {self._rungs}, factor {self._rf}: live {alive or 'none'}"


class GroupedHalving(FIFOScheduler):
    """One ``SyncHalvingScheduler`` per group of trials: a rung of one group never waits for another."""

    def __init__(self, key: str, sizes: dict[str, int], **halving):
        super().__init__()
        self._key = key  # the trial config key whose value (spec.group_of) names a trial's group
        self._subs = {g: SyncHalvingScheduler(n_trials=n, **halving) for g, n in sizes.items()}

    @property
    def stopped(self) -> list[tuple[str, int, float]]:
        return [s for sub in self._subs.values() for s in sub.stopped]

    def _sub(self, trial: Trial) -> SyncHalvingScheduler:
        from sourcetrace.sweep.spec import group_of

        return self._subs[group_of(self._key, trial.config)]

    def set_search_properties(self, metric, mode, **spec) -> bool:
        return True

    def on_trial_add(self, tune_controller, trial: Trial) -> None:
        self._sub(trial).on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial: Trial, result: dict) -> str:
        return self._sub(trial).on_trial_result(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial: Trial) -> None:
        self._sub(trial).on_trial_remove(tune_controller, trial)

    def on_trial_complete(self, tune_controller, trial: Trial, result: dict) -> None:
        self._sub(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_error(self, tune_controller, trial: Trial) -> None:
        self._sub(trial).on_trial_error(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller):
        for sub in self._subs.values():  # a pending trial first (any sub finds it), then a resumed winner
            trial = sub.choose_trial_to_run(tune_controller)
            if trial is not None:
                return trial
        return None

    def debug_string(self) -> str:
        return "; ".join(f"{g or 'all'}: {sub.debug_string()}" for g, sub in self._subs.items())
