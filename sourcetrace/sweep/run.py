"""Run a validated sweep with Ray Tune (local embedded Ray or a cluster); ``commands/sweep.py`` reports it."""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sourcetrace.errors import SourcetraceError
from sourcetrace.interrupt import sigterm_stops_tune
from sourcetrace.nodecheck import check_nodes
from sourcetrace.storage import local_path, storage_error, writable_folder
from sourcetrace.sweep.record import Launch, prepare, write_record
from sourcetrace.sweep.spec import SweepFile, TuneSettings, load_sweep, n_train_classes, validate
from sourcetrace.training.preflight import preflight

TABLE_COLUMNS = {"epoch": "epoch", "dev_eer": "dev EER %"}  # Tune's status table, beside its own columns


def _runtime_env_vars() -> dict[str, str]:
    """What trials on a ``ray start`` cluster need from the driver's environment (workers don't inherit it)."""
    prefixes = ("SOURCETRACE_", "HF_", "TRANSFORMERS_", "TORCH_", "OMP_", "MKL_", "CUBLAS_", "PYTORCH_")
    env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    return env | {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}


def quiet_ray(verbose: bool) -> None:
    """Unless ``verbose``: Tune's classic status table (with dev EER) instead of its result dumps."""
    if not verbose:
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


def cluster_address(address: str | None) -> str | None:
    """The Ray cluster to join: ``--address``, else Ray's own ``RAY_ADDRESS``, else None (local embedded Ray)."""
    return address or os.environ.get("RAY_ADDRESS") or None


def start_ray(address: str | None, verbose: bool = False, dashboard: bool = False) -> bool:
    """Local embedded Ray bound to 127.0.0.1 with Ray's token auth, or a cluster; True if this call started it.

    Quiet unless ``verbose``: the trials' own logs stay in their folders. ``dashboard``: Ray's dashboard on
    127.0.0.1 (local Ray), its URL printed.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        from sourcetrace.localray import loopback_only

        loopback_only()
    import ray

    if ray.is_initialized():
        return False
    level = "WARNING" if verbose else "ERROR"
    if address is None:
        ctx = ray.init(
            include_dashboard=dashboard, dashboard_host="127.0.0.1", logging_level=level, log_to_driver=verbose
        )
        if dashboard:
            print(f"Ray dashboard: http://{ctx.dashboard_url}", flush=True)
    else:
        env = {"env_vars": _runtime_env_vars()}
        ray.init(address=address, runtime_env=env, logging_level=level, log_to_driver=verbose)
    return True


def check_dashboard() -> None:
    """``--dashboard`` needs Ray's dashboard packages: a clear error before anything is read."""
    missing = [m for m in ("aiohttp_cors", "opencensus", "prometheus_client") if not importlib.util.find_spec(m)]
    if missing:
        raise SourcetraceError(
            f"--dashboard needs Ray's dashboard packages ({', '.join(missing)} missing): "
            "pip install 'sourcetrace[dashboard]'"
        )


def placement(resources: dict[str, float]):
    from ray import tune

    bundle = {{"cpu": "CPU", "gpu": "GPU"}.get(k, k): float(v) for k, v in resources.items() if float(v) > 0}
    return tune.PlacementGroupFactory([bundle])


def check_resources(resources: dict[str, float], local: bool) -> None:
    """A trial that can never be placed is an error now, not a sweep pending forever."""
    import ray

    have = ray.cluster_resources()
    for key, need in placement(resources).required_resources.items():
        if need > have.get(key, 0):
            msg = f"each trial asks for {need:g} {key} (RESOURCES) but this Ray cluster has {have.get(key, 0):g}"
            if local:
                raise SourcetraceError(msg + "; lower RESOURCES, run --smoke, or pass --address of a GPU cluster")
            print(f"note: {msg}; waiting for the autoscaler", file=sys.stderr)


def _searcher(settings: TuneSettings):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class EvalOnlyOptunaSearch(OptunaSearch):
        """Optuna sees the evaluation epochs only (the others carry no dev EER)."""

        def on_trial_result(self, trial_id, result):
            if self.metric in result:
                super().on_trial_result(trial_id, result)

    return EvalOnlyOptunaSearch(sampler=optuna.samplers.TPESampler(seed=settings.seed))


