"""Sweep files -> ``tune.Tuner``: every trial config validated before Ray starts; local or cluster Ray.

A sweep file (``sweeps/*.py``) is a small Python module with these attributes (only SPACE is required):

* ``BASE``      flat config keys applied to every trial (``{"train.epochs": 300}``)
* ``BUNDLES``   ``{bundle: {label: {flat keys}}}``: a SPACE key without a dot draws a *label*, which sets
                several keys together (``recipe="ge2e/balanced"`` -> loss, sampler, batch size)
* ``SPACE``     ``{flat key or bundle: constant | tune.grid_search | tune.choice | tune.loguniform ...}``
* ``TUNE``      Tune settings, keys of ``TUNE_DEFAULTS`` (search grid|optuna, ASHA, failures ...)
* ``RESOURCES`` per trial: ``{"cpu": 2, "gpu": 0.25, "accelerator_type:A100": 0.001}``
* ``SMOKE``     ``{"BASE"|"BUNDLES"|"SPACE"|"TUNE"|"RESOURCES": {...}}`` merged over the above by ``--smoke``

Importing a sweep file must stay cheap: it may import ``ray.tune`` for the distributions, nothing else.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sourcetrace.config import Config
from sourcetrace.data.check import preflight
from sourcetrace.errors import ConfigError, SourcetraceError
from sourcetrace.interrupt import EXIT_CODES, sigterm_stops_tune
from sourcetrace.nodecheck import check_nodes
from sourcetrace.storage import local_path, report_with_or_without_mlflow, storage_error, writable_folder
from sourcetrace.training.trainable import TrialSpec

TUNE_DEFAULTS: dict[str, Any] = {
    "search": "grid",  # grid (Tune's variant generator: grid_search and random draws) | optuna
    "num_samples": 1,  # grid: repeats of the whole grid; optuna: number of trials
    "max_concurrent": 0,  # 0 = as many as the resources allow
    "metric": "dev_eer",
    "mode": "min",
    "scheduler": "asha",  # asha | fifo
    "time_attr": "epoch",  # epoch | training_iteration (one report per epoch: the same count)
    "grace_period": 0,  # ASHA's first rung; 0 = the trials' train.eval_every
    "reduction_factor": 3,
    "max_failures": 2,  # a crashed trial restarts from its last checkpoint this many times
    "keep_checkpoints": 3,  # per trial, best by dev EER (the latest is always kept too)
    "snapshot_period_s": 2,  # experiment snapshot period: what a killed driver can lose at most
    "seed": 0,  # Optuna sampler seed
    "log_checkpoint": True,  # upload each trial's best checkpoint to MLflow
}
_SECTIONS = ("BASE", "BUNDLES", "SPACE", "TUNE", "RESOURCES")
MAX_VALIDATED = 20000


@dataclass
class SweepFile:
    """A loaded sweep file (smoke variant merged in when asked)."""

    name: str
    path: Path
    base: dict[str, Any] = field(default_factory=dict)
    bundles: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    tune: dict[str, Any] = field(default_factory=dict)
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    smoke: bool = False

    @property
    def spec(self) -> TrialSpec:
        return TrialSpec(dict(self.base), self.bundles)


def load_sweep(path: str | Path, smoke: bool = False) -> SweepFile:
    """Import a sweep file and check its shape (not yet its trial configs: see ``validate``)."""
    path = Path(path)
    if not path.is_file():
        raise SourcetraceError(f"sweep file {path} does not exist")
    mod_spec = importlib.util.spec_from_file_location(f"sourcetrace_sweep_{path.stem}", path)
    module = importlib.util.module_from_spec(mod_spec)
    try:
        mod_spec.loader.exec_module(module)
    except Exception as err:
        raise SourcetraceError(f"sweep file {path} failed to import: {type(err).__name__}: {err}") from err
    parts = {s: dict(getattr(module, s, {}) or {}) for s in _SECTIONS}
    if not parts["SPACE"]:
        raise SourcetraceError(f"sweep file {path} defines no SPACE (a dict of search keys)")
    if smoke:
        extra = getattr(module, "SMOKE", None)
        if not isinstance(extra, dict):
            raise SourcetraceError(f"sweep file {path} has no SMOKE dict, so --smoke cannot run it")
        for section, values in extra.items():
            if section not in _SECTIONS:
                raise SourcetraceError(f"{path}: SMOKE[{section!r}] is not one of {', '.join(_SECTIONS)}")
            parts[section].update(values)
    unknown = sorted(set(parts["TUNE"]) - set(TUNE_DEFAULTS))
    if unknown:
        raise SourcetraceError(
            f"{path}: unknown TUNE setting(s) {', '.join(unknown)}; known: {', '.join(TUNE_DEFAULTS)}"
        )
    settings = TUNE_DEFAULTS | parts["TUNE"]
    if settings["search"] not in ("grid", "optuna") or settings["scheduler"] not in ("asha", "fifo"):
        raise SourcetraceError(f"{path}: TUNE search must be grid|optuna and scheduler asha|fifo")
    if settings["time_attr"] not in ("epoch", "training_iteration"):
        raise SourcetraceError(f"{path}: TUNE time_attr must be epoch or training_iteration")
    resources = {"cpu": 1} | parts["RESOURCES"]
    name = path.stem + ("_smoke" if smoke else "")
    return SweepFile(name, path, parts["BASE"], parts["BUNDLES"], parts["SPACE"], settings, resources, smoke)


def _axis(key: str, value: Any) -> list[Any]:
    """Values of one SPACE entry to validate: a grid's values, a choice's categories, a range's bounds."""
    from ray.tune.search.sample import Categorical, Domain, Float, Integer, Quantized

    if isinstance(value, dict) and set(value) == {"grid_search"}:
        return list(value["grid_search"])
    if isinstance(value, Categorical):
        return list(value.categories)
    if isinstance(value, Integer):
        top = value.upper if isinstance(value.sampler, Quantized) else value.upper - 1
        return [value.lower, top]
    if isinstance(value, Float):
        return [value.lower, value.upper]
    if isinstance(value, Domain):
        raise ConfigError(f"SPACE[{key!r}] is a {type(value).__name__}, which cannot be validated before launch")
    return [value]


