"""The driver-side MLflow callback on synthetic Tune trials with a real sqlite store."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from ray import tune

from sourcetrace.sweep.callback import MlflowTrialCallback, run_name
from sourcetrace.sweep.spec import TrialSpec, expand, load_sweep, searched_keys
from sourcetrace.tracking.store import (
    KIND_TRAINING,
    TAG_KIND,
    client_for,
    experiment_id,
    log_reference_run,
    mark_handed_over,
    resolve_store,
    run_tags,
)
from sourcetrace.ui import server_command

REPO = Path(__file__).parent.parent
SPEC = TrialSpec(
    {"train.epochs": 4, "train.eval_every": 2},
    {"recipe": {"ge2e/balanced": {"loss.name": "ge2e", "sampler.name": "balanced", "train.batch_size": 8}}},
)
COND = "lang_seen___model_seen"


class FakeTrial:
    def __init__(self, trial_id, tmp_path, error_file=None, config=None):
        self.trial_id, self.config, self.last_result = (
            trial_id,
            config or {"recipe": "ge2e/balanced", "model.embedding_dim": 16},
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
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/train_loss")] == [1, 2, 3, 4]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/dev_eer")] == [2, 4]
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
    for r in (run, early):  # every finished trial's learning curve, a PNG
        curve = Path(r.info.artifact_uri.removeprefix("file://")) / "learning_curve.png"
        assert curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and curve.stat().st_size > 5000


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


def test_a_trial_completed_by_an_interrupt_is_recorded_as_interrupted(tmp_path, store):
    """SIGINT/SIGTERM: Tune's graceful stop may complete a running trial on its way out, but leaves it unended
    (not TERMINATED) for --resume; its run must say "interrupted" (KILLED), not early-stopped (FINISHED)."""
    cb = MlflowTrialCallback(store, "sw", SPEC)
    cut, done = FakeTrial("t5", tmp_path), FakeTrial("t6", tmp_path)
    feed(cb, cut, [1, 2], done=True)  # on_trial_complete, as the interrupt's stop calls it
    feed(cb, done, [1, 2], done=True)
    cut.status, done.status = "PAUSED", "TERMINATED"
    cb.on_experiment_end([cut, done])
    by_trial = {r.data.tags["trial_id"]: r for r in runs(store)[1]}
    assert by_trial["t5"].info.status == "KILLED" and by_trial["t5"].data.tags["status"] == "interrupted"
    assert by_trial["t6"].info.status == "FINISHED" and by_trial["t6"].data.tags["status"] == "early_stopped"


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
    assert [m.step for m in client.get_metric_history(run.info.run_id, "epoch/train_loss")] == [1, 2, 3, 4]


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
    assert run.info.run_name == "ge2e/balanced/d16/s0"  # the trial config's keys: the SPACE's values
    assert by_trial["t6"].info.run_name == "ge2e/balanced/d16/s0/t6"
    m = run.data.metrics
    assert (m["best_dev_eer"], m["best_test_eer"], m["best_epoch"], m[f"condition/best_dev_eer.{COND}"]) == (
        12.0,
        13.0,
        2.0,
        10.0,
    )
    assert m["epoch/dev_eer"] == 15.0  # the latest evaluation stays under its own name
    params = run.data.params
    assert {"loss.init_w", "sampler.per_class", "features.n_mels", "model.channels"} <= set(params)
    assert not [k for k in params if k.startswith("ssl.") or k in ("loss.margin", "loss.scale")]
    assert {k: run.data.tags[k] for k in tags} == tags


EVAL = {
    "dev_eer": 12.0,
    "dev_min_dcf": 0.5,
    f"dev_eer.{COND}": 9.0,
    "dev_openset_auroc": 0.8,
    "test_eer": 14.0,
    "test_min_dcf": 0.6,
    f"test_eer.{COND}": 11.0,
    "test_openset_auroc": 0.7,
}
HEADLINE = {
    "best_dev_eer",
    "best_test_eer",
    "best_dev_min_dcf",
    "best_test_min_dcf",
    f"condition/best_dev_eer.{COND}",
    f"condition/best_test_eer.{COND}",
    "openset/best_dev_openset_auroc",
    "openset/best_test_openset_auroc",
}


def _corpus(tmp_path):
    """A corpus folder as ``run_tags`` reads it: the protocol's CSV files."""
    root = tmp_path / "corpus_x"
    (root / "protocol").mkdir(parents=True)
    (root / "protocol" / "train.csv").write_text("file,system\na.wav,s1\n")
    return root


