"""MLflow's store of the sweeps (no Ray): where runs go, creating, finding and reading them.

Default store (embedded): sqlite ``./mlruns/mlflow.db`` with artefacts in ``./mlruns/artifacts``, both
resolved against the working directory when the sweep starts. ``--tracking-uri http://...`` logs to a
server instead. Runs are written by the Tune driver's callback (``callback.py``), the baseline and the
bundle export; read by the report and served by ``sourcetrace ui``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.errors import SourcetraceError, StorageError, StorageFault

TAG_SWEEP, TAG_TRIAL, TAG_TRIAL_NAME, TAG_STATUS, TAG_REASON = (
    "sweep",
    "trial_id",
    "trial_name",
    "status",
    "status_reason",
)
TAG_ROLE = "role"  # of every run of a sweep: trial | baseline | fusion
ROLES = ("trial", "baseline", "fusion")
TAG_HANDED_OVER = "sourcetrace.handed_over"  # "true" on the one run whose model the sweep hands over
TAG_REFERENCE = "reference"  # the name of a run that is no trial (the baseline, the fusion)
TAG_COMMIT = "mlflow.source.git.commit"
TAG_NOTE = "mlflow.note.content"  # the run page's description

# The metric vocabulary of every run of a sweep (trials, baseline, fusion), grouped by the prefix before "/"
# (one section each in MLflow's chart view):
#   best_<m>               the best evaluation's overall metrics (best_dev_eer, best_test_eer, best_dev_min_dcf
#                          ...) and best_epoch, the epoch they come from (trials only); the runs table's headline
#   condition/best_<m>.<c> the best evaluation per condition (condition/best_dev_eer.lang_seen___model_seen)
#   openset/best_<m>       the best evaluation's open-set metrics (openset/best_dev_openset_auroc ...)
#   epoch/<m>              a trial's per-epoch curves, step = epoch (epoch/train_loss, epoch/dev_eer ...);
#                          test_* only at the epochs it was measured
#   condition/<m>.<c>, openset/<m>   the same per epoch, per condition and open-set
#   epoch                  the last epoch a trial reported
EVALUATED = ("dev_", "test_")  # keys of an evaluation, logged again as best_* at the best one


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


TAG_KIND, KIND_TRAINING = "mlflow.experimentKind", "custom_model_development"


def experiment_id(client, store: Store, name: str) -> str:
    """The experiment ``name``, created (as a classic training experiment, not a GenAI one) if missing."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{store.artifact_location}/{name}" if store.artifact_location else None
    return client.create_experiment(name, artifact_location=location, tags={TAG_KIND: KIND_TRAINING})


def metric_name(key: str, best: bool = False) -> str:
    """The MLflow name of a result key (see the vocabulary above): per epoch, or of the best evaluation.

    >>> metric_name("dev_eer", best=True), metric_name("dev_eer"), metric_name("train_loss")
    ('best_dev_eer', 'epoch/dev_eer', 'epoch/train_loss')
    >>> metric_name("test_eer.lang_seen___model_unseen", best=True), metric_name("dev_openset_auroc")
    ('condition/best_test_eer.lang_seen___model_unseen', 'openset/dev_openset_auroc')
    """
    name = f"best_{key}" if best else key
    if "." in key:
        return f"condition/{name}"
    if "_openset_" in key:
        return f"openset/{name}"
    return name if best or key == "epoch" else f"epoch/{name}"


def best_metrics(metrics: dict, epoch: float | None = None) -> dict[str, float]:
    """The headline metrics of one evaluation (``dev_*``/``test_*`` keys, finite values), ``best_epoch`` too
    when it has an epoch: what every run of a sweep, trial, baseline or fusion, logs under the same names."""
    out = {
        metric_name(k, best=True): float(v)
        for k, v in metrics.items()
        if k.startswith(EVALUATED) and _number(v) and math.isfinite(v)
    }
    return out | ({"best_epoch": float(epoch)} if epoch is not None else {})


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def best_note(metrics: dict, epoch: float | None = None) -> str:
    """The run's description: where its headline metrics come from.

    >>> best_note({"dev_eer": 12.0, "test_eer": 13.5}, 2)
    'Best evaluation: epoch 2, dev EER 12.00 %, test EER 13.50 % (test measured at that epoch).'
    """
    where = f"epoch {int(epoch)}" if epoch is not None else "one evaluation, no training epochs"
    parts = [f"{split} EER {metrics[f'{split}_eer']:.2f} %" for split in ("dev", "test") if f"{split}_eer" in metrics]
    tail = " (test measured at that epoch)" if epoch is not None and "test_eer" in metrics else ""
    return f"Best evaluation: {where}, " + ", ".join(parts or ["no EER"]) + tail + "."


