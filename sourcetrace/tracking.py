"""The only module that imports mlflow: the sweep's store, a driver-side Tune callback, the UI.

Default store (embedded): sqlite ``./mlruns/mlflow.db`` with artefacts in ``./mlruns/artifacts``, both
resolved against the working directory when the sweep starts. ``--tracking-uri http://...`` logs to a
server instead. The callback runs in the Tune driver only (one writer, no sqlite lock contention) and
owns each run's life cycle: one run per trial, found again by its ``trial_id`` tag after a restore.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback

from sourcetrace.errors import SourcetraceError

# Keys of a Tune result that are bookkeeping, not metrics of the trial.
_NOT_METRICS = {
    "done",
    "timestamp",
    "pid",
    "hostname",
    "node_ip",
    "date",
    "trial_id",
    "experiment_tag",
    "time_since_restore",
    "iterations_since_restore",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "time_this_iter_s",
    "should_checkpoint",
    "checkpoint_dir_name",
}
TAG_SWEEP, TAG_TRIAL, TAG_TRIAL_NAME, TAG_STATUS, TAG_REASON = (
    "sweep",
    "trial_id",
    "trial_name",
    "status",
    "status_reason",
)


@dataclass(frozen=True)
class Store:
    """Where runs go: ``uri`` for MlflowClient and the artefact root of new experiments (None = server's)."""

    uri: str
    artifact_location: str | None


def resolve_store(tracking_uri: str | None = None, cwd: str | Path | None = None) -> Store:
    """The embedded sqlite store under ``cwd`` by default; a sqlite/file/http(s) URI as given."""
    if not tracking_uri:
        base = Path(cwd or os.getcwd()).resolve() / "mlruns"
        return Store(f"sqlite:///{base / 'mlflow.db'}", (base / "artifacts").as_uri())
    if tracking_uri.startswith(("http://", "https://", "databricks")):
        return Store(tracking_uri, None)
    if tracking_uri.startswith("sqlite:///"):
        db = Path(tracking_uri[len("sqlite:///") :]).resolve()
        return Store(f"sqlite:///{db}", (db.parent / "artifacts").as_uri())
    if "://" in tracking_uri and not tracking_uri.startswith("file://"):
        return Store(tracking_uri, None)  # postgresql://, mysql://: the server-side artefact root
    folder = Path(tracking_uri.removeprefix("file://")).resolve()  # a file store (design.md §3)
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return Store(folder.as_uri(), None)


def _client(store: Store):
    from mlflow import MlflowClient

    if store.uri.startswith("sqlite:///"):
        Path(store.uri[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=store.uri)


def experiment_id(client, store: Store, name: str) -> str:
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{store.artifact_location}/{name}" if store.artifact_location else None
    return client.create_experiment(name, artifact_location=location)


def ensure_experiment(store: Store, name: str) -> str:
    """Create (or find) the sweep's experiment now: a bad store fails before Ray starts."""
    try:
        return experiment_id(_client(store), store, name)
    except Exception as err:  # mlflow raises many types for an unreachable or broken store
        raise SourcetraceError(f"MLflow store {store.uri} cannot be used: {type(err).__name__}: {err}") from err


def find_run(client, exp_id: str, trial_id: str):
    """The run of a trial (by its ``trial_id`` tag), or None."""
    runs = client.search_runs([exp_id], filter_string=f"tags.{TAG_TRIAL} = '{trial_id}'", max_results=2)
    return runs[0] if runs else None


def error_reason(trial) -> str:
    """The last line of a failed trial's error file (the exception), or a generic note."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        lines = [ln.strip() for ln in Path(path).read_text(errors="replace").splitlines() if ln.strip()]
        if lines:
            return lines[-1][:500]
    return "trial failed (no error file)"


class MlflowTrialCallback(Callback):
    """One MLflow run per Tune trial: flat params, per-epoch metrics (step = epoch), status tags, artefacts."""

    def __init__(self, store: Store, experiment: str, spec, log_checkpoint: bool = True):
        self.store, self.experiment, self.spec, self.log_checkpoint = store, experiment, spec, log_checkpoint
        self._runs: dict[str, str] = {}  # trial id -> run id (this process)
        self._logged: dict[str, float] = {}  # trial id -> last epoch logged
        self._done: set[str] = set()
        self._mlflow = None
        self._exp_id: str | None = None

    def __getstate__(self):  # Tune pickles the callback into the experiment; clients do not travel
        return {k: v for k, v in self.__dict__.items() if k not in ("_mlflow", "_exp_id", "_runs", "_logged")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._mlflow, self._exp_id, self._runs, self._logged = None, None, {}, {}

    def get_state(self) -> dict:
        return {"done": sorted(self._done)}

    def set_state(self, state: dict) -> None:
        self._done = set(state.get("done", ()))

    @property
    def client(self):
        if self._mlflow is None:
            self._mlflow = _client(self.store)
            self._exp_id = experiment_id(self._mlflow, self.store, self.experiment)
        return self._mlflow

    # -- runs ---------------------------------------------------------------------------------
    def run_id(self, trial) -> str:
        """The trial's run: this process's, else found by tag (after a restore), else a new one."""
        tid = trial.trial_id
        if tid in self._runs:
            return self._runs[tid]
        client = self.client
        run = find_run(client, self._exp_id, tid)
        if run is not None:
            self._logged[tid] = run.data.metrics.get("epoch", 0.0)
            if run.info.status != "RUNNING" and tid not in self._done:
                client.update_run(run.info.run_id, status="RUNNING")
            self._runs[tid] = run.info.run_id
            return run.info.run_id
        from mlflow.entities import Param

        tags = {TAG_SWEEP: self.experiment, TAG_TRIAL: tid, TAG_TRIAL_NAME: str(trial), TAG_STATUS: "running"}
        run = client.create_run(self._exp_id, run_name=str(trial), tags=tags)
        params = {k: v for k, v in self.spec.config(trial.config).to_flat().items()}
        params.update({k: v for k, v in trial.config.items() if "." not in k})  # bundle labels
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        self._runs[tid], self._logged[tid] = run.info.run_id, 0.0
        return run.info.run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "running")

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.on_trial_start(iteration, trials, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric

        run_id = self.run_id(trial)
        epoch = float(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._logged.get(trial.trial_id, 0.0):
            return  # re-reported after a retry/restore from an older checkpoint: logged already
        now = int(time.time() * 1000)
        metrics = [
            Metric(k, float(v), now, int(epoch))
            for k, v in sorted(result.items())
            if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        ]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000])
        self._logged[trial.trial_id] = epoch

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "retrying")
        self.client.set_tag(self.run_id(trial), TAG_REASON, f"retry {trial.num_failures}: {error_reason(trial)}")

    def on_trial_complete(self, iteration, trials, trial, **info):
        cfg = self.spec.config(trial.config)
        reached = int((trial.last_result or {}).get("epoch", 0))
        if reached >= cfg.train.epochs:
            status, reason = "finished", f"all {cfg.train.epochs} epochs"
        else:
            status, reason = "early_stopped", f"stopped by the scheduler at epoch {reached} of {cfg.train.epochs}"
        self._end(trial, status, reason, "FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed", error_reason(trial), "FAILED")

    def on_experiment_end(self, trials, **info):
        for trial in trials:
            if trial.trial_id in self._runs and trial.trial_id not in self._done:
                run_id = self._runs[trial.trial_id]
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                self.client.set_tag(
                    run_id, TAG_REASON, "the sweep stopped before this trial ended; --resume continues it"
                )
                self.client.set_terminated(run_id, status="KILLED")

    def _end(self, trial, status: str, reason: str, mlflow_status: str) -> None:
        run_id = self.run_id(trial)
        client = self.client
        client.log_text(run_id, self.spec.config(trial.config).to_json(), "config.json")
        best = _best_checkpoint(trial)
        if best is not None:
            metrics = {k: v for k, v in best.metrics.items() if k.split(".")[0].endswith("_eer")}
            client.log_text(run_id, _condition_csv(metrics), "eer_by_condition.csv")
            client.log_text(run_id, json.dumps(best.metrics, indent=2, sort_keys=True, default=str), "best_result.json")
            if self.log_checkpoint and best.checkpoint is not None:
                with best.checkpoint.as_directory() as folder:
                    client.log_artifacts(run_id, folder, "best_checkpoint")
        client.set_tag(run_id, TAG_STATUS, status)
        client.set_tag(run_id, TAG_REASON, reason)
        client.set_terminated(run_id, status=mlflow_status)
        self._done.add(trial.trial_id)


def _best_checkpoint(trial):
    """Tune's best checkpoint of a trial (by the CheckpointConfig score, dev EER) with its result."""
    manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    return getattr(manager, "best_checkpoint_result", None)


def _condition_csv(metrics: dict[str, float]) -> str:
    """``condition,dev_eer,test_eer`` rows (``all`` first) of the per-condition EERs in ``metrics``."""
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        name, _, condition = key.partition(".")
        table.setdefault(condition or "all", {})[name] = value
    cols = sorted({c for row in table.values() for c in row})
    lines = [",".join(["condition"] + cols)]
    for cond in sorted(table, key=lambda c: (c != "all", c)):
        lines.append(",".join([cond] + [f"{table[cond][c]:.4f}" if c in table[cond] else "" for c in cols]))
    return "\n".join(lines) + "\n"


def runs_frame(tracking_uri: str | None, experiment: str):
    """One row per MLflow run of a sweep: trial_id, run_id, mlflow_status, status tag (for the report)."""
    import pandas as pd

    store = resolve_store(tracking_uri)
    client = _client(store)
    found = client.get_experiment_by_name(experiment)
    cols = ["trial_id", "run_id", "mlflow_status", "mlflow_status_tag"]
    if found is None:
        return pd.DataFrame(columns=cols)
    runs = client.search_runs([found.experiment_id], max_results=50000)
    rows = [[r.data.tags.get(TAG_TRIAL), r.info.run_id, r.info.status, r.data.tags.get(TAG_STATUS)] for r in runs]
    return pd.DataFrame(rows, columns=cols)


def server_command(store: Store, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        store.uri,
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if store.artifact_location:
        cmd += ["--artifacts-destination", store.artifact_location]
    return cmd


def start_server(store: Store, host: str = "127.0.0.1", port: int = 5000) -> subprocess.Popen:
    """``mlflow server`` on ``store`` in its own process group (stop it with ``os.killpg``)."""
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    if store.uri.startswith("sqlite:///") and not Path(store.uri[len("sqlite:///") :]).is_file():
        raise SourcetraceError(f"no MLflow store at {store.uri}: run a sweep first or pass --tracking-uri")
    return subprocess.Popen(server_command(store, host, port), env=env, start_new_session=True)


def cli_ui(args) -> int:
    """``sourcetrace ui``: the MLflow UI on the sweep store until Ctrl-C, then the whole group is stopped."""
    if args.tracking_uri and args.tracking_uri.startswith(("http://", "https://")):
        raise SourcetraceError(f"{args.tracking_uri} is a server already: open it in a browser")
    store = resolve_store(args.tracking_uri)
    proc = start_server(store, args.host, args.port)
    print(f"MLflow UI on http://{args.host}:{args.port} (store {store.uri}); Ctrl-C stops it", flush=True)
    # SIGTERM (e.g. a killpg of this command's group) must still stop the server's own group below.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def log_reference_run(tracking_uri: str, experiment: str, name: str, params: dict, metrics: dict) -> str:
    """A finished run beside a sweep's trials that is no trial (the featureless baseline); returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    store = resolve_store(tracking_uri)
    client = _client(store)
    run = client.create_run(experiment_id(client, store, experiment), run_name=name, tags={"reference": name})
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if math.isfinite(float(v))],
        params=[Param(k, str(v)) for k, v in params.items()],
        tags=[RunTag(TAG_SWEEP, experiment)],
    )
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id
