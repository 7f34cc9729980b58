"""Synchronous successive halving on a real local Ray: lock-step rungs, pauses through checkpoints, no timing luck."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest

from sourcetrace.sweep.halving import SyncHalvingScheduler, rungs


def _trainable(config):
    """Reports ``quality + 1/epoch`` each epoch with a checkpoint; resumes from Tune's checkpoint when paused."""
    from ray import tune

    start = 0
    ckpt = tune.get_checkpoint()
    if ckpt is not None:
        with ckpt.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    for epoch in range(start + 1, config["epochs"] + 1):
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            metrics = {"epoch": float(epoch), "dev_eer": config["quality"] + 1.0 / epoch, "resumed_at": start}
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def test_rungs_stay_below_max_t():
    assert rungs(2, 2, 6) == [2, 4]
    assert rungs(4, 2, 16) == [4, 8]
    assert rungs(7, 2, 7) == []


def test_rejects_factor_one():
    with pytest.raises(ValueError, match="reduction_factor"):
        SyncHalvingScheduler("epoch", "dev_eer", "min", 2, 1, 6, 4)


@pytest.mark.slow
def test_the_worst_half_stops_at_each_rung_whatever_ran_first(tmp_path):
    """The first trial (worst) runs alone first: ASHA would promote it; halving stops it at rung 2."""
    import ray
    from ray import cloudpickle, tune

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    qualities = [0.4, 0.1, 0.3, 0.2]  # trial 0 is the worst and starts first
    scheduler = SyncHalvingScheduler("epoch", "dev_eer", "min", grace=2, reduction_factor=2, max_t=6, n_trials=4)
    from sourcetrace.localray import loopback_only

    loopback_only()
    ray.init(num_cpus=1, include_dashboard=False, logging_level="WARNING")
    try:
        grid = tune.Tuner(
            tune.with_resources(_trainable, {"cpu": 1}),
            param_space={"quality": tune.grid_search(qualities), "epochs": 6},
            tune_config=tune.TuneConfig(metric="dev_eer", mode="min", scheduler=scheduler),
            run_config=tune.RunConfig(storage_path=str(tmp_path), name="halving", verbose=0),
        ).fit()
    finally:
        ray.shutdown()
    epochs = {r.config["quality"]: int(r.metrics["epoch"]) for r in grid}
    assert epochs == {0.4: 2, 0.1: 6, 0.3: 2, 0.2: 4}
    assert not grid.errors
    resumed = {r.config["quality"]: r.metrics["resumed_at"] for r in grid}
    # one CPU: 0.2 decides rung 2 and runs on to rung 4, where it waits; 0.1 resumes from its rung-2 checkpoint
    assert resumed == {0.4: 0, 0.1: 2, 0.3: 0, 0.2: 0}
    assert sorted((rung, round(score, 3)) for _, rung, score in scheduler.stopped) == [(2, 0.8), (2, 0.9), (4, 0.45)]


@pytest.mark.slow
def test_a_sweep_of_real_trials_halves_in_lock_step(tiny_corpus, tmp_path):
    """`sourcetrace sweep` with TUNE scheduler 'halving': real trainers paused on their checkpoints and resumed."""
    import pandas as pd
    from test_sweep_e2e import GRID, run_sweep, sweep_cmd

    (tmp_path / "grid.py").write_text(GRID.replace("SCHED", "halving"))  # 4 trials, 4 epochs: rungs at 1 and 2
    proc, _ = run_sweep(sweep_cmd(tmp_path / "grid.py", tiny_corpus, tmp_path), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(tmp_path / "ray" / "grid" / "report" / "trials.parquet").drop_duplicates("trial_id")
    assert sorted(trials["epoch_reached"]) == [1, 1, 2, 4]
    assert sorted(trials["status"]) == ["early_stopped"] * 3 + ["finished"]
    for _, t in trials.iterrows():  # a resumed trial logs each epoch once: the pause lost and repeated nothing
        epochs = [
            json.loads(line)["epoch"]
            for line in (tmp_path / "ray" / "grid" / t["trial_name"] / "result.json").read_text().splitlines()
        ]
        assert epochs == [float(e) for e in range(1, t["epoch_reached"] + 1)], t["trial_name"]


class _Trial:
    """The three attributes the scheduler reads of a Tune trial (its decisions need no Ray)."""

    def __init__(self, trial_id):
        self.trial_id, self.status, self.is_saving = trial_id, "RUNNING", False


class _Controller:
    def __init__(self):
        self.stopped = []

    def stop_trial(self, trial):
        trial.status = "TERMINATED"
        self.stopped.append(trial.trial_id)


def test_a_winner_that_fails_later_does_not_halve_its_rung_again():
    """Eight trials, rung 1 keeps four; one of them fails before rung 2: the other three go on, none is stopped."""
    from ray.tune.schedulers import TrialScheduler

    sched, ctl = SyncHalvingScheduler("epoch", "dev_eer", "min", 1, 2, 4, 8), _Controller()
    trials = [_Trial(f"t{i}") for i in range(8)]
    for t in trials:
        sched.on_trial_add(ctl, t)
    actions = []
    for i, t in enumerate(trials):  # scores 0.0 .. 0.7: t0-t3 are the better half
        actions.append(sched.on_trial_result(ctl, t, {"epoch": 1.0, "dev_eer": i / 10}))
        if actions[-1] == TrialScheduler.PAUSE:
            t.status = "PAUSED"
    assert actions[:7] == [TrialScheduler.PAUSE] * 7 and actions[7] == TrialScheduler.STOP
    assert sorted(ctl.stopped) == ["t4", "t5", "t6"]
    sched.on_trial_error(ctl, trials[0])  # a rung-1 winner fails before rung 2
    assert sorted(ctl.stopped) == ["t4", "t5", "t6"] and sorted(x for x, _, _ in sched.stopped) == [
        "t4",
        "t5",
        "t6",
        "t7",
    ]