def build_tuner(sweep: SweepFile, configs: list, exp_dir: Path, store, resume: bool, tags: dict, verbose: bool):
    """The ``tune.Tuner`` of a validated sweep (or its restore from ``exp_dir``); ``tags`` go on every run."""
    # Ray, MLflow and torch load here, after every trial config and audio file has been checked.
    from ray import tune
    from ray.tune import CLIReporter
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sourcetrace.sweep.callback import MlflowTrialCallback
    from sourcetrace.sweep.halving import GroupedHalving, SyncHalvingScheduler
    from sourcetrace.sweep.progress import ProgressLines
    from sourcetrace.sweep.retry import CodeErrorLimit, NoRetryCallback, failure_config
    from sourcetrace.sweep.spec import fuse_groups, searched_keys
    from sourcetrace.sweep.trainable import CHECKPOINT_SCORE, run_trial

    s = sweep.tune
    trial = tune.with_parameters(run_trial, spec=sweep.spec, metric=s.metric, mode=s.mode)
    trainable = tune.with_resources(trial, placement(sweep.resources))
    if resume:
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    epochs = max(cfg.train.epochs for _, cfg in configs)
    scheduler = FIFOScheduler()
    grace = min(s.grace_period or min(cfg.train.eval_every for _, cfg in configs), epochs)
    if s.scheduler == "asha":
        scheduler = ASHAScheduler(
            time_attr=s.time_attr, max_t=epochs, grace_period=grace, reduction_factor=s.reduction_factor
        )
    elif s.scheduler == "halving":
        halving = dict(
            time_attr=s.time_attr, metric=s.metric, mode=s.mode, grace=grace,
            reduction_factor=s.reduction_factor, max_t=epochs,
        )  # fmt: skip
        if s.fuse:  # each value of the fused key keeps its own best trial
            scheduler = GroupedHalving(s.fuse, fuse_groups(sweep, configs), **halving)
        else:
            scheduler = SyncHalvingScheduler(n_trials=len(configs) * s.num_samples, **halving)
    tune_config = tune.TuneConfig(
        metric=s.metric,
        mode=s.mode,
        scheduler=scheduler,
        search_alg=_searcher(s) if s.search == "optuna" else None,
        num_samples=s.num_samples,
        max_concurrent_trials=s.max_concurrent or None,
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=exp_dir.name,
        storage_path=str(exp_dir.parent),
        verbose=2 if verbose else 1,
        progress_reporter=None if verbose else CLIReporter(metric_columns=TABLE_COLUMNS, max_report_frequency=60),
        callbacks=[
            MlflowTrialCallback(store, sweep.name, sweep.spec, s.log_checkpoint, tags, searched_keys(sweep.space)),
            NoRetryCallback(),
            CodeErrorLimit(s.max_failures),
            *([] if verbose else [ProgressLines(sweep.spec)]),
        ],
        # Checkpoints are ranked by CHECKPOINT_SCORE, which every checkpoint carries: the metric at evaluations,
        # its worst value at resume-only ones. Ray 2.60's _CheckpointManager.register_checkpoint appends a
        # checkpoint lacking the score attribute after the sorted ones, i.e. as the best, evicting a real best
        # one. A worst-scored resume checkpoint is evicted first instead, yet the newest one survives until the
        # next checkpoint: "results_to_delete = worst_results - {self._latest_checkpoint_result}" there, and a
        # retry restores Trial.checkpoint, the latest checkpoint, so a lost trial loses <= checkpoint_every epochs.
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=s.keep_checkpoints,
            checkpoint_score_attribute=CHECKPOINT_SCORE,
            checkpoint_score_order=s.mode,
        ),
        failure_config=failure_config(s),
    )
    return tune.Tuner(trainable, param_space=sweep.space, tune_config=tune_config, run_config=run_config)


@dataclass
class Ran:
    """A sweep that ``run_sweep`` launched (or found ended): where it is, and the signal that stopped it."""

    exp_dir: Path
    store: Any  # tracking.store.Store
    sweep: SweepFile
    signal: int | None = None  # SIGINT / SIGTERM when one cut it short


