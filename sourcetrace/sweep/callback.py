"""A driver-side Tune callback writing one MLflow run per trial.

It runs in the Tune driver only (one writer, no sqlite lock contention) and owns each run's life cycle:
one run per trial, found again by its ``trial_id`` tag after a restore.
"""

from __future__ import annotations

import functools
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from mlflow.entities import Metric, Param, RunTag
from ray.tune import Callback

from sourcetrace.sweep.status import error_reason, trial_status
from sourcetrace.sweep.trainable import CHECKPOINT_SCORE
from sourcetrace.tracking.store import (
    TAG_DEVICE,
    TAG_NOTE,
    TAG_REASON,
    TAG_ROLE,
    TAG_STATUS,
    TAG_SWEEP,
    TAG_TRIAL,
    TAG_TRIAL_NAME,
    Store,
    best_metrics,
    best_note,
    client_for,
    experiment_id,
    find_run,
    log_dataset,
    metric_name,
    quiet_db,
    store_errors,
    store_failed,
)
from sourcetrace.training.faults import FAILURE_FLAGS
from sourcetrace.validation import used_params

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
    "training_iteration",  # = epoch (one report per epoch)
    "iterations_since_restore",
    "timesteps_total",
    "episodes_total",
    "timesteps_since_restore",
    "time_this_iter_s",
    "should_checkpoint",
    "checkpoint_dir_name",
}


def _guarded(hook):
    """A failing store (unwritable, full, unreachable) is one line on stderr, not a traceback that ends the
    sweep: training goes on, later hooks are skipped, and ``--resume`` logs and closes what was missed."""

    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        if self._broken:
            return None
        try:
            with quiet_db():
                return hook(self, *args, **kwargs)
        except store_errors() as err:
            if self._broken:  # a hook nested in another (a back-fill) has said it already
                return None
            self._broken = store_failed(self.store, err)  # the sweep then ends with exit 1 (sweep/run.py)
            print(
                f"sourcetrace sweep: MLflow store {self.store.uri} cannot be written ({self._broken}); "
                "training goes on, and --resume logs and closes the runs once the store is writable",
                file=sys.stderr,
                flush=True,
            )
            return None

    return wrapper


