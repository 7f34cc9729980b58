"""The MLflow callback and experiment ownership under store faults (a real sqlite store made immutable)."""

import json
import subprocess
from contextlib import contextmanager

import pytest
from test_tracking import SPEC, FakeTrial, feed, result, runs

from sourcetrace.errors import SourcetraceError
from sourcetrace.sweep.callback import MlflowTrialCallback
from sourcetrace.sweep.status import error_reason
from sourcetrace.tracking.store import ensure_experiment, resolve_store

pytestmark = pytest.mark.skipif(subprocess.run(["which", "chattr"]).returncode != 0, reason="needs chattr")


@contextmanager
def immutable(folder):
    """Root ignores permission bits; the immutable attribute stops root too."""
    subprocess.run(["chattr", "-R", "+i", str(folder)], check=True)
    try:
        yield
    finally:
        subprocess.run(["chattr", "-R", "-i", str(folder)], check=True)


@pytest.fixture
def store(tmp_path):
    return resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def test_unwritable_store_mid_sweep_is_one_line_and_resume_closes_the_runs(tmp_path, store, capsys):
    cb = MlflowTrialCallback(store, "sw", SPEC)
    trial = FakeTrial("t1", tmp_path)
    trial.path = str(tmp_path / "t1")  # the trial's folder in the sweep folder, where Tune keeps result.json
    trial.local_path = str(tmp_path / "staging")  # the driver's staging copy: a new, empty folder after a restore
    (tmp_path / "t1").mkdir()
    feed(cb, trial, [1], done=False)
    with immutable(tmp_path / "mlruns"):
        for e in (2, 3, 4):  # the store fails: training must go on
            trial.last_result = result(e, evaluated=e % 2 == 0)
            cb.on_trial_result(0, [], trial, trial.last_result)
        cb.on_trial_complete(0, [], trial)
        trial.status = "TERMINATED"
        cb.on_experiment_end([trial])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mlflow.db cannot be written" in err[0] and "--resume" in err[0]
    _, (run,) = runs(store)
    assert run.info.status == "RUNNING"  # nothing could close it while the store was failing

    # --resume: Tune restores the callback and ends the experiment again; the finished trial is closed
    (tmp_path / "t1" / "result.json").write_text(
        "".join(json.dumps(result(e, evaluated=e % 2 == 0)) + "\n" for e in (1, 2, 3, 4))
    )
    resumed = MlflowTrialCallback(store, "sw", SPEC)
    resumed.set_state(cb.get_state())
    resumed.on_experiment_end([trial])
    client, (run,) = runs(store)
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/train_loss")] == [1, 2, 3, 4]


def test_a_resumed_trial_gets_the_epochs_its_run_missed_before_it_goes_on(tmp_path, store):
    cb = MlflowTrialCallback(store, "sw", SPEC)
    trial = FakeTrial("t1", tmp_path)
    trial.path = str(tmp_path / "t1")
    (tmp_path / "t1").mkdir()
    feed(cb, trial, [1], done=False)
    with immutable(tmp_path / "mlruns"):
        for e in (2, 3):
            cb.on_trial_result(0, [], trial, result(e, evaluated=e % 2 == 0))
    (tmp_path / "t1" / "result.json").write_text(
        "".join(json.dumps(result(e, evaluated=e % 2 == 0)) + "\n" for e in (1, 2, 3))
    )
    resumed = MlflowTrialCallback(store, "sw", SPEC)  # --resume: the driver restores the trial (checkpoint: 2)
    resumed.set_state(cb.get_state())
    resumed.on_trial_restore(0, [], trial)
    for e in (3, 4):  # epoch 3 again, from the checkpoint of epoch 2: logged already
        resumed.on_trial_result(0, [], trial, result(e, evaluated=e % 2 == 0))
    client, (run,) = runs(store)
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/train_loss")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/dev_eer")] == [2, 4]
    assert run.info.status == "RUNNING" and run.data.metrics["best_dev_eer"] == 26.0


def test_store_under_a_regular_file_is_one_clear_error(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    bad = resolve_store(f"sqlite:///{tmp_path / 'file' / 'sub' / 'mlflow.db'}")
    with pytest.raises(SourcetraceError, match=r"MLflow store sqlite:///.*file/sub/mlflow.db cannot be used") as err:
        ensure_experiment(bad, "sw")
    assert "\n" not in str(err.value)


def test_same_sweep_name_in_another_storage_is_refused(tmp_path, store):
    ensure_experiment(store, "sw", str(tmp_path / "ray_a" / "sw"))
    ensure_experiment(store, "sw", str(tmp_path / "ray_a" / "sw"))  # the same sweep again (e.g. --resume)
    with pytest.raises(SourcetraceError, match=r"holds the sweep at .*ray_a/sw, not .*ray_b/sw: pass --name"):
        ensure_experiment(store, "sw", str(tmp_path / "ray_b" / "sw"))


def test_error_reason_keeps_a_multi_line_sourcetrace_error_whole(tmp_path):
    error_file = tmp_path / "error.txt"
    error_file.write_text(
        "Failure # 1 (occurred at 2026-11-28)\nray::ImplicitFunc.train() (pid=1)\n  File x.py, line 3\n"
        "sourcetrace.errors.DataCheckError: 2 problem(s) in the data\n  a.wav: silent\n  b.wav: corrupt\n"
    )
    reason = error_reason(error_file)
    assert reason.startswith("sourcetrace.errors.DataCheckError: 2 problem(s)") and reason.endswith("b.wav: corrupt")