def run_sweep(how: Launch) -> Ran:
    """Validate every trial of ``how.sweep_file``, then run Tune (one MLflow run each) until the trials end.

    Run again with the same file, name and storage, it resumes the sweep's unfinished trials, or does nothing
    for a sweep that has ended; a changed sweep file or other settings are refused. The end of the run
    (baseline, fusion, reports, export) is ``commands/sweep.finish``.
    """
    from sourcetrace.tracking.store import ensure_experiment, forget_failure, run_tags

    if how.dashboard:
        check_dashboard()
    storage = local_path(how.storage or "ray_results", "--storage").resolve()  # never ./s3:/bucket
    sweep = load_sweep(how.sweep_file, smoke=how.smoke)
    name = sweep.name = how.name or sweep.name  # Tune experiment folder and MLflow experiment alike
    exp_dir = storage / name
    resume, store = prepare(how, sweep, exp_dir)
    forget_failure(store)  # failures of the store this command meets are its own
    if resume == "report":
        print(f"sweep {name} at {exp_dir} has ended: reporting it (nothing to train)", flush=True)
        return Ran(exp_dir, store, sweep)
    configs = validate(sweep, n_train_classes(sweep.base["data.root"], sweep.base.get("data.protocol")))
    writable_folder(exp_dir)
    ensure_experiment(store, sweep.name, str(exp_dir))
    seconds = preflight([cfg for _, cfg in configs])  # every file once, all problems at once, before Ray
    print(
        f"sweep {name}: {len(configs)} trial configs validated, audio checked in {seconds:.1f} s; "
        f"MLflow store {store.uri}" + ("; resuming its unfinished trials" if resume else ""),
        flush=True,
    )
    if cluster_address(how.address) is None or os.environ.get("SOURCETRACE_CACHE"):  # trials read its cache
        prerender([cfg for _, cfg in configs])
    tags = run_tags(sweep.base["data.root"], sweep.base.get("data.protocol"))  # git commit and dataset

    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # dev EER exists at evaluation epochs only
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(sweep.tune.snapshot_period_s)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # frequent on purpose
    quiet_ray(how.verbose)
    address = cluster_address(how.address)  # RAY_ADDRESS alone gets the cluster's settings, not local-only ones
    started = start_ray(address, how.verbose, how.dashboard)
    try:
        check_resources(sweep.resources, local=address is None)
        if address is not None:  # every node type sees the sweep folder and the data, before fit
            check_nodes(exp_dir, sweep.base["data.root"], sweep.base.get("data.protocol"))
        if not resume:
            write_record(exp_dir, sweep, store, how)
        with sigterm_stops_tune() as stop:  # after ray.init: Ray's own SIGTERM handler aborts
            try:
                build_tuner(sweep, configs, exp_dir, store, bool(resume), tags, how.verbose).fit()
            except OSError as err:
                raise storage_error(err, exp_dir) from err
    finally:
        if started:
            import ray

            ray.shutdown()
    return Ran(exp_dir, store, sweep, stop.signal)


def prerender(configs: list) -> None:
    """The renderings the trials will read (``augment.*`` of the training split, ``data.dev_degrade`` of the
    dev split), made once here with every core before the trials start, instead of by each trial at once."""
    from sourcetrace.degrade import renderings_of
    from sourcetrace.degrade.render import render_files
    from sourcetrace.training.data import read_tables

    jobs: dict[tuple[str, int, int], list[str]] = {}
    for cfg in configs:
        d, aug = cfg.data, cfg.augment
        names = list(aug.rendered())
        dev = renderings_of(d.dev_degrade, "data.dev_degrade") if d.dev_degrade else []
        if not names and not dev:
            continue
        _, tables = read_tables(cfg)
        for name in names:
            jobs.setdefault((name, aug.seed, d.sample_rate), []).extend(tables[d.train_split]["file"])
        for name in dev:
            jobs.setdefault((name, aug.seed, d.sample_rate), []).extend(tables[d.dev_split]["file"])
    if not jobs:
        return
    start = time.perf_counter()
    for (name, seed, rate), files in jobs.items():
        render_files(list(dict.fromkeys(files)), name, seed, rate)
    names = ", ".join(dict.fromkeys(n for n, _, _ in jobs))
    print(f"renderings for the trials ready in {time.perf_counter() - start:.1f} s ({names})", flush=True)
