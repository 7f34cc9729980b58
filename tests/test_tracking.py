"""The driver-side MLflow callback on synthetic Tune trials with a real sqlite store."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from ray import tune

from sourcetrace.sweep.spec import TrialSpec
from sourcetrace.tracking.callback import MlflowTrialCallback
from sourcetrace.tracking.store import resolve_store
from sourcetrace.ui import server_command

SPEC = TrialSpec(
    {"train.epochs": 4, "train.eval_every": 2},
    {"recipe": {"ge2e/balanced": {"loss.name": "ge2e", "sampler.name": "balanced", "train.batch_size": 8}}},
)
COND = "lang_seen___model_seen"


class FakeTrial:
    def __init__(self, trial_id, tmp_path, error_file=None):
        self.trial_id, self.config, self.last_result = (
            trial_id,
            {"recipe": "ge2e/balanced", "model.embedding_dim": 16},
            {},
        )
        self.num_failures, self.error_file = 0, error_file
        folder = tmp_path / f"ckpt_{trial_id}"
        folder.mkdir()
        (folder / "state.pt").write_bytes(b"weights")
        best = SimpleNamespace(
            checkpoint=tune.Checkpoint.from_directory(str(folder)),
            metrics={"dev_eer": 20.0, "test_eer": 25.0, f"dev_eer.{COND}": 10.0, "epoch": 2.0},
        )
        self.run_metadata = SimpleNamespace(checkpoint_manager=SimpleNamespace(best_checkpoint_result=best))

    def __str__(self):
        return f"run_trial_{self.trial_id}"


def result(epoch, evaluated=False):
    r = {
        "epoch": float(epoch),
        "train_loss": 1.0 / epoch,
        "training_iteration": epoch,
        "done": False,
        "pid": 1,
        "config": {"x": 1},
        "time_total_s": 2.0 * epoch,
        "device": "NVIDIA H100 80GB HBM3 (cuda:0)",
    }
    if evaluated:
        r |= {"dev_eer": 30.0 - epoch, f"dev_eer.{COND}": 9.0, "test_eer": 31.0}
    return r


@pytest.fixture
def store(tmp_path):
    return resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")


def feed(cb, trial, epochs, done=True):
    cb.on_trial_start(0, [], trial)
    for e in epochs:
        trial.last_result = result(e, evaluated=e % 2 == 0)
        cb.on_trial_result(0, [], trial, trial.last_result)
    if done:
        cb.on_trial_complete(0, [], trial)


def runs(store, name="sw"):
    client = MlflowClient(store.uri)
    return client, client.search_runs([client.get_experiment_by_name(name).experiment_id])


def test_default_store_is_sqlite_under_the_working_directory(tmp_path):
    s = resolve_store(None, cwd=tmp_path)
    assert s.uri == f"sqlite:///{tmp_path.resolve() / 'mlruns' / 'mlflow.db'}"
    assert s.artifact_location == (tmp_path.resolve() / "mlruns" / "artifacts").as_uri()
    assert resolve_store("http://127.0.0.1:5000").artifact_location is None
    cmd = server_command(s, port=5123)
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1" and "--artifacts-destination" in cmd


def test_one_run_per_trial_with_params_metrics_tags_and_artefacts(tmp_path, store):
    cb = MlflowTrialCallback(store, "sw", SPEC)
    finished, stopped = FakeTrial("t1", tmp_path), FakeTrial("t2", tmp_path)
    feed(cb, finished, [1, 2, 3, 4])
    feed(cb, stopped, [1, 2])
    client, found = runs(store)
    assert len(found) == 2
    by_trial = {r.data.tags["trial_id"]: r for r in found}
    run = by_trial["t1"]
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert run.data.params["loss.name"] == "ge2e" and run.data.params["recipe"] == "ge2e/balanced"
    assert run.data.params["model.embedding_dim"] == "16" and run.data.tags["sweep"] == "sw"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "dev_eer")] == [2, 4]
    assert "pid" not in run.data.metrics and "done" not in run.data.metrics and "device" not in run.data.metrics
    assert run.data.tags["sourcetrace.device"] == "NVIDIA H100 80GB HBM3 (cuda:0)"
    early = by_trial["t2"]
    assert early.info.status == "FINISHED" and early.data.tags["status"] == "early_stopped"
    assert "epoch 2 of 4" in early.data.tags["status_reason"]
    art = Path(run.info.artifact_uri.removeprefix("file://"))
    assert (art / "best_checkpoint" / "state.pt").read_bytes() == b"weights"
    assert '"loss.name": "ge2e"' in (art / "config.json").read_text()
    table = (art / "eer_by_condition.csv").read_text().splitlines()
    assert table[0] == "condition,dev_eer,test_eer" and table[1].startswith("all,20.0000,25.0000")
    assert table[2].startswith(f"{COND},10.0000,")


def test_failed_trial_ends_failed_with_its_reason(tmp_path, store):
    err = tmp_path / "error.txt"
    err.write_text("Traceback ...\nsourcetrace.errors.TrainingError: non-finite loss (nan) at epoch 3\n")
    cb = MlflowTrialCallback(store, "sw", SPEC)
    trial = FakeTrial("t3", tmp_path, error_file=str(err))
    feed(cb, trial, [1, 2, 3], done=False)
    cb.on_trial_recover(0, [], trial)
    assert runs(store)[1][0].data.tags["status"] == "retrying"
    cb.on_trial_error(0, [], trial)
    run = runs(store)[1][0]
    assert run.info.status == "FAILED" and run.data.tags["status"] == "failed"
    assert run.data.tags["status_reason"] == "sourcetrace.errors.TrainingError: non-finite loss (nan) at epoch 3"


def test_restore_reuses_the_run_and_skips_epochs_already_logged(tmp_path, store):
    cb = MlflowTrialCallback(store, "sw", SPEC)
    trial = FakeTrial("t4", tmp_path)
    feed(cb, trial, [1, 2, 3], done=False)
    cb.on_experiment_end([trial])  # an interrupted sweep (SIGINT)
    _, (run,) = runs(store)
    assert run.info.status == "KILLED" and run.data.tags["status"] == "interrupted"

    restored = pickle.loads(pickle.dumps(cb))  # as Tune.restore rebuilds it from the experiment
    restored.set_state(cb.get_state())
    restored.on_trial_restore(0, [], trial)
    for e in (3, 4):  # epoch 3 re-reported from the epoch-2 checkpoint
        trial.last_result = result(e, evaluated=e % 2 == 0)
        restored.on_trial_result(0, [], trial, trial.last_result)
    restored.on_trial_complete(0, [], trial)
    client, found = runs(store)
    assert len(found) == 1 and found[0].info.run_id == run.info.run_id
    assert found[0].info.status == "FINISHED" and found[0].data.tags["status"] == "finished"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2, 3, 4]


def test_runs_are_named_by_recipe_and_carry_best_metrics_used_params_and_tags(tmp_path, store):
    tags = {"mlflow.source.git.commit": "abc123", "dataset.root": "/data/x", "dataset.protocol_sha256": "f00"}
    cb = MlflowTrialCallback(store, "sw", SPEC, tags=tags)
    trial, twin = FakeTrial("t5", tmp_path), FakeTrial("t6", tmp_path)  # same cell and seed: names must differ
    cb.on_trial_start(0, [], trial)
    for epoch, dev in ((1, None), (2, 12.0), (3, None), (4, 15.0)):  # the best evaluation is not the last
        r = result(epoch) | ({"dev_eer": dev, f"dev_eer.{COND}": dev - 2, "test_eer": dev + 1} if dev else {})
        cb.on_trial_result(0, [], trial, r)
    feed(cb, twin, [1, 2])
    client, found = runs(store)
    by_trial = {r.data.tags["trial_id"]: r for r in found}
    run = by_trial["t5"]
    assert run.info.run_name == "thin_resnet34/ge2e/balanced/d16/s0"
    assert by_trial["t6"].info.run_name == "thin_resnet34/ge2e/balanced/d16/s0/t6"
    m = run.data.metrics
    assert (m["best_dev_eer"], m["best_test_eer"], m["best_epoch"], m[f"best_dev_eer.{COND}"]) == (
        12.0,
        13.0,
        2.0,
        10.0,
    )
    assert m["dev_eer"] == 15.0  # the latest evaluation stays under its own name
    params = run.data.params
    assert {"loss.init_w", "sampler.per_class", "features.n_mels", "model.channels"} <= set(params)
    assert not [k for k in params if k.startswith("ssl.") or k in ("loss.margin", "loss.scale")]
    assert {k: run.data.tags[k] for k in tags} == tags
