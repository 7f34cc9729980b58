"""Spot/preemptible nodes: resume-only checkpoints that never evict the best ones, and retries that tell a
lost worker from a code error. Ray's own checkpoint manager and Trial objects, real local Ray for retries."""

import json
import math
import os
import signal
import sys
from pathlib import Path

import pytest
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult
from ray.tune.experiment import Trial

from sourcetrace.errors import SourcetraceError
from sourcetrace.sweep.retry import CodeErrorLimit, NoRetryCallback, failure_config
from sourcetrace.sweep.spec import TuneSettings, load_sweep
from sourcetrace.sweep.trainable import CHECKPOINT_SCORE, checkpoint_score
from sourcetrace.training.faults import failure_result

# (epoch, dev EER at an evaluation, or None for a resume-only checkpoint): the best is epoch 3
EPOCHS = [(2, None), (3, 10.0), (4, None), (5, None), (6, 20.0), (7, None), (8, 15.0), (9, None)]


def _register(manager, folder: Path, epoch: int, metrics: dict) -> _TrainingResult:
    path = folder / f"checkpoint_{epoch}"
    path.mkdir()
    result = _TrainingResult(tune.Checkpoint.from_directory(str(path)), dict(metrics, epoch=epoch))
    manager.register_checkpoint(result)
    return result


def test_checkpoint_score_is_the_metric_at_evaluations_and_the_worst_elsewhere():
    assert checkpoint_score({"dev_eer": 7.5, "epoch": 3.0}, True, "dev_eer", "min") == 7.5
    assert checkpoint_score({"dev_eer": 7.5}, False, "dev_eer", "min") == math.inf  # never a resume point's
    assert checkpoint_score({"epoch": 4.0}, False, "dev_eer", "min") == math.inf
    assert checkpoint_score({"dev_openset_auroc": 0.8}, True, "dev_openset_auroc", "max") == 0.8
    assert checkpoint_score({}, False, "dev_openset_auroc", "max") == -math.inf


@pytest.mark.parametrize("keep", [1, 2])
def test_resume_checkpoints_never_evict_the_best_and_the_newest_always_survives(tmp_path, keep):
    """Ray's checkpoint manager as the sweep configures it: after every checkpoint, the ``keep`` best
    evaluations and the newest checkpoint are on disk, and at most ``keep + 1`` checkpoints."""
    config = tune.CheckpointConfig(keep, checkpoint_score_attribute=CHECKPOINT_SCORE, checkpoint_score_order="min")
    manager = _CheckpointManager(config)
    evaluations: list[tuple[float, int]] = []
    for epoch, dev in EPOCHS:
        metrics = {"dev_eer": dev} if dev is not None else {}
        metrics[CHECKPOINT_SCORE] = checkpoint_score(metrics, dev is not None, "dev_eer", "min")
        _register(manager, tmp_path, epoch, metrics)
        evaluations += [(dev, epoch)] if dev is not None else []
        best = {e for _, e in sorted(evaluations)[:keep]}
        on_disk = {int(p.name.split("_")[1]) for p in tmp_path.iterdir()}
        assert best | {epoch} <= on_disk and len(on_disk) <= keep + 1, (epoch, on_disk)
        spare = on_disk - best - {epoch}  # a free slot of the `keep` may hold a resume point, never an evaluation
        assert not spare or (len(evaluations) < keep and not spare & {e for _, e in evaluations}), (epoch, on_disk)
        assert manager.latest_checkpoint_result.metrics["epoch"] == epoch  # what a retry resumes from
        if evaluations:
            assert manager.best_checkpoint_result.metrics["epoch"] == min(evaluations)[1]


def test_without_the_score_a_resume_checkpoint_would_evict_the_best(tmp_path):
    """Why resume checkpoints carry a score: Ray ranks one lacking the attribute above every scored one."""
    config = tune.CheckpointConfig(num_to_keep=1, checkpoint_score_attribute="dev_eer", checkpoint_score_order="min")
    manager = _CheckpointManager(config)
    for epoch, dev in EPOCHS[:5]:  # the best (epoch 3), then resume points at 4 and 5
        _register(manager, tmp_path, epoch, {"dev_eer": dev} if dev is not None else {})
    assert not (tmp_path / "checkpoint_3").exists()  # the best evaluation is gone
    assert "dev_eer" not in manager.best_checkpoint_result.metrics


