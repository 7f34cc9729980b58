"""The only module that imports mlflow: the sweep's store and a driver-side Tune callback (the UI: ``ui.py``).

Default store (embedded): sqlite ``./mlruns/mlflow.db`` with artefacts in ``./mlruns/artifacts``, both
resolved against the working directory when the sweep starts. ``--tracking-uri http://...`` logs to a
server instead. The callback runs in the Tune driver only (one writer, no sqlite lock contention) and
owns each run's life cycle: one run per trial, found again by its ``trial_id`` tag after a restore.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ray.tune import Callback

from sourcetrace.errors import SourcetraceError
from sourcetrace.training.faults import NO_RETRY

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
    folder = Path(tracking_uri.removeprefix("file://")).resolve()  # a file store (needs MLFLOW_ALLOW_FILE_STORE=true)
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


TAG_DEVICE = "sourcetrace.device"  # run tag: the device a trial trains on (its result key "device")
TAG_STORAGE = "sourcetrace.sweep_folder"  # experiment tag: the Tune folder whose trials the experiment holds


def ensure_experiment(store: Store, name: str, sweep_folder: str | None = None) -> str:
    """Create (or find) the sweep's experiment now: a bad store fails before Ray starts.

    An experiment belongs to one sweep folder (``--storage``/``--name``): a sweep of the same name in another
    folder is refused rather than merged into it.
    """
    try:
        with _quiet_db():
            client = _client(store)
            exp_id = experiment_id(client, store, name)
            owner = client.get_experiment(exp_id).tags.get(TAG_STORAGE)
            if sweep_folder and owner is None:
                client.set_experiment_tag(exp_id, TAG_STORAGE, sweep_folder)
    except Exception as err:  # mlflow raises many types for an unreachable or broken store
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise SourcetraceError(f"MLflow store {store.uri} cannot be used: {type(err).__name__}: {first}") from err
    if sweep_folder and owner is not None and owner != sweep_folder:
        raise SourcetraceError(
            f"MLflow experiment {name!r} in {store.uri} holds the sweep at {owner}, not {sweep_folder}: "
            "pass --name for a new sweep name (or --tracking-uri for another store)"
        )
    return exp_id


def find_run(client, exp_id: str, trial_id: str):
    """The run of a trial (by its ``trial_id`` tag), or None."""
    runs = client.search_runs([exp_id], filter_string=f"tags.{TAG_TRIAL} = '{trial_id}'", max_results=2)
    return runs[0] if runs else None


def error_reason(trial, limit: int = 4000) -> str:
    """A failed trial's exception from its error file: a ``SourcetraceError`` in full (it may list many
    files), else the last line; a generic note without an error file."""
    path = getattr(trial, "error_file", None)
    if path and Path(path).is_file():
        text = Path(path).read_text(errors="replace")
        lines = [ln.rstrip() for ln in text.split("\nFailure # ")[-1].splitlines() if ln.strip()]
        ours = [i for i, ln in enumerate(lines) if ln.startswith("sourcetrace.errors.")]
        if ours:
            return "\n".join(ln.strip() for ln in lines[ours[-1] :])[:limit]
        if lines:
            return lines[-1].strip()[:500]
    return "trial failed (no error file)"


def _store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises through mlflow: its own errors, sqlite/SQLAlchemy's, OS and HTTP errors."""
    import sqlite3

    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)  # requests' errors are OSErrors


@contextlib.contextmanager
def _quiet_db():
    """MLflow's sqlite store logs every failure with its traceback: we report it as one line instead."""
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        db_log.setLevel(level)