def test_trials_baseline_and_fusion_share_headline_metrics_roles_and_tags(tmp_path, store):
    tags = run_tags(_corpus(tmp_path), None, commit="abc123")
    assert tags["dataset.name"] == "corpus_x" and len(tags["dataset.protocol_sha256"]) == 64
    cb = MlflowTrialCallback(store, "sw", SPEC, tags=tags)
    trial = FakeTrial("t1", tmp_path)
    cb.on_trial_start(0, [], trial)
    for epoch in (1, 2, 3, 4):  # dev best at epoch 2, where test is measured; epoch 4 is worse: no test there
        trial.last_result = result(epoch) | (EVAL if epoch == 2 else {"dev_eer": 13.0} if epoch == 4 else {})
        cb.on_trial_result(0, [], trial, trial.last_result)
    cb.on_trial_complete(0, [], trial)
    worse, better = ({k: v + 10 for k, v in EVAL.items()}, {k: v - 5 for k, v in EVAL.items()})
    base_id = log_reference_run(store.uri, "sw", "baseline (MFCC stats)", {"x": 1}, worse, "baseline", tags)
    fusion_id = log_reference_run(store.uri, "sw", "fusion: a + b", {"y": 2}, better, "fusion", tags)

    client = MlflowClient(store.uri)
    exp = client.get_experiment_by_name("sw")
    ordered = client.search_runs([exp.experiment_id], order_by=["metrics.best_dev_eer ASC"])
    assert [r.data.tags["role"] for r in ordered] == ["fusion", "trial", "baseline"]
    assert [r.info.run_id for r in ordered][::2] == [fusion_id, base_id]
    for run in ordered:  # one vocabulary: sorting and the compare page work across the three kinds
        assert HEADLINE <= set(run.data.metrics), (run.data.tags["role"], sorted(run.data.metrics))
        assert {k: run.data.tags[k] for k in tags} == tags and run.data.tags["sweep"] == "sw"
        assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["corpus_x"]
        assert run.data.tags["mlflow.note.content"].startswith("Best evaluation: ")
    fusion, trial_run, base = ordered
    assert fusion.data.metrics["best_test_eer"] == 9.0 and base.data.metrics["best_dev_eer"] == 22.0
    m = trial_run.data.metrics
    assert (m["best_dev_eer"], m["best_test_eer"], m["best_epoch"], m["epoch/dev_eer"]) == (12.0, 14.0, 2.0, 13.0)
    history = client.get_metric_history
    assert [x.step for x in history(trial_run.info.run_id, "epoch/test_eer")] == [2]  # only where measured
    assert [x.step for x in history(trial_run.info.run_id, "best_test_eer")] == [2]
    assert [x.step for x in history(trial_run.info.run_id, "epoch/dev_eer")] == [2, 4]
    assert "epoch 2" in trial_run.data.tags["mlflow.note.content"]
    sections = {k.split("/")[0] for k in m if "/" in k}
    assert sections == {"epoch", "condition", "openset"}
    assert {k for k in m if "/" not in k} == {"epoch", "best_epoch"} | {k for k in HEADLINE if "/" not in k}

    mark_handed_over(store, "sw", trial_run.info.run_id)
    mark_handed_over(store, "sw", fusion_id)  # a resumed sweep handing over another model moves the tag
    marked = client.search_runs([exp.experiment_id], filter_string="tags.`sourcetrace.handed_over` = 'true'")
    assert [r.info.run_id for r in marked] == [fusion_id]


def test_a_reference_run_has_a_known_role():
    with pytest.raises(ValueError, match="role 'trial'"):
        log_reference_run("sqlite:///unused.db", "sw", "x", {}, {}, "trial")


def test_new_experiments_open_in_the_training_view(store):
    client = client_for(store)
    assert client.get_experiment(experiment_id(client, store, "fresh")).tags[TAG_KIND] == KIND_TRAINING


@pytest.mark.parametrize(
    "sweep_file, smoke, some",
    [
        ("demo.py", False, {"front=log-mel+bands/d50/s0", "front=log-mel/d10/s0"}),
        ("findings_cpu.py", False, {"ge2e/balanced/d10/s2", "softmax/random/d512/s0"}),
        ("table1_aasist.py", False, {"w2v2_aasist/amsoftmax/random/d10/s0"}),
        ("table1_aasist.py", True, {"aamsoftmax/random/d50/s0"}),  # pinned SPACE keys name nothing
        ("robustness.py", False, {"augment=off/d50/s0", "augment=codecs+replay/d50/s0"}),
    ],
)
def test_run_names_come_from_the_searched_space_keys_and_differ(sweep_file, smoke, some):
    sweep = load_sweep(REPO / "sweeps" / sweep_file, smoke=smoke)
    keys = searched_keys(sweep.space)
    names = [run_name(sweep.spec.config(c), c, keys) for c in expand(sweep.space)]
    assert some <= set(names) and len(set(names)) == len(names)
    assert all(len(n) <= 60 for n in names), names


def test_one_varying_non_standard_key_names_every_trial_apart(tmp_path, store):
    space = {"train.lr": tune.grid_search([1e-3, 2e-3, 2.5e-4]), "model.embedding_dim": 16}
    cb = MlflowTrialCallback(store, "sw", SPEC, name_keys=searched_keys(space))
    configs = [dict(c) for c in expand(space)] + [{"train.lr": 1e-3, "model.embedding_dim": 16}]  # a repeat
    for i, config in enumerate(configs):
        feed(cb, FakeTrial(f"n{i}", tmp_path, config=config), [1, 2])
    names = sorted(r.info.run_name for r in runs(store)[1])
    assert names == ["lr=0.00025/d16/s0", "lr=0.001/d16/s0", "lr=0.001/d16/s0/n3", "lr=0.002/d16/s0"]


def test_a_search_space_of_distributions_names_runs_by_their_values():
    space = {"loss.margin": tune.uniform(0.1, 0.5), "train.lr": tune.loguniform(3e-5, 1e-3)}
    space["batch"] = tune.choice(["a"])
    assert searched_keys(space | {"train.seed": 3}) == ["loss.margin", "train.lr", "batch"]
    cfg = SPEC.config({})
    name = run_name(cfg, {"loss.margin": 0.23456, "train.lr": 3.14159e-05, "batch": "a"}, searched_keys(space))
    assert name == "margin=0.235/lr=3.14e-05/batch=a/d50/s0"


def test_an_input_frame_needs_one_clip_column():
    import pandas as pd

    from sourcetrace.errors import SourcetraceError
    from sourcetrace.tracking.pyfunc import clips_of, predict_frame

    with pytest.raises(SourcetraceError, match="exactly one of the columns clip"):
        clips_of(pd.DataFrame({"path": ["a.wav"]}))
    with pytest.raises(SourcetraceError, match="exactly one of the columns clip"):
        predict_frame(None, pd.DataFrame({"clip": ["a.wav"], "waveform": [[0.0]]}))
