"""Table-1 reports from a synthetic Tune experiment folder (the files Tune writes, read with Tune's own
ExperimentAnalysis; no Ray started)."""

import json
import math

import pandas as pd
import pytest
from scipy import stats

from sourcetrace.cli import main
from sourcetrace.sweep.report import format_table1, trials_frame, write_reports

RECIPES = {
    "recipe": {
        "aam/random": {"loss.name": "aamsoftmax", "sampler.name": "random"},
        "ge2e/balanced": {"loss.name": "ge2e", "sampler.name": "balanced", "train.batch_size": 8},
    }
}
C = "lang_seen___model_seen"


def _tune_state(exp, tid, params, status, error):
    """A trial's entry of Tune's experiment snapshot, as Tune writes it."""
    from ray.train._internal.storage import StorageContext
    from ray.tune import PlacementGroupFactory
    from ray.tune.experiment import Trial

    storage = StorageContext(str(exp.parent), exp.name, trial_dir_name=f"run_trial_{tid}")
    trial = Trial("run_trial", config=params, trial_id=tid, storage=storage, stub=True)
    trial.placement_group_factory = PlacementGroupFactory([{"CPU": 1}])
    trial.status = status
    trial.run_metadata.num_failures = 1 if error else 0
    trial.run_metadata.error_filename = "error.txt" if error else None
    return list(trial.get_json_state())


