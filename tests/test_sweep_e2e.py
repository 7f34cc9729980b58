"""Real local Ray sweeps on the tiny corpus with a sqlite MLflow store: grid and Optuna under ASHA,
a driver SIGKILLed and resumed, the MLflow server's REST API, the analysis notebook."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
from mlflow import MlflowClient

from sourcetrace.evaluation.baseline import NAME as BASELINE

pytestmark = pytest.mark.slow
REPO = Path(__file__).parent.parent
QUICK = {
    "train.epochs": 4,
    "train.eval_every": 1,
    "train.warmup_epochs": 1,
    "train.steps_per_epoch": 3,
    "model.channels": 8,
    "model.embedding_dim": 16,
    "data.crop_seconds": 1.0,
    "data.eval_seconds": 2.0,
    "data.short_clips": "pad",
    "train.lr": 1e-3,
}
GRID = f"""
from ray import tune
BASE = {QUICK!r}
RECIPES = {{"recipe": {{
    "aamsoftmax/random": {{"loss.name": "aamsoftmax", "sampler.name": "random", "train.batch_size": 16}},
    "ge2e/balanced": {{"loss.name": "ge2e", "sampler.name": "balanced", "sampler.per_class": 2,
                      "train.batch_size": 16}},
}}}}
SPACE = {{"recipe": tune.grid_search(list(RECIPES["recipe"])), "train.seed": tune.grid_search([0, 1])}}
TUNE = {{"scheduler": "SCHED", "grace_period": 1, "reduction_factor": 2, "keep_checkpoints": 1}}
RESOURCES = {{"cpu": 1}}
"""


def sweep_cmd(sweep_file, root, tmp, *extra):
    return [
        sys.executable,
        "-m",
        "sourcetrace.cli",
        "sweep",
        str(sweep_file),
        "--root",
        str(root),
        "--storage",
        str(tmp / "ray"),
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        "--no-analyze",
        *extra,
    ]


def env():
    return dict(os.environ, RAY_USAGE_STATS_ENABLED="0", PYTHONPATH=str(REPO))  # token auth on (conftest)


def run_sweep(cmd, cwd):
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env(), capture_output=True, text=True, timeout=540)
    return proc, time.perf_counter() - t0


def mlflow_runs(tmp, name):
    client = MlflowClient(f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name(name)
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def trial_states(exp_dir):
    snap = max(exp_dir.glob("experiment_state-*.json"), key=lambda p: p.name)  # the newest session
    return {json.loads(s)["trial_id"]: json.loads(s)["status"] for s, _ in json.loads(snap.read_text())["trial_data"]}


def check_runs(tmp, name, exp_dir):
    """One MLflow run per Tune trial, ended, with params and one metric point per epoch."""
    client, runs = mlflow_runs(tmp, name)
    ref = [r for r in runs if "reference" in r.data.tags]  # the featureless baseline's run, beside the trials
    base = [r for r in ref if r.info.run_name == BASELINE]
    assert len(base) == 1 and base[0].data.metrics["best_dev_eer"] > 0 and base[0].data.tags["role"] == "baseline"
    handed = [r for r in runs if r.data.tags.get("sourcetrace.handed_over") == "true"]  # the model handed over
    assert len(handed) == 1 and handed[0].data.tags["role"] == ("fusion" if (exp_dir / "fusion").is_dir() else "trial")
    fused = [r.info.run_name for r in ref if r.info.run_name != BASELINE]  # and a fused sweep's fusion, once
    assert len(fused) == (exp_dir / "fusion").is_dir() and all(n.startswith("fusion: ") for n in fused)
    runs = [r for r in runs if "reference" not in r.data.tags]
    states = trial_states(exp_dir)
    assert sorted(r.data.tags["trial_id"] for r in runs) == sorted(states)
    assert len({r.info.run_name for r in runs}) == len(runs)  # unique names in the sweep
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["status"] in ("finished", "early_stopped")
        assert run.data.params["model.channels"] == "8" and "train.lr" in run.data.params
        assert not [k for k in run.data.params if k.startswith("ssl.")]  # a ResNet run: the parts it uses
        p = run.data.params
        name = f"d{p['model.embedding_dim']}/s{p['train.seed']}"  # after the searched values (recipe, batch=...)
        name = (f"{p['recipe']}/" if "recipe" in p else f"batch={p['batch']}/") + name
        assert name in run.info.run_name and run.data.tags["role"] == "trial"
        history = [m.value for m in client.get_metric_history(run.info.run_id, "epoch/dev_eer")]
        assert run.data.metrics["best_dev_eer"] == min(history) and "best_test_eer" in run.data.metrics
        assert run.data.metrics["best_epoch"] >= 1
        assert run.data.tags["dataset.protocol_sha256"] and run.data.tags["dataset.root"]
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch/train_loss")]
        assert steps == list(range(1, len(steps) + 1)) and len(steps) == int(run.data.metrics["epoch"])
    return runs


@pytest.fixture(scope="module")
def grid(tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    (tmp / "grid.py").write_text(GRID.replace("SCHED", "asha"))
    proc, wall = run_sweep(sweep_cmd(tmp / "grid.py", tiny_corpus, tmp), tmp)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    trials = pd.read_parquet(tmp / "ray" / "grid" / "report" / "trials.parquet")
    compute = trials.drop_duplicates("trial_id")["wall_s"].sum()
    print(
        f"\ngrid sweep: {len(trials['trial_id'].unique())} trials, wall {wall:.1f} s, trial compute {compute:.1f} s, "
        f"overhead factor {wall / (compute / 2):.2f} (concurrency 2)"
    )
    return tmp, proc


def test_grid_sweep_logs_one_run_per_trial_and_writes_reports(grid):
    tmp, proc = grid
    assert "Table 1 of sweep grid" in proc.stdout and "4 trial configs validated" in proc.stdout
    runs = check_runs(tmp, "grid", tmp / "ray" / "grid")
    assert len(runs) == 4 and {r.data.params["recipe"] for r in runs} == {"aamsoftmax/random", "ge2e/balanced"}
    art = Path(runs[0].info.artifact_uri.removeprefix("file://"))
    assert (art / "config.json").is_file() and (art / "eer_by_condition.csv").is_file()
    assert (art / "best_checkpoint" / "state.pt").is_file()
    report = tmp / "ray" / "grid" / "report"
    trials = pd.read_parquet(report / "trials.parquet")
    assert {
        "backbone",
        "loss",
        "sampler",
        "dim",
        "seed",
        "epoch",
        "epoch_reached",
        "status",
        "stop_reason",
        "dev_eer",
        "test_eer",
        "wall_s",
        "run_id",
    } <= set(trials.columns)
    assert any(c.startswith("test_eer.lang_") for c in trials.columns)
    per_trial = trials.drop_duplicates("trial_id")
    assert len(per_trial) == 4 and set(per_trial["run_id"]) == {r.info.run_id for r in runs}
    assert (trials.groupby("trial_id")["best"].sum() == 1).all()
    tags = {r.data.tags["trial_id"]: r.data.tags["status"] for r in runs}
    assert per_trial.set_index("trial_id")["status"].to_dict() == tags
    table1 = pd.read_parquet(report / "table1.parquet")
    assert len(table1) == 3 and {"dev@16", "test@16", "dev@16_ci95", "test@16_ci95"} <= set(table1.columns)
    assert BASELINE in set(table1["backbone"]) and "verdict:" in proc.stdout
    cells = pd.read_parquet(report / "table1_cells.parquet")
    assert (cells.loc[cells["backbone"] != BASELINE, "n_trials"] == 2).all()  # two seeds per cell


def test_the_sweep_runs_quietly_with_one_line_per_evaluation(grid):
    _, proc = grid
    out = proc.stdout.splitlines()
    evaluations = [ln for ln in out if ln.startswith("trial run_trial_") and " epoch " in ln]
    assert evaluations and all("/4  dev EER " in ln and "(best " in ln for ln in evaluations)
    assert len([ln for ln in out if ln.startswith("trial run_trial_") and " ended" in ln]) == 4
    assert "Checkpoint successfully created" not in proc.stdout + proc.stderr
    assert "dev EER %" in proc.stdout  # Tune's status table carries the dev EER column


def test_running_a_finished_sweep_again_reports_it(grid, tiny_corpus):
    tmp, _ = grid
    folders = sorted(p.name for p in (tmp / "ray" / "grid").iterdir() if p.name.startswith("run_trial"))
    proc, _ = run_sweep(sweep_cmd(tmp / "grid.py", tiny_corpus, tmp), tmp)  # the same command
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "has ended: reporting it (nothing to train)" in proc.stdout and "Table 1 of sweep grid" in proc.stdout
    assert sorted(p.name for p in (tmp / "ray" / "grid").iterdir() if p.name.startswith("run_trial")) == folders
    assert len(mlflow_runs(tmp, "grid")[1]) == 5  # four trials and the baseline, none added


def test_optuna_sweep_with_asha(tiny_corpus, tmp_path, grid):
    proc, wall = run_sweep(sweep_cmd(REPO / "sweeps" / "search_resnet.py", tiny_corpus, tmp_path, "--smoke"), tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    exp_dir = tmp_path / "ray" / "search_resnet_smoke"
    runs = check_runs(tmp_path, "search_resnet_smoke", exp_dir)
    assert len(runs) == 6 and len({r.data.params["train.lr"] for r in runs}) == 6
    statuses = [r.data.tags["status"] for r in runs] + [
        r.data.tags.get("status") for r in mlflow_runs(grid[0], "grid")[1]
    ]
    assert "early_stopped" in statuses, "ASHA stopped no trial in either sweep"
    trials = pd.read_parquet(exp_dir / "report" / "trials.parquet")
    assert trials["trial_id"].nunique() == 6


@pytest.mark.parametrize("scheduler,kill_after", [("fifo", 3), ("halving", 5)])
def test_killed_driver_resumes_every_trial_exactly_once(tiny_corpus, tmp_path, scheduler, kill_after):
    """SIGKILL the driver mid-sweep, then --resume: every trial runs once, and the fusion (TUNE fuse) is made
    once, after the resumed trials end. Under halving the kill comes after a rung has stopped trials: the
    restored scheduler must not wait for them (it did, forever, before they were left out of its rungs)."""
    (tmp_path / "grid.py").write_text(
        GRID.replace("SCHED", scheduler).replace('"keep_checkpoints"', '"fuse": "recipe", "keep_checkpoints"')
    )
    cmd = sweep_cmd(tmp_path / "grid.py", tiny_corpus, tmp_path, "--name", "killme")
    exp_dir = tmp_path / "ray" / "killme"
    log = open(tmp_path / "driver.log", "w")
    driver = subprocess.Popen(
        cmd, cwd=tmp_path, env=env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        deadline = time.time() + 300
        while time.time() < deadline and driver.poll() is None:
            evaluated = [
                sum('"dev_eer"' in ln for ln in p.read_text().splitlines()) for p in exp_dir.glob("*/result.json")
            ]
            if sum(evaluated) >= kill_after and list(exp_dir.glob("experiment_state-*.json")):
                if scheduler == "fifo" or "TERMINATED" in _states_now(exp_dir):  # halving: a rung stopped some
                    break
            time.sleep(0.5)
        assert driver.poll() is None, (
            "the sweep ended before it could be killed:\n" + (tmp_path / "driver.log").read_text()[-3000:]
        )
        os.kill(driver.pid, signal.SIGKILL)
        assert driver.wait(30) == -signal.SIGKILL
    finally:
        try:
            os.killpg(driver.pid, signal.SIGKILL)  # Ray processes the driver started, if any outlived it
        except ProcessLookupError:
            pass
        log.close()
    assert set(trial_states(exp_dir).values()) != {"TERMINATED"}

    proc, _ = run_sweep(cmd + ["--resume"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    states = trial_states(exp_dir)
    assert len(states) == 4 and set(states.values()) == {"TERMINATED"}
    assert len([p for p in exp_dir.iterdir() if p.is_dir() and p.name.startswith("run_trial")]) == 4
    runs = check_runs(tmp_path, "killme", exp_dir)
    ended = {"fifo": {"finished"}, "halving": {"finished", "early_stopped"}}[scheduler]
    assert len(runs) == 4 and {r.data.tags["status"] for r in runs} == ended
    trials = pd.read_parquet(exp_dir / "report" / "trials.parquet").drop_duplicates("trial_id")
    finished = trials[trials["status"] == "finished"]
    assert len(finished) == (4 if scheduler == "fifo" else 2)  # halving: one trial of each recipe goes on
    assert (finished["epoch_reached"] == QUICK["train.epochs"]).all()
    fusion = json.loads((exp_dir / "fusion" / "fusion.json").read_text())
    assert fusion["labels"] == ["recipe=aamsoftmax/random", "recipe=ge2e/balanced"] and fusion["metrics"]["test_eer"]


def _states_now(exp_dir) -> set:
    """Trial states of the newest snapshot, empty while it is being replaced."""
    try:
        return set(trial_states(exp_dir).values())
    except (ValueError, OSError):
        return set()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_server_lists_the_sweep_runs(grid):
    tmp, _ = grid
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "sourcetrace.cli",
        "ui",
        "--tracking-uri",
        f"sqlite:///{tmp / 'mlruns' / 'mlflow.db'}",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        cmd, cwd=tmp, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
        deadline, exp = time.time() + 90, None
        while time.time() < deadline and exp is None:
            try:
                with urllib.request.urlopen(f"{base}/experiments/get-by-name?experiment_name=grid", timeout=5) as r:
                    exp = json.load(r)["experiment"]["experiment_id"]
            except OSError:
                assert server.poll() is None, "mlflow server exited"
                time.sleep(1)
        assert exp is not None, "mlflow server did not answer"
        body = json.dumps({"experiment_ids": [exp], "max_results": 100}).encode()
        req = urllib.request.Request(f"{base}/runs/search", data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            runs = json.load(r)["runs"]
        assert len(runs) == 5  # four trials and the featureless baseline
        assert {t["value"] for run in runs for t in run["data"]["tags"] if t["key"] == "sweep"} == {"grid"}
        children = subprocess.run(
            ["pgrep", "-f", f"mlflow server .*--port {port}"], capture_output=True, text=True
        ).stdout.split()
        assert children, "the mlflow server process was not found"
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # `sourcetrace ui` then stops the server's own process group
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)
    time.sleep(1)
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(), (
            "server survived"
        )


def test_analysis_notebook_runs_headless_on_the_report(grid, monkeypatch):
    import nbclient
    import nbformat

    tmp, _ = grid
    report = tmp / "ray" / "grid" / "report"
    monkeypatch.setenv("SOURCETRACE_REPORT", str(report))
    monkeypatch.setenv("SOURCETRACE_FIGURES", str(tmp / "figures"))
    nb = nbformat.read(REPO / "analysis" / "table1.ipynb", as_version=4)
    nbclient.NotebookClient(  # run from the notebook's folder, as Jupyter opens it
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(REPO / "analysis")}}
    ).execute()
    for name in ("learning_curves.png", "training_loss.png", "eer_vs_dim.png", "dev_vs_test.png"):
        assert (tmp / "figures" / name).stat().st_size > 1000
    assert not (report / "figures").exists()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("paper_eer" in str(o.get("data", {})) for o in outputs)