def run_tags(root: str | Path, protocol: str | None = None, commit: str | None = None) -> dict[str, str]:
    """Tags of every run of a sweep: the git commit of the code (when a checkout) and the dataset (corpus
    folder and its name, the protocol, the SHA-256 of its CSV files)."""
    from sourcetrace.data.protocol import protocol_checksum

    tags = {
        "dataset.name": Path(root).resolve().name,
        "dataset.root": str(root),
        "dataset.protocol": str(protocol or "protocol"),
        "dataset.protocol_sha256": protocol_checksum(root, protocol or None),
    }
    if commit is None:
        from sourcetrace.bundle.card import git_commit

        commit = git_commit()
    return tags | ({TAG_COMMIT: commit} if commit else {})


def log_dataset(client, run_id: str, tags: dict[str, str]) -> None:
    """The run's dataset as an MLflow dataset input (the runs table's Dataset column), from ``run_tags``."""
    if "dataset.name" not in tags:
        return
    from mlflow.entities import Dataset, DatasetInput

    source = json.dumps({"uri": Path(tags["dataset.root"]).resolve().as_uri(), "protocol": tags["dataset.protocol"]})
    digest = tags.get("dataset.protocol_sha256", "")[:8] or "unknown"
    client.log_inputs(run_id, datasets=[DatasetInput(Dataset(tags["dataset.name"], digest, "local", source))])


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


