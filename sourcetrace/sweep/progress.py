"""One compact line per trial evaluation on the driver's console: the quiet default of ``sourcetrace sweep``."""

from __future__ import annotations

import math

from ray.tune import Callback


class ProgressLines(Callback):
    """``trial <name>  epoch E/N  dev EER x.xx %  (best y.yy %)`` at each evaluation; one line when a trial ends."""

    def __init__(self, spec):
        self.spec = spec  # the sweep's TrialSpec: each trial's epoch budget
        self._best: dict[str, float] = {}

    def on_trial_result(self, iteration, trials, trial, result, **info):
        dev = result.get("dev_eer")
        if not isinstance(dev, (int, float)) or not math.isfinite(dev):
            return
        best = self._best[trial.trial_id] = min(dev, self._best.get(trial.trial_id, math.inf))
        epochs = self.spec.config(trial.config).train.epochs
        print(
            f"trial {trial}  epoch {int(result.get('epoch', 0))}/{epochs}  dev EER {dev:.2f} %  (best {best:.2f} %)",
            flush=True,
        )

    def on_trial_complete(self, iteration, trials, trial, **info):
        best = self._best.get(trial.trial_id)
        print(f"trial {trial} ended" + (f": best dev EER {best:.2f} %" if best is not None else ""), flush=True)

    def on_trial_error(self, iteration, trials, trial, **info):
        print(f"trial {trial} failed: see its error file in {trial.local_path}", flush=True)
