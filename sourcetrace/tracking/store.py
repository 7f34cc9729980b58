"""MLflow's store of the sweeps (no Ray): where runs go, creating, finding and reading them.

Default store (embedded): sqlite ``./mlruns/mlflow.db`` with artefacts in ``./mlruns/artifacts``, both
resolved against the working directory when the sweep starts. ``--tracking-uri http://...`` logs to a
server instead. Runs are written by the Tune driver's callback (``callback.py``), the baseline and the
bundle export; read by the report and served by ``sourcetrace ui``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.errors import SourcetraceError

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


def client_for(store: Store):
    """An ``MlflowClient`` on ``store`` (the sqlite folder created first)."""
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


TAG_KIND, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"
TAG_DEVICE = "sourcetrace.device"  # run tag: the device a trial trains on (its result key "device")
TAG_STORAGE = "sourcetrace.sweep_folder"  # experiment tag: the Tune folder whose trials the experiment holds


def ensure_experiment(store: Store, name: str, sweep_folder: str | None = None) -> str:
    """Create (or find) the sweep's experiment now: a bad store fails before Ray starts.

    An experiment belongs to one sweep folder (``--storage``/``--name``): a sweep of the same name in another
    folder is refused rather than merged into it.
    """
    try:
        with quiet_db():
            client = client_for(store)
            exp_id = experiment_id(client, store, name)
            tags = client.get_experiment(exp_id).tags
            owner = tags.get(TAG_STORAGE)
            if sweep_folder and owner is None:
                client.set_experiment_tag(exp_id, TAG_STORAGE, sweep_folder)
            if tags.get(TAG_KIND) != KIND_TRAINING:  # the UI's run table and charts, not its GenAI traces view
                client.set_experiment_tag(exp_id, TAG_KIND, KIND_TRAINING)
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


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises through mlflow: its own errors, sqlite/SQLAlchemy's, OS and HTTP errors."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)  # requests' errors are OSErrors


@contextlib.contextmanager
def quiet_db():
    """MLflow's sqlite store logs every failure with its traceback: we report it as one line instead."""
    db_log = logging.getLogger("mlflow.store.db.utils")
    level = db_log.level
    db_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        db_log.setLevel(level)


def log_artifact_dir(store: Store, run_id: str, folder: str | Path, artifact_path: str) -> None:
    """Upload a folder (the best trial's bundle) to a run, so it downloads from the UI."""
    try:
        client_for(store).log_artifacts(run_id, str(folder), artifact_path)
    except Exception as err:  # an unreachable or read-only store: the bundle on disk stays usable
        print(f"note: could not log {folder} to MLflow run {run_id}: {type(err).__name__}: {err}", file=sys.stderr)


def runs_frame(tracking_uri: str | None, experiment: str):
    """One row per MLflow run of a sweep's trials: trial_id, run_id (the report's link to MLflow)."""
    import pandas as pd  # only the report needs it; ``sourcetrace ui`` imports this module too

    client = client_for(resolve_store(tracking_uri))
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return pd.DataFrame(columns=["trial_id", "run_id"])
    runs = client.search_runs([found.experiment_id], max_results=50000)
    rows = [[r.data.tags[TAG_TRIAL], r.info.run_id] for r in runs if TAG_TRIAL in r.data.tags]
    return pd.DataFrame(rows, columns=["trial_id", "run_id"])


def log_reference_run(tracking_uri: str, experiment: str, name: str, params: dict, metrics: dict) -> str:
    """A finished run beside a sweep's trials that is no trial (the featureless baseline); returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    store = resolve_store(tracking_uri)
    client = client_for(store)
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


def experiment_urls(store: Store, base_url: str) -> dict[str, str]:
    """``{experiment name: URL of its run table}`` under an MLflow UI at ``base_url`` (Default left out)."""
    experiments = client_for(store).search_experiments()
    return {e.name: f"{base_url}/#/experiments/{e.experiment_id}/runs" for e in experiments if e.name != "Default"}