def make_experiment(root, trials):
    """trials: (trial_id, params, tune_status, [(epoch, dev_eer or None)], error or None)."""
    exp = root / "sw"
    exp.mkdir(parents=True)
    (exp / "sourcetrace_sweep.json").write_text(
        json.dumps(
            {"name": "sw", "experiment": "sw", "base": {"train.epochs": 4, "train.eval_every": 2}, "recipes": RECIPES}
        )
    )
    data = []
    for tid, params, status, epochs, error in trials:
        d = exp / f"run_trial_{tid}"
        d.mkdir()
        (d / "params.json").write_text(json.dumps(params))
        lines = []
        for epoch, dev in epochs:
            r = {"epoch": float(epoch), "train_loss": 1.0, "time_total_s": 10.0 * epoch, "trial_id": tid}
            if dev is not None:
                r |= {
                    "dev_eer": dev,
                    "test_eer": dev + 5,
                    f"dev_eer.{C}": dev - 1,
                    "checkpoint_dir_name": f"checkpoint_{epoch:06d}",
                }
                (d / r["checkpoint_dir_name"]).mkdir()
            lines.append(json.dumps(r))
        (d / "result.json").write_text("\n".join(lines) + ("\n" if lines else ""))
        if error:
            (d / "error.txt").write_text(f"Traceback (most recent call last):\n  ...\n{error}\n")
        data.append(_tune_state(exp, tid, params, status, error))
    (exp / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": data}))
    return exp


AAM = {"recipe": "aam/random", "model.embedding_dim": 10}
GE2E = {"recipe": "ge2e/balanced", "model.embedding_dim": 10}


@pytest.fixture
def exp(tmp_path):
    return make_experiment(
        tmp_path,
        [
            ("a0", AAM | {"train.seed": 0}, "TERMINATED", [(1, None), (2, 12.0), (3, None), (4, 10.0)], None),
            ("a1", AAM | {"train.seed": 1}, "TERMINATED", [(1, None), (2, 11.0), (3, None), (4, 14.0)], None),
            ("a2", AAM | {"train.seed": 2}, "TERMINATED", [(1, None), (2, 15.0)], None),  # stopped by ASHA
            ("g0", GE2E, "ERROR", [(1, None)], "sourcetrace.errors.TrainingError: non-finite loss"),
            ("g1", GE2E | {"model.embedding_dim": 50}, "RUNNING", [(1, None), (2, 20.0)], None),
            ("g2", GE2E | {"model.embedding_dim": 50, "train.seed": 1}, "PENDING", [], None),
        ],
    )


def test_long_table_has_every_trial_and_evaluation_with_its_status(exp):
    t = trials_frame(exp)
    assert sorted(t["trial_id"].unique()) == ["a0", "a1", "a2", "g0", "g1", "g2"]
    status = t.drop_duplicates("trial_id").set_index("trial_id")["status"].to_dict()
    assert status == {
        "a0": "finished",
        "a1": "finished",
        "a2": "early_stopped",
        "g0": "failed",
        "g1": "interrupted",
        "g2": "pending",
    }
    reasons = t.drop_duplicates("trial_id").set_index("trial_id")["stop_reason"]
    assert reasons["g0"] == "sourcetrace.errors.TrainingError: non-finite loss"
    assert "epoch 2 of 4" in reasons["a2"]
    a0 = t[t["trial_id"] == "a0"]
    assert list(a0["epoch"]) == [2, 4] and list(a0["best"]) == [False, True]  # best by dev EER, not last
    assert a0["epoch_reached"].iloc[0] == 4 and a0["wall_s"].iloc[0] == 40.0
    assert a0[f"dev_eer.{C}"].tolist() == [11.0, 9.0] and a0["checkpoint"].notna().all()
    assert (t[t["trial_id"] == "g0"]["dev_eer"].isna()).all()  # failed before its first evaluation: still a row
    assert set(t["loss"]) == {"aamsoftmax", "ge2e"} and set(t["dim"]) == {10, 50}
    assert list(a0["best_epoch"]) == [4, 4] and t[t["trial_id"] == "a1"]["best_epoch"].iloc[0] == 2
    assert [c for c in t.columns if "status" in c] == ["status"]  # one status column
    assert (a0["cfg:loss.margin"] == 0.3).all() and (a0["cfg:train.epochs"] == 4).all()
    assert t.loc[t["loss"] == "ge2e", "cfg:loss.margin"].isna().all()  # a GE2E trial has no margin


def test_report_finds_the_run_ids_in_the_store_the_sweep_recorded(exp, tmp_path):
    from mlflow import MlflowClient

    from sourcetrace.tracking.store import ensure_experiment, resolve_store

    store = resolve_store(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    record = json.loads((exp / "sourcetrace_sweep.json").read_text()) | {"tracking_uri": store.uri}
    (exp / "sourcetrace_sweep.json").write_text(json.dumps(record))
    run = MlflowClient(store.uri).create_run(ensure_experiment(store, "sw"), tags={"trial_id": "a0"})
    trials = write_reports(exp, tmp_path / "out").trials.drop_duplicates("trial_id").set_index("trial_id")
    assert trials.loc["a0", "run_id"] == run.info.run_id and trials["run_id"].drop("a0").isna().all()
    assert "run_id" not in write_reports(exp, tmp_path / "out2", mlflow=False).trials


def test_table1_mean_and_ci_over_seeds_and_flags(exp, tmp_path):
    r = write_reports(exp, tmp_path / "out")
    for name in ("trials", "table1_cells", "table1"):
        assert (tmp_path / "out" / f"{name}.parquet").is_file()
    wide = pd.read_parquet(tmp_path / "out" / "table1.parquet").set_index(["loss", "sampler"])
    assert {"dev@10", "dev@50", "test@10", "test@50", "dev@10_ci95"} <= set(wide.columns)
    best = [10.0, 11.0, 15.0]  # best dev EER of a0, a1, a2
    sd = pd.Series(best).std(ddof=1)
    assert wide.loc[("aamsoftmax", "random"), "dev@10"] == pytest.approx(12.0)
    assert wide.loc[("aamsoftmax", "random"), "dev@10_ci95"] == pytest.approx(stats.t.ppf(0.975, 2) * sd / math.sqrt(3))
    assert wide.loc[("aamsoftmax", "random"), "test@10"] == pytest.approx(17.0)
    assert math.isnan(wide.loc[("ge2e", "balanced"), "dev@10"])  # failed cell stays, empty
    cells = r.cells.set_index(["loss", "dim", "split"])
    assert cells.loc[("aamsoftmax", 10, "dev"), ["n", "n_finished", "n_early_stopped"]].tolist() == [3, 2, 1]
    assert cells.loc[("ge2e", 50, "dev"), ["n", "n_unfinished"]].tolist() == [1, 2]
    text = format_table1(r)
    assert "12.00±" in text and "*" in text and "failed" in text and "20.00?" in text
    assert "pending" in text and "interrupted" in text and "non-finite loss" in text


def test_cli_report(exp, capsys):
    assert main(["report", str(exp)]) == 0
    out = capsys.readouterr().out
    assert "Table 1 of sweep sw" in out and (exp / "report" / "table1.parquet").is_file()
    assert main(["report", str(exp.parent)]) == 2  # not an experiment folder: one clear line
    assert "no Tune experiment" in capsys.readouterr().err


def test_cli_report_takes_a_path_relative_to_the_working_directory(exp, capsys, monkeypatch):
    """`sourcetrace report ray_results/demo` as README writes it: Ray passes the folder to pyarrow, which
    refuses a relative path as a URI without a scheme."""
    monkeypatch.chdir(exp.parent)
    assert main(["report", exp.name]) == 0
    assert "Table 1 of sweep sw" in capsys.readouterr().out