def _guarded(hook):
    """A failing store (unwritable, full, unreachable) is one line on stderr, not a traceback that ends the
    sweep: training goes on, later hooks are skipped, and ``--resume`` logs and closes what was missed."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        if self._broken:
            return None
        try:
            with _quiet_db():
                return hook(self, *args, **kwargs)
        except _store_errors() as err:
            first = (str(err).strip().splitlines() or [""])[0][:300]
            self._broken = f"{type(err).__name__}: {first}"
            print(
                f"sourcetrace sweep: MLflow store {self.store.uri} cannot be written ({self._broken}); "
                "training goes on, and --resume logs and closes the runs once the store is writable",
                file=sys.stderr,
                flush=True,
            )
            return None

    return wrapper


class MlflowTrialCallback(Callback):
    """One MLflow run per Tune trial: flat params, per-epoch metrics (step = epoch), status tags, artefacts."""

    def __init__(self, store: Store, experiment: str, spec, log_checkpoint: bool = True):
        self.store, self.experiment, self.spec, self.log_checkpoint = store, experiment, spec, log_checkpoint
        self._runs: dict[str, str] = {}  # trial id -> run id (this process)
        self._logged: dict[str, float] = {}  # trial id -> last epoch logged
        self._done: set[str] = set()
        self._mlflow = None
        self._exp_id: str | None = None
        self._broken: str | None = None  # why the store failed, once it has

    def __getstate__(self):  # Tune pickles the callback into the experiment; clients do not travel
        skip = ("_mlflow", "_exp_id", "_runs", "_logged", "_broken")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._mlflow, self._exp_id, self._runs, self._logged, self._broken = None, None, {}, {}, None

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

    @_guarded
    def on_trial_start(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "running")

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.on_trial_start(iteration, trials, trial)

    @_guarded
    def on_trial_result(self, iteration, trials, trial, result, **info):
        from mlflow.entities import Metric, RunTag

        if result.get(NO_RETRY):
            return  # the trial's error follows: not an epoch's metrics
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
        device = result.get("device")  # the device the trial trains on, a tag in the same call
        tags = [RunTag(TAG_DEVICE, device)] if isinstance(device, str) else []
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000], tags=tags if i == 0 else [])
        self._logged[trial.trial_id] = epoch

    @_guarded
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "retrying")
        self.client.set_tag(self.run_id(trial), TAG_REASON, f"retry {trial.num_failures}: {error_reason(trial)}")

    @_guarded
    def on_trial_complete(self, iteration, trials, trial, **info):
        cfg = self.spec.config(trial.config)
        reached = int((trial.last_result or {}).get("epoch", 0))
        if reached >= cfg.train.epochs:
            status, reason = "finished", f"all {cfg.train.epochs} epochs"
        else:
            status, reason = "early_stopped", f"stopped by the scheduler at epoch {reached} of {cfg.train.epochs}"
        self._end(trial, status, reason, "FINISHED")

    @_guarded
    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed", error_reason(trial), "FAILED")

    @_guarded
    def on_experiment_end(self, trials, **info):
        for trial in trials:  # ended while the store was failing: log what was missed and close the run
            if trial.trial_id not in self._done and getattr(trial, "status", None) in ("TERMINATED", "ERROR"):
                self._backfill(trial)
                (self.on_trial_complete if trial.status == "TERMINATED" else self.on_trial_error)(0, trials, trial)
        for trial in trials:
            if trial.trial_id in self._runs and trial.trial_id not in self._done:
                run_id = self._runs[trial.trial_id]
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                self.client.set_tag(
                    run_id, TAG_REASON, "the sweep stopped before this trial ended; --resume continues it"
                )
                self.client.set_terminated(run_id, status="KILLED")

    def _backfill(self, trial) -> None:
        """Log a trial's per-epoch results from its ``result.json`` (epochs logged already are skipped)."""
        path = Path(getattr(trial, "local_path", None) or ".") / "result.json"
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    self.on_trial_result(0, [], trial, json.loads(line))

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


def log_artifact_dir(store: Store, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Upload a folder (the best trial's bundle) to a run, so it downloads from the UI."""
    try:
        _client(store).log_artifacts(run_id, str(folder), artifact_path)
    except Exception as err:  # an unreachable or read-only store: the bundle on disk stays usable
        print(f"note: could not log {folder} to MLflow run {run_id}: {type(err).__name__}: {err}", file=sys.stderr)


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