class MlflowTrialCallback(Callback):
    """One MLflow run per Tune trial: flat params, per-epoch metrics (step = epoch), status tags, artefacts.

    ``name_keys``: the sweep's searched SPACE keys, whose values name each run (``run_name``); default: every
    key of a trial's config."""

    def __init__(
        self,
        store: Store,
        experiment: str,
        spec,
        log_checkpoint: bool = True,
        tags: dict | None = None,
        name_keys: list[str] | None = None,
    ):
        self.store, self.experiment, self.spec, self.log_checkpoint = store, experiment, spec, log_checkpoint
        self.tags = dict(tags or {})  # of every run: git commit, dataset root and protocol checksum
        self.name_keys = list(name_keys) if name_keys is not None else None
        self._runs: dict[str, str] = {}  # trial id -> run id (this process)
        self._logged: dict[str, float] = {}  # trial id -> last epoch logged
        self._best: dict[str, float] = {}  # trial id -> lowest dev EER logged as best_dev_eer
        self._done: set[str] = set()
        self._mlflow = None
        self._exp_id: str | None = None
        self._broken: str | None = None  # why the store failed, once it has

    def __getstate__(self):  # Tune pickles the callback into the experiment; clients do not travel
        skip = ("_mlflow", "_exp_id", "_runs", "_logged", "_best", "_broken")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state):
        self.__dict__.update({"name_keys": None} | state)  # a callback pickled before runs were named by keys
        self._mlflow, self._exp_id, self._runs, self._logged, self._best, self._broken = None, None, {}, {}, {}, None

    def get_state(self) -> dict:
        return {"done": sorted(self._done)}

    def set_state(self, state: dict) -> None:
        self._done = set(state.get("done", ()))

    @property
    def client(self):
        if self._mlflow is None:
            self._mlflow = client_for(self.store)
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
            self._best[tid] = run.data.metrics.get("best_dev_eer", math.inf)
            if run.info.status != "RUNNING" and tid not in self._done:
                client.update_run(run.info.run_id, status="RUNNING")
            self._runs[tid] = run.info.run_id
            self._backfill(trial)  # a run of an earlier driver: the epochs it missed, before the trial goes on
            return run.info.run_id
        cfg = self.spec.config(trial.config)
        tags = {TAG_SWEEP: self.experiment, TAG_TRIAL: tid, TAG_TRIAL_NAME: str(trial), TAG_STATUS: "running"}
        tags[TAG_ROLE] = "trial"
        keys = self.name_keys if self.name_keys is not None else list(trial.config)
        name = self._unique_name(run_name(cfg, trial.config, keys), tid)
        run = client.create_run(self._exp_id, run_name=name, tags=self.tags | tags)
        params = used_params(cfg) | {k: v for k, v in trial.config.items() if "." not in k}  # + bundle labels
        client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())])
        log_dataset(client, run.info.run_id, self.tags)
        self._runs[tid], self._logged[tid], self._best[tid] = run.info.run_id, 0.0, math.inf
        return run.info.run_id

    def _unique_name(self, name: str, trial_id: str) -> str:
        """``name``, or ``name/<trial id>`` when another run of the sweep has it (same cell and seed)."""
        taken = self.client.search_runs([self._exp_id], filter_string=f"attributes.run_name = '{name}'", max_results=1)
        return f"{name}/{trial_id}" if taken else name

    @_guarded
    def on_trial_start(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "running")

    def on_trial_restore(self, iteration, trials, trial, **info):
        self.on_trial_start(iteration, trials, trial)

    @_guarded
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if any(result.get(flag) for flag in FAILURE_FLAGS):
            return  # the trial's error follows: not an epoch's metrics
        run_id = self.run_id(trial)
        epoch = float(result.get("epoch", result.get("training_iteration", 0)))
        if epoch <= self._logged.get(trial.trial_id, 0.0):
            return  # re-reported after a retry/restore from an older checkpoint: logged already
        now = int(time.time() * 1000)
        numbers = {
            k: float(v)
            for k, v in sorted(result.items())
            if k not in _NOT_METRICS and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        }  # test_* only at the epochs it was measured: logged at those steps only
        metrics = [Metric(metric_name(k), v, now, int(epoch)) for k, v in numbers.items()]
        device = result.get("device")  # the device the trial trains on, a tag in the same call
        tags = [RunTag(TAG_DEVICE, device)] if isinstance(device, str) else []
        dev = numbers.get("dev_eer")
        if dev is not None and dev < self._best.get(trial.trial_id, math.inf):
            self._best[trial.trial_id] = dev  # the evaluation the report and Table 1 take: the lowest dev EER
            best = best_metrics(numbers, epoch)
            metrics += [Metric(k, v, now, int(epoch)) for k, v in sorted(best.items())]
            tags.append(RunTag(TAG_NOTE, best_note(numbers, epoch)))
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(run_id, metrics=metrics[i : i + 1000], tags=tags if i == 0 else [])
        self._logged[trial.trial_id] = epoch

    @_guarded
    def on_trial_recover(self, iteration, trials, trial, **info):
        self.client.set_tag(self.run_id(trial), TAG_STATUS, "retrying")
        self.client.set_tag(self.run_id(trial), TAG_REASON, f"retry {trial.num_failures}: {_error(trial)}")

    @_guarded
    def on_trial_complete(self, iteration, trials, trial, **info):
        reached = int((trial.last_result or {}).get("epoch", 0))
        status, reason = trial_status("TERMINATED", reached, self.spec.config(trial.config).train.epochs)
        self._end(trial, status, reason, "FINISHED")

    @_guarded
    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial, "failed", _error(trial), "FAILED")

    @_guarded
    def on_experiment_end(self, trials, **info):
        for trial in trials:  # ended while the store was failing: log what was missed and close the run
            if trial.trial_id not in self._done and getattr(trial, "status", None) in ("TERMINATED", "ERROR"):
                self._backfill(trial)
                (self.on_trial_complete if trial.status == "TERMINATED" else self.on_trial_error)(0, trials, trial)
        for trial in trials:  # cut short by a signal: Tune may have completed it (FINISHED) on its way out
            status = getattr(trial, "status", None)
            cut_short = status is not None and status not in ("TERMINATED", "ERROR")
            if trial.trial_id in self._runs and (trial.trial_id not in self._done or cut_short):
                run_id = self._runs[trial.trial_id]
                self.client.set_tag(run_id, TAG_STATUS, "interrupted")
                self.client.set_tag(
                    run_id, TAG_REASON, "the sweep stopped before this trial ended; --resume continues it"
                )
                self.client.set_terminated(run_id, status="KILLED")

    def _backfill(self, trial) -> None:
        """Log a trial's per-epoch results from its ``result.json`` in the sweep folder (``trial.path``; the
        driver's staging copy, ``local_path``, is a new empty folder after a restore); logged epochs are skipped."""
        for folder in (getattr(trial, "path", None), getattr(trial, "local_path", None)):
            path = Path(folder or ".") / "result.json"
            if folder and path.is_file():
                for line in path.read_text().splitlines():
                    if line.strip():
                        self.on_trial_result(0, [], trial, json.loads(line))
                return

    def _log_curve(self, run_id: str, title: str) -> None:
        """The trial's learning curve (``learning_curve.png``): training loss, dev and test EER per epoch."""
        histories = {
            key: [(m.step, m.value) for m in self.client.get_metric_history(run_id, metric_name(key))]
            for key in CURVE_KEYS
        }
        if not any(histories.values()):
            return
        with tempfile.TemporaryDirectory() as tmp:
            try:
                png = learning_curve_png(histories, Path(tmp) / CURVE_FILE, title)
            except (ValueError, RuntimeError) as err:  # a figure that cannot be drawn: the run stands without it
                print(f"note: no learning curve for run {run_id}: {type(err).__name__}: {err}", file=sys.stderr)
                return
            self.client.log_artifact(run_id, str(png))

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
        self._log_curve(run_id, f"{client.get_run(run_id).info.run_name} ({trial})")
        client.set_tag(run_id, TAG_STATUS, status)
        client.set_tag(run_id, TAG_REASON, reason)
        client.set_terminated(run_id, status=mlflow_status)
        self._done.add(trial.trial_id)