def expand(space: dict[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the SPACE's grid values, categories and range bounds."""
    keys = list(space)
    axes = [_axis(k, space[k]) for k in keys]
    total = 1
    for axis in axes:
        total *= len(axis)
    if total > MAX_VALIDATED:
        raise ConfigError(f"the SPACE has {total} combinations to validate (> {MAX_VALIDATED}); split the sweep")
    return [dict(zip(keys, combo)) for combo in itertools.product(*axes)]


def describe(trial_config: dict[str, Any]) -> str:
    return "{" + ", ".join(f"{k}={v!r}" for k, v in trial_config.items()) + "}"


def validate(sweep: SweepFile, n_classes: int | None = None) -> list[tuple[dict[str, Any], Config]]:
    """Build and validate the Config of every trial config; the first bad one is a ConfigError naming it."""
    if sweep.tune["search"] == "optuna":
        grids = [k for k, v in sweep.space.items() if isinstance(v, dict) and "grid_search" in v]
        if grids:
            raise ConfigError(
                f"{sweep.path}: Optuna cannot search tune.grid_search keys ({', '.join(grids)}); "
                "use tune.choice or search='grid'"
            )
    combos = expand(sweep.space)
    out = []
    for i, trial_config in enumerate(combos, 1):
        try:
            cfg = sweep.spec.config(trial_config).validate(n_classes)
        except ConfigError as err:
            raise ConfigError(
                f"{sweep.path.name}: trial config {i} of {len(combos)} {describe(trial_config)}: {err}"
            ) from None
        out.append((trial_config, cfg))
    return out


def pin_overrides(sweep: SweepFile, assignments: list[str]) -> None:
    """Apply ``--set key=value`` to every trial: into BASE, and out of SPACE/BUNDLES where searched."""
    values = {}
    for item in assignments:
        if "=" not in item:
            raise ConfigError(f"--set {item!r} is not of the form key=value")
        key, value = (s.strip() for s in item.split("=", 1))
        Config.from_dict({key: value})  # unknown key / bad type: a clear error now
        values[key] = value
    for key, value in values.items():
        if key in sweep.space:
            print(f"note: --set {key}={value} pins a key the sweep searches", file=sys.stderr)
            del sweep.space[key]
        for labels in sweep.bundles.values():
            for keys in labels.values():
                keys.pop(key, None)
        sweep.base[key] = value


def n_train_classes(root: str, protocol: str | None) -> int:
    from sourcetrace.data.protocol import read_protocol

    return len(read_protocol(root, protocol or None, splits=("train",)).known_systems)


# -- running ----------------------------------------------------------------------------------------


def _runtime_env_vars() -> dict[str, str]:
    """What trials on a ``ray start`` cluster need from the driver's environment (workers don't inherit it)."""
    prefixes = ("SOURCETRACE_", "HF_", "TRANSFORMERS_", "TORCH_", "OMP_", "MKL_", "CUBLAS_", "PYTORCH_")
    env = {k: v for k, v in os.environ.items() if k.startswith(prefixes)}
    return env | {"RAY_USAGE_STATS_ENABLED": os.environ.get("RAY_USAGE_STATS_ENABLED", "0")}


def start_ray(address: str | None) -> bool:
    """Local embedded Ray bound to 127.0.0.1 with Ray's token auth, or a cluster; True if this call started it."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address is None:
        from sourcetrace.localray import loopback_only

        loopback_only()
    import ray

    if ray.is_initialized():
        return False
    if address is None:
        ray.init(include_dashboard=False, logging_level="WARNING")
    else:
        ray.init(address=address, runtime_env={"env_vars": _runtime_env_vars()}, logging_level="WARNING")
    return True


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


def _searcher(settings: dict[str, Any]):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    class EvalOnlyOptunaSearch(OptunaSearch):
        """Optuna sees the evaluation epochs only (the others carry no dev EER)."""

        def on_trial_result(self, trial_id, result):
            if self.metric in result:
                super().on_trial_result(trial_id, result)

    return EvalOnlyOptunaSearch(sampler=optuna.samplers.TPESampler(seed=settings["seed"]))


def build_tuner(sweep: SweepFile, configs: list, exp_dir: Path, store, resume: bool):
    """The ``tune.Tuner`` of a validated sweep (or its restore from ``exp_dir``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from sourcetrace.tracking import MlflowTrialCallback
    from sourcetrace.training.retry import NoRetryCallback
    from sourcetrace.training.trainable import run_trial

    trainable = tune.with_resources(tune.with_parameters(run_trial, spec=sweep.spec), placement(sweep.resources))
    if resume:
        return tune.Tuner.restore(str(exp_dir), trainable=trainable, resume_unfinished=True, resume_errored=True)
    s = sweep.tune
    epochs = max(cfg.train.epochs for _, cfg in configs)
    scheduler = FIFOScheduler()
    if s["scheduler"] == "asha":
        grace = min(s["grace_period"] or min(cfg.train.eval_every for _, cfg in configs), epochs)
        scheduler = ASHAScheduler(
            time_attr=s["time_attr"], max_t=epochs, grace_period=grace, reduction_factor=s["reduction_factor"]
        )
    tune_config = tune.TuneConfig(
        metric=s["metric"],
        mode=s["mode"],
        scheduler=scheduler,
        search_alg=_searcher(s) if s["search"] == "optuna" else None,
        num_samples=s["num_samples"],
        max_concurrent_trials=s["max_concurrent"] or None,
        reuse_actors=True,
    )
    run_config = tune.RunConfig(
        name=exp_dir.name,
        storage_path=str(exp_dir.parent),
        verbose=1,
        callbacks=[MlflowTrialCallback(store, sweep.name, sweep.spec, s["log_checkpoint"]), NoRetryCallback()],
        checkpoint_config=tune.CheckpointConfig(
            num_to_keep=s["keep_checkpoints"], checkpoint_score_attribute=s["metric"], checkpoint_score_order=s["mode"]
        ),
        failure_config=tune.FailureConfig(max_failures=s["max_failures"]),
    )
    return tune.Tuner(trainable, param_space=sweep.space, tune_config=tune_config, run_config=run_config)


def cli_sweep(args) -> int:
    """``sourcetrace sweep FILE --root DIR``: validate every trial, run Tune (one MLflow run each), print Table 1."""
    from sourcetrace.tracking import ensure_experiment, resolve_store

    storage = local_path(args.storage or "ray_results", "--storage").resolve()  # never ./s3:/bucket
    sweep = load_sweep(args.sweep_file, smoke=args.smoke)
    name = sweep.name = args.name or sweep.name  # Tune experiment folder and MLflow experiment alike
    exp_dir = storage / name
    record_file = exp_dir / "sourcetrace_sweep.json"
    if args.resume:
        if not record_file.is_file():
            raise SourcetraceError(f"nothing to resume at {exp_dir} (no {record_file.name}); run without --resume")
        if args.set:
            raise SourcetraceError("--set cannot change a sweep being resumed: its trials keep their settings")
        record = json.loads(record_file.read_text())
        sweep.base, sweep.bundles = record["base"], record["bundles"]  # resumed trials keep their settings
        sweep.tune, sweep.resources = record["tune"], record["resources"]
        store = resolve_store(record["tracking_uri"])
        if args.tracking_uri and resolve_store(args.tracking_uri).uri != store.uri:
            raise SourcetraceError(f"{name} logs to {store.uri}; --resume cannot move it to {args.tracking_uri}")
    else:
        if exp_dir.exists() and any(exp_dir.glob("experiment_state-*.json")):
            raise SourcetraceError(
                f"a sweep named {name!r} exists at {exp_dir}: pass --resume, or --name for a new one"
            )
        sweep.base.update({"data.root": str(Path(args.root).resolve())})
        if args.protocol:
            sweep.base["data.protocol"] = str(Path(args.protocol).resolve())
        pin_overrides(sweep, args.set)
        store = resolve_store(args.tracking_uri)
    configs = validate(sweep, n_train_classes(sweep.base["data.root"], sweep.base.get("data.protocol")))
    writable_folder(exp_dir)
    ensure_experiment(store, sweep.name, str(exp_dir))
    seconds = preflight([cfg for _, cfg in configs])  # every file once, all problems at once, before Ray
    print(
        f"sweep {name}: {len(configs)} trial configs validated, audio checked in {seconds:.1f} s; "
        f"MLflow store {store.uri}",
        flush=True,
    )

    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"  # dev EER exists at evaluation epochs only
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(sweep.tune["snapshot_period_s"])
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # frequent on purpose
    started = start_ray(args.address)
    try:
        check_resources(sweep.resources, local=args.address is None)
        if args.address is not None:  # every node type sees the sweep folder and the data, before fit
            check_nodes(exp_dir, sweep.base["data.root"], sweep.base.get("data.protocol"))
        if not args.resume:
            record = {
                "sweep_file": str(sweep.path.resolve()),
                "name": name,
                "smoke": sweep.smoke,
                "tune": sweep.tune,
                "resources": sweep.resources,
                "tracking_uri": store.uri,
                "experiment": sweep.name,
                "space_keys": list(sweep.space),
            } | sweep.spec.to_dict()
            record_file.write_text(json.dumps(record, indent=2, default=str))
        with sigterm_stops_tune() as stop:  # after ray.init: Ray's own SIGTERM handler aborts
            try:
                build_tuner(sweep, configs, exp_dir, store, args.resume).fit()
            except OSError as err:
                raise storage_error(err, exp_dir) from err
    finally:
        if started:
            import ray

            ray.shutdown()
    code = _finish(args, exp_dir, store, sweep)
    return EXIT_CODES[stop.signal] if stop.signal else code


def _finish(args, exp_dir: Path, store, sweep: SweepFile) -> int:
    """Write and print the reports; non-zero exit when trials failed (1) or did not end (130)."""
    from sourcetrace.evaluation.baseline import sweep_baseline
    from sourcetrace.report import format_table1

    try:
        sweep_baseline(exp_dir, sweep.base, store.uri, sweep.name)  # the featureless row of Table 1, an MLflow run
    except SourcetraceError as err:  # the trials' results still get their report
        print(f"note: no baseline row: {err}", file=sys.stderr)
    try:
        reports = report_with_or_without_mlflow(exp_dir, store)
    except OSError as err:
        raise storage_error(err, exp_dir / "report") from err
    print(format_table1(reports))
    print(f"reports: {reports.out_dir}")
    status = reports.trials.drop_duplicates("trial_id")["status"]
    from sourcetrace.bundle.export import export_best

    export_best(exp_dir, reports.trials, store)  # the portable bundle of the best trial, logged to its run
    if not args.no_analyze:
        _analyze_best(args, reports, sweep)
    if status.isin(["running", "pending", "interrupted"]).any():
        print("sweep interrupted: continue it with --resume (same --name/--storage)", file=sys.stderr)
        return 130
    return 1 if (status == "failed").any() else 0


def _analyze_best(args, reports, sweep: SweepFile) -> None:
    """Linear probe / confusion / UMAP of the best trial's best checkpoint (``sourcetrace analyze``)."""
    import argparse

    rows = reports.trials.dropna(subset=["dev_eer", "checkpoint"])
    if rows.empty:
        return
    best = rows.loc[rows["dev_eer"].idxmin()]
    try:
        from sourcetrace.evaluation.analyze import cli_analyze
    except ModuleNotFoundError as err:
        if err.name != "sourcetrace.evaluation.analyze":
            raise
        print(f"note: analyses of the best trial skipped ({err})", file=sys.stderr)
        return
    ns = argparse.Namespace(
        model=best["checkpoint"],
        root=sweep.base["data.root"],
        protocol=sweep.base.get("data.protocol"),
        split="dev",
        out=str(reports.out_dir / "best_analysis"),
    )
    cli_analyze(ns)