def test_code_errors_end_a_trial_after_max_failures_while_lost_workers_keep_their_budget():
    limit, no_retry = CodeErrorLimit(max_failures=1), NoRetryCallback()
    budget = failure_config(TuneSettings(max_failures=1, lost_worker_retries=10)).max_failures
    trial = Trial("trainable", stub=True, max_failures=budget)
    assert trial.max_failures == 11
    for cb in (limit, no_retry):
        cb.on_trial_result(0, [], trial, {"epoch": 3.0, "dev_eer": 5.0})  # an epoch: no change
    assert trial.max_failures == 11
    limit.on_trial_result(0, [], trial, failure_result(KeyError("bug"), 3))  # first code error: retried
    assert trial.max_failures == 11
    restored = CodeErrorLimit(max_failures=1)  # the driver restarted: the count comes from the snapshot
    restored.set_state(limit.get_state())
    restored.on_trial_result(0, [], trial, failure_result(KeyError("bug"), 4))  # second one ends it
    assert trial.max_failures == 0

    other = Trial("trainable", stub=True, max_failures=11)
    no_retry.on_trial_result(0, [], other, failure_result(SourcetraceError("bad data"), 0))
    assert other.max_failures == 0
    assert failure_config(TuneSettings(max_failures=2, lost_worker_retries=-1)).max_failures == -1
    assert (
        failure_config(TuneSettings.from_dict({"max_failures": 2}, recorded=True)).max_failures == 2
    )  # a sweep recorded before the key existed


@pytest.mark.parametrize("bad", ["-2", "1.5", "'3'"])
def test_retry_budgets_must_be_whole_numbers(tmp_path, bad):
    sweep = tmp_path / "s.py"
    sweep.write_text(f"SPACE = {{'train.seed': 0}}\nTUNE = {{'lost_worker_retries': {bad}}}\n")
    with pytest.raises(SourcetraceError, match=r"TUNE .*lost_worker_retries.* must be whole numbers"):
        load_sweep(sweep)


def _attempts(config) -> int:
    """How many times this trial has started (a file per start in ``config['marks']``)."""
    marks = Path(config["marks"]) / config["kind"]
    marks.mkdir(exist_ok=True)
    n = len(list(marks.iterdir())) + 1
    (marks / str(n)).touch()
    return n


def _faulty(config):
    """A code error every time, or the worker SIGKILLed ``kills`` times (what a lost spot node does to it)."""
    attempt = _attempts(config)
    try:
        if config["kind"] == "bug":
            raise RuntimeError(f"a bug, attempt {attempt}")
        if attempt <= config["kills"]:
            os.kill(os.getpid(), signal.SIGKILL)
        tune.report({"epoch": 1.0, "attempt": float(attempt)})
    except Exception as err:  # as run_trial flags its errors
        tune.report(failure_result(err, 0))
        raise


@pytest.mark.slow
def test_a_killed_worker_is_retried_beyond_max_failures_and_a_code_error_is_not(tmp_path):
    import ray
    from ray import cloudpickle

    from sourcetrace.localray import loopback_only

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this test module
    settings = TuneSettings(max_failures=1, lost_worker_retries=3)
    loopback_only()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        grid = tune.Tuner(
            tune.with_resources(_faulty, {"cpu": 1}),
            param_space={"kind": tune.grid_search(["bug", "lost"]), "kills": 3, "marks": str(tmp_path)},
            run_config=tune.RunConfig(
                name="retries",
                storage_path=str(tmp_path / "ray"),
                callbacks=[NoRetryCallback(), CodeErrorLimit(settings.max_failures)],
                failure_config=failure_config(settings),
                verbose=0,
            ),
        ).fit()
    finally:
        ray.shutdown()
    results = {r.config["kind"]: r for r in grid}
    assert results["bug"].error is not None and "a bug, attempt 2" in str(results["bug"].error)
    assert len(list((tmp_path / "bug").iterdir())) == 2  # the first try and max_failures=1 retry
    assert results["lost"].error is None and results["lost"].metrics["attempt"] == 4.0  # 3 kills > max_failures
    snap = max((tmp_path / "ray" / "retries").glob("experiment_state-*.json"), key=lambda p: p.name)
    failures = {
        json.loads(s)["config"]["kind"]: json.loads(m)["num_failures"]
        for s, m in json.loads(snap.read_text())["trial_data"]
    }
    assert failures == {"bug": 2, "lost": 3}  # Tune counted the kills: its budget alone (1) would have ended it