def mark_interrupted(store: Store, experiment: str, trial_ids) -> None:
    """Close the runs of trials a signal cut short as KILLED, tagged "interrupted": Tune's graceful stop may
    have completed them on its way out (FINISHED, early-stopped), though the experiment keeps them for
    ``--resume``, which reopens the same runs."""
    client = client_for(store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return
    for trial_id in trial_ids:
        run = find_run(client, found.experiment_id, trial_id)
        if run is None:
            continue
        client.set_tag(run.info.run_id, TAG_STATUS, "interrupted")
        client.set_tag(run.info.run_id, TAG_REASON, "the sweep stopped before this trial ended; --resume continues it")
        client.set_terminated(run.info.run_id, status="KILLED")


def store_errors() -> tuple[type[BaseException], ...]:
    """What a failing store raises through mlflow: its own errors, sqlite/SQLAlchemy's, OS and HTTP errors."""
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    return (MlflowException, SQLAlchemyError, sqlite3.Error, OSError)  # requests' errors are OSErrors


_FAILED: dict[str, str] = {}  # store URI -> why it could not be written (this process; the first reason stays)


def store_failed(store: Store, err: BaseException | None = None) -> str | None:
    """Why ``store`` could not be written during this sweep (None: it could), ``err`` recorded first if given.

    The Tune callback records it when a write fails mid-sweep; the end of the sweep then leaves the store alone
    and exits 1 with ``store_fault`` (``--resume`` logs and closes what the runs missed)."""
    if err is not None:
        _FAILED.setdefault(store.uri, failure_reason(err))
    return _FAILED.get(store.uri)


def forget_failure(store: Store) -> None:
    """A new command on ``store``: no failure recorded yet."""
    _FAILED.pop(store.uri, None)


def failure_reason(err: BaseException) -> str:
    """``Type: first line`` of the error at the root of ``err`` (sqlite's, under SQLAlchemy's and MLflow's).

    >>> try:
    ...     try:
    ...         raise sqlite3.OperationalError("unable to open database file")
    ...     except sqlite3.Error as inner:
    ...         raise RuntimeError("(raised as a result of Query-invoked autoflush)") from inner
    ... except RuntimeError as outer:
    ...     failure_reason(outer)
    'OperationalError: unable to open database file'
    """
    root, seen = err, {id(err)}
    while (nxt := root.__cause__ or (None if root.__suppress_context__ else root.__context__)) and id(nxt) not in seen:
        root = nxt
        seen.add(id(root))
    first = (str(root).strip().splitlines() or [""])[0][:300]
    return f"{type(root).__name__}: {first}" if first else type(root).__name__


def store_fault(store: Store, exp_dir: str | Path) -> StorageFault:
    """The sweep's one line (exit 1) once ``store`` has failed: the store, why, and what to run."""
    return StorageFault(
        f"MLflow store {store.uri} cannot be written ({store_failed(store)}); the trials' results and the report "
        f"stand in {exp_dir}: make the store writable and run the same command with --resume, which logs what "
        "the runs missed and closes them"
    )


@contextlib.contextmanager
def noting_failure(store: Store):
    """Around writes to ``store`` at the end of a sweep: its error is recorded (``store_failed``), not raised, and
    MLflow's own traceback of it silenced. A file that cannot be written raises, as a ``StorageFault`` naming it.
    """
    try:
        with quiet_db():
            yield
    except StorageError:
        raise
    except store_errors() as err:
        if isinstance(err, OSError) and err.filename:  # a file (the results folder's or the store's artefacts)
            from sourcetrace.storage import storage_error

            raise storage_error(err, Path(err.filename)) from None
        store_failed(store, err)


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


def log_reference_run(
    tracking_uri: str,
    experiment: str,
    name: str,
    params: dict,
    metrics: dict,
    role: str,
    tags: dict[str, str] | None = None,
) -> str:
    """A finished run beside a sweep's trials that is no trial (``role`` baseline or fusion): its evaluation's
    ``metrics`` logged under the trials' headline names (``best_metrics``), ``tags`` (``run_tags``) on it too;
    returns its id."""
    from mlflow.entities import Metric, Param, RunTag

    if role not in ROLES[1:]:
        raise ValueError(f"role {role!r} of a reference run is not one of {ROLES[1:]}")
    store = resolve_store(tracking_uri)
    client = client_for(store)
    tags = dict(tags or {}) | {TAG_SWEEP: experiment, TAG_ROLE: role, TAG_NOTE: best_note(metrics)}
    run = client.create_run(experiment_id(client, store, experiment), run_name=name, tags={TAG_REFERENCE: name} | tags)
    now = int(time.time() * 1000)
    client.log_batch(
        run.info.run_id,
        metrics=[Metric(k, v, now, 0) for k, v in sorted(best_metrics(metrics).items())],
        params=[Param(k, str(v)[:6000]) for k, v in sorted(params.items())],
        tags=[RunTag(k, str(v)) for k, v in tags.items()],
    )
    log_dataset(client, run.info.run_id, tags)
    client.set_terminated(run.info.run_id, status="FINISHED")
    return run.info.run_id


def mark_handed_over(store: Store, experiment: str, run_id: str) -> None:
    """Tag ``run_id`` as the run whose model the sweep hands over (``sourcetrace.handed_over=true``), the
    tag taken off any other run of the experiment (a resumed sweep may hand over another model)."""
    client = client_for(store)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise SourcetraceError(f"no MLflow experiment {experiment!r} in {store.uri}")
    for run in client.search_runs([found.experiment_id], filter_string=f"tags.`{TAG_HANDED_OVER}` = 'true'"):
        if run.info.run_id != run_id:
            client.delete_tag(run.info.run_id, TAG_HANDED_OVER)
    client.set_tag(run_id, TAG_HANDED_OVER, "true")


def experiment_urls(store: Store, base_url: str) -> dict[str, str]:
    """``{experiment name: URL of its run table}`` under an MLflow UI at ``base_url`` (Default left out)."""
    experiments = client_for(store).search_experiments()
    return {e.name: f"{base_url}/#/experiments/{e.experiment_id}/runs" for e in experiments if e.name != "Default"}