BARE_KEYS = ("model.name", "recipe", "loss.name", "sampler.name")  # named by their value alone, in this order
SUFFIX_KEYS = ("model.embedding_dim", "train.seed")  # d<dim>/s<seed>, ending every name


def run_name(cfg, trial_config: dict | None = None, keys=None) -> str:
    """A trial's run name from the values of the sweep's searched SPACE ``keys``: ``BARE_KEYS`` by their value,
    the others as ``<key>=<value>`` (the key's last part unless two keys share it), then ``d<dim>/s<seed>``.

    >>> from sourcetrace.config import Config
    >>> cfg = Config.from_dict({"train.seed": 2, "model.embedding_dim": 10})
    >>> run_name(cfg, {"recipe": "ge2e/balanced", "model.embedding_dim": 10}, ["recipe", "model.embedding_dim"])
    'ge2e/balanced/d10/s2'
    >>> run_name(Config(), {"front": "log-mel+bands", "train.lr": 0.00125}, ["front", "train.lr"])
    'front=log-mel+bands/lr=0.00125/d50/s0'
    >>> run_name(Config())
    'd50/s0'
    """
    trial_config = dict(trial_config or {})
    keys = [k for k in (keys if keys is not None else trial_config) if k in trial_config]
    parts = [_value(trial_config[k]) for k in BARE_KEYS if k in keys]
    others = [k for k in keys if k not in BARE_KEYS and k not in SUFFIX_KEYS]
    last = [k.rsplit(".", 1)[-1] for k in others]
    parts += [f"{k if last.count(short) > 1 else short}={_value(trial_config[k])}" for k, short in zip(others, last)]
    return "/".join(parts + [f"d{cfg.model.embedding_dim}", f"s{cfg.train.seed}"])


def _value(value) -> str:
    """A searched value, short: floats with 3 significant digits (``0.00125``, ``3e-05``), the rest as text."""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


CURVE_KEYS = ("train_loss", "dev_eer", "test_eer")
CURVE_FILE = "learning_curve.png"


def learning_curve_png(histories: dict[str, list[tuple[int, float]]], path: Path, title: str) -> Path:
    """A PNG of ``{key: [(epoch, value)]}``: the training loss on the left axis, EERs (%) on the right one,
    each EER a marker at every epoch it was measured, joined across the epochs between (no gaps)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.6))
    FigureCanvasAgg(fig)
    loss_ax = fig.subplots()
    eer_ax = loss_ax.twinx()
    styles = {"train_loss": (loss_ax, "tab:gray", "-"), "dev_eer": (eer_ax, "tab:blue", "-o"),
              "test_eer": (eer_ax, "tab:orange", "--s")}  # fmt: skip
    for key, points in histories.items():
        if points:
            ax, colour, style = styles.get(key, (eer_ax, None, "-"))
            steps, values = zip(*sorted(points))
            ax.plot(steps, values, style, color=colour, label=key, markersize=4)
    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss")
    eer_ax.set_ylabel("EER (%)")
    handles = [h for ax in (loss_ax, eer_ax) for h in ax.get_legend_handles_labels()[0]]
    loss_ax.legend(handles, [h.get_label() for h in handles], loc="upper right", fontsize="small")
    loss_ax.set_title(title, fontsize="medium")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


def _error(trial) -> str:
    return error_reason(getattr(trial, "error_file", None))


def _best_checkpoint(trial):
    """Tune's best checkpoint of a trial (by the CheckpointConfig score, dev EER) with its result; None
    before its first evaluation (a resume-only checkpoint, scored at infinity, is no best)."""
    manager = getattr(getattr(trial, "run_metadata", None), "checkpoint_manager", None)
    best = getattr(manager, "best_checkpoint_result", None)
    return best if best is not None and math.isfinite(best.metrics.get(CHECKPOINT_SCORE, 0.0)) else None


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