SPOT = {"train.epochs": 9, "train.eval_every": 3, "train.checkpoint_every": 2, "train.batch_size": 16}
SPOT["train.steps_per_epoch"] = 15  # epochs of ~1 s: long enough to aim a kill between two of them


@pytest.mark.slow
def test_a_sweep_trial_sigkilled_between_evaluations_resumes_from_its_resume_checkpoint(tiny_corpus, tmp_path):
    """`sourcetrace sweep` on local Ray; the trial's worker is SIGKILLed after epoch 5 or 7 (evaluations at 3, 6,
    9, resume points every 2): it resumes from the checkpoint one epoch before though max_failures is 0,
    repeats that epoch exactly, and Tune's one kept checkpoint besides the newest is the best evaluation's."""
    import subprocess
    import time

    from test_sweep_e2e import QUICK, env, sweep_cmd

    (tmp_path / "spot.py").write_text(
        f"BASE = {dict(QUICK, **SPOT)!r}\nSPACE = {{'train.seed': 0}}\n"
        "TUNE = {'scheduler': 'fifo', 'max_failures': 0, 'keep_checkpoints': 1}\nRESOURCES = {'cpu': 1}\n"
    )
    exp_dir = tmp_path / "ray" / "spot"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen(
            sweep_cmd(tmp_path / "spot.py", tiny_corpus, tmp_path), cwd=tmp_path, env=env(), stdout=log, stderr=log
        )
        killed = None
        try:
            while killed is None and driver.poll() is None:
                rows = [json.loads(line) for p in exp_dir.glob("*/result.json") for line in p.read_text().splitlines()]
                if rows and rows[-1]["epoch"] in (5, 7):  # between evaluations, one epoch past a resume point
                    os.kill(rows[-1]["pid"], signal.SIGKILL)
                    killed = rows[-1]
                assert not rows or rows[-1]["epoch"] < 8, "epochs 5 and 7 both ended unseen: the test could not aim"
                time.sleep(0.05)
            code = driver.wait(600)
        finally:
            driver.kill()
    out = (tmp_path / "driver.log").read_text()
    assert killed is not None and code == 0, out[-3000:]
    (trial_dir,) = [p.parent for p in exp_dir.glob("*/result.json")]
    rows = [json.loads(line) for line in (trial_dir / "result.json").read_text().splitlines()]
    k = int(killed["epoch"])  # 5 (resumed from the epoch-4 checkpoint) or 7 (from epoch 6), whichever it caught
    assert [r["epoch"] for r in rows] == [*range(1, k + 1), k, *range(k + 1, 10)]  # lost 1 epoch (<= every 2)
    assert rows[k]["iterations_since_restore"] == 1 and rows[k]["train_loss"] == rows[k - 1]["train_loss"]
    snap = max(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.name)
    ((_, meta),) = json.loads(snap.read_text())["trial_data"]
    assert json.loads(meta)["num_failures"] == 1  # retried from the lost-worker budget
    evals = [r for r in rows if "dev_eer" in r]
    best = [r for r in evals if r["dev_eer"] == min(e["dev_eer"] for e in evals)]  # ties: Tune keeps the later
    kept = {p.name for p in trial_dir.glob("checkpoint_*")} - {rows[-1]["checkpoint_dir_name"]}  # - the newest
    assert len(kept) <= 1 and (kept or best[-1] is rows[-1]), kept
    assert not kept or kept <= {r["checkpoint_dir_name"] for r in best}, (kept, [r["epoch"] for r in best])
    for name in kept:
        assert json.loads((trial_dir / name / "meta.json").read_text())["epoch"] in {r["epoch"] for r in best}
    import pandas as pd

    trials = pd.read_parquet(exp_dir / "report" / "trials.parquet").dropna(subset=["checkpoint"])
    assert trials.loc[trials["dev_eer"].idxmin(), "epoch"] in {r["epoch"] for r in best}  # what the bundle exports
