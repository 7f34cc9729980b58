"""The sweep-file schema and ``TrialSpec``: every trial config built and validated before Ray starts.

A sweep file (``sweeps/*.py``) is a small Python module with these attributes (only SPACE is required):

* ``BASE``      flat config keys applied to every trial (``{"train.epochs": 300}``)
* ``RECIPES``   ``{recipe: {label: {flat keys}}}``: a SPACE key without a dot draws a *label*, which sets
                several keys together (``recipe="ge2e/balanced"`` -> loss, sampler, batch size)
* ``SPACE``     ``{flat key or recipe: constant | tune.grid_search | tune.choice | tune.loguniform ...}``
* ``TUNE``      Tune settings, the fields of ``TuneSettings`` (search grid|optuna, ASHA, failures ...)
* ``RESOURCES`` per trial: ``{"cpu": 2, "gpu": 0.25, "accelerator_type:A100": 0.001}``
* ``SMOKE``     ``{"BASE"|"RECIPES"|"SPACE"|"TUNE"|"RESOURCES": {...}}`` merged over the above by ``--smoke``

Importing a sweep file must stay cheap: it may import ``ray.tune`` for the distributions, nothing else.

A trial's config holds flat config keys (``loss.margin``) and *recipe labels*: a key without a dot
(``recipe``) whose string value names a dict of flat keys in ``RECIPES``. ``TrialSpec`` turns both into
one ``Config``; the trainable, the MLflow callback and the report use the same resolution.
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from sourcetrace.config import Config, parse_assignments
from sourcetrace.errors import ConfigError, SourcetraceError
from sourcetrace.validation import validate as validate_config


@dataclass(frozen=True)
class TuneSettings:
    """A sweep file's ``TUNE`` section, typed: how Tune searches, schedules and retries the trials."""

    search: str = "grid"  # grid (Tune's variant generator: grid_search and random draws) | optuna
    num_samples: int = 1  # grid: repeats of the whole grid; optuna: number of trials
    max_concurrent: int = 0  # 0 = as many as the resources allow
    metric: str = "dev_eer"
    mode: str = "min"
    scheduler: str = "asha"  # asha | halving (synchronous successive halving, sweep/halving.py) | fifo
    time_attr: str = "epoch"  # epoch | training_iteration (one report per epoch: the same count)
    grace_period: int = 0  # ASHA's first rung; 0 = the trials' train.eval_every
    reduction_factor: int = 3
    max_failures: int = 2  # retries (from the last checkpoint) of a code error; a SourcetraceError gets none
    lost_worker_retries: int = 10  # retries beyond those for a lost worker or node (spot, OOM kill); -1 = no limit
    keep_checkpoints: int = 3  # per trial, best by the metric (the latest is always kept too, resume-only or not)
    snapshot_period_s: float = 2  # experiment snapshot period: what a killed driver can lose at most
    seed: int = 0  # Optuna sampler seed
    log_checkpoint: bool = True  # upload each trial's best checkpoint to MLflow
    # "" or a SPACE key searched by tune.grid_search: halving runs within each of its values, and the sweep
    # scores the equal-weight score fusion of each value's best trial (sourcetrace/fusion.py), handed over when
    # it beats its best member on dev (sweep/handover.py)
    fuse: str = ""
    # "" or degradations as `evaluate --degrade` takes them (e.g. "everyday"): when the sweep ends, the model it
    # hands over and the baseline are scored on the test split clean and under each, side by side
    field_check: str = ""
    field_check_clips: int = 0  # at most this many test clips per system in the field check (0 = all)

    def __post_init__(self):
        if self.search not in ("grid", "optuna") or self.scheduler not in ("asha", "halving", "fifo"):
            raise ConfigError("TUNE search must be grid|optuna and scheduler asha|halving|fifo")
        retries = {"max_failures": self.max_failures, "lost_worker_retries": self.lost_worker_retries}
        if any(type(v) is not int or v < -1 for v in retries.values()):
            raise ConfigError(f"TUNE {retries} must be whole numbers >= 0 (or -1: no limit)")
        if self.time_attr not in ("epoch", "training_iteration"):
            raise ConfigError("TUNE time_attr must be epoch or training_iteration")
        if self.scheduler == "halving" and (self.search != "grid" or self.max_concurrent):
            # halving waits for every trial at each rung: all must exist, and paused ones would hold a slot
            raise ConfigError("TUNE scheduler 'halving' needs search 'grid' and max_concurrent 0")
        if self.field_check:
            from sourcetrace.degrade import check_names

            try:
                check_names(self.field_check)
            except ConfigError as err:
                raise ConfigError(f"TUNE field_check: {err}") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], recorded: bool = False) -> TuneSettings:
        """The settings of a ``TUNE`` dict; an unknown key is an error. ``recorded``: from a sweep record, where
        a key the record predates keeps the behaviour it ran with (no retries for lost workers)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown TUNE setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        if recorded and "lost_worker_retries" not in values:
            values = {**values, "lost_worker_retries": 0}
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_SECTIONS = ("BASE", "RECIPES", "SPACE", "TUNE", "RESOURCES")
MAX_VALIDATED = 20000


def recipes_of(record: dict) -> dict:
    """The recipes of a sweep record (``sourcetrace_sweep.json``); records written before 0.1.0's rename of
    BUNDLES keep them under ``bundles``."""
    return record.get("recipes", record.get("bundles", {}))


@dataclass(frozen=True)
class TrialSpec:
    """What every trial of a sweep shares: ``base`` flat overrides and the ``recipes`` table."""

    base: dict[str, Any] = field(default_factory=dict)
    recipes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)

    def resolve(self, trial_config: Mapping[str, Any]) -> dict[str, Any]:
        """Flat config keys of one trial: base, then recipes (in key order), then the trial's flat keys."""
        flat = dict(self.base)
        from_recipes: dict[str, str] = {}
        for key in sorted(k for k in trial_config if "." not in k):
            label = trial_config[key]
            if key not in self.recipes:
                raise ConfigError(
                    f"trial config key {key!r} is neither a config key (section.name) nor a recipe; "
                    f"recipes: {', '.join(sorted(self.recipes)) or '(none)'}"
                )
            choices = self.recipes[key]
            if label not in choices:
                raise ConfigError(f"recipe {key}={label!r} is unknown; labels of {key!r}: {', '.join(choices)}")
            for k, v in choices[label].items():
                if k in from_recipes:
                    raise ConfigError(f"config key {k!r} is set by both recipes {from_recipes[k]!r} and {key!r}")
                from_recipes[k] = key
                flat[k] = v
        for key, value in trial_config.items():
            if "." in key:
                if key in from_recipes:
                    raise ConfigError(f"config key {key!r} is set by recipe {from_recipes[key]!r} and searched too")
                flat[key] = value
        return flat

    def config(self, trial_config: Mapping[str, Any]) -> Config:
        return Config.from_dict(self.resolve(trial_config))

    def to_dict(self) -> dict[str, Any]:
        return {"base": self.base, "recipes": self.recipes}


@dataclass
class SweepFile:
    """A loaded sweep file (smoke variant merged in when asked)."""

    name: str
    path: Path
    base: dict[str, Any] = field(default_factory=dict)
    recipes: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    space: dict[str, Any] = field(default_factory=dict)
    tune: TuneSettings = field(default_factory=TuneSettings)
    resources: dict[str, float] = field(default_factory=lambda: {"cpu": 1})
    smoke: bool = False

    @property
    def spec(self) -> TrialSpec:
        return TrialSpec(dict(self.base), self.recipes)


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
    if hasattr(module, "BUNDLES"):
        raise SourcetraceError(f"{path}: BUNDLES is called RECIPES now (named key sets a SPACE key draws): rename it")
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
    try:
        settings = TuneSettings.from_dict(parts["TUNE"])
    except ConfigError as err:
        raise SourcetraceError(f"{path}: {err}") from None
    _check_fuse(path, settings, parts["SPACE"])
    resources = {"cpu": 1} | parts["RESOURCES"]
    name = path.stem + ("_smoke" if smoke else "")
    return SweepFile(name, path, parts["BASE"], parts["RECIPES"], parts["SPACE"], settings, resources, smoke)


def _check_fuse(path: Path, settings: TuneSettings, space: dict[str, Any]) -> None:
    """TUNE fuse names a SPACE key whose grid has two or more values, under grid search, halving or fifo."""
    key = settings.fuse
    if not key:
        return
    grid = space.get(key) if isinstance(key, str) else None
    if not (isinstance(grid, dict) and set(grid) == {"grid_search"} and len(grid["grid_search"]) >= 2):
        raise SourcetraceError(
            f"{path}: TUNE fuse={key!r} must name a SPACE key searched by tune.grid_search over two or more values"
        )
    if settings.search != "grid" or settings.scheduler == "asha":
        raise SourcetraceError(
            f"{path}: TUNE fuse needs search 'grid' and scheduler 'halving' or 'fifo' (ASHA cannot halve "
            "within each fused value)"
        )


def fuse_groups(sweep: SweepFile, configs: list[tuple[dict[str, Any], Any]]) -> dict[str, int]:
    """Trials per value of the fused key (one group of all trials when the sweep fuses nothing)."""
    counts: dict[str, int] = {}
    for trial_config, _ in configs:
        group = group_of(sweep.tune.fuse, trial_config)
        counts[group] = counts.get(group, 0) + sweep.tune.num_samples
    return counts


def group_of(key: str, trial_config: Mapping[str, Any]) -> str:
    """The fusion group of a trial config: its value of ``key`` as text ("" when the sweep fuses nothing)."""
    return str(trial_config.get(key, "")) if key else ""


def searched_keys(space: dict[str, Any]) -> list[str]:
    """The SPACE keys that are searched (a ``tune.grid_search`` or a distribution), not pinned to one value, in
    the SPACE's order: what tells a sweep's trials apart (their MLflow run names)."""
    from ray.tune.search.sample import Domain

    return [k for k, v in space.items() if (isinstance(v, dict) and set(v) == {"grid_search"}) or isinstance(v, Domain)]


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
    if sweep.tune.search == "optuna":
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
            cfg = validate_config(sweep.spec.config(trial_config), n_classes)
        except ConfigError as err:
            raise ConfigError(
                f"{sweep.path.name}: trial config {i} of {len(combos)} {describe(trial_config)}: {err}"
            ) from None
        out.append((trial_config, cfg))
    return out


def pin_overrides(sweep: SweepFile, assignments: list[str]) -> None:
    """Apply ``--set key=value`` to every trial: into BASE, and out of SPACE/RECIPES where searched."""
    values = parse_assignments(assignments)
    Config.from_dict(values)  # unknown key / bad type: a clear error now
    for key, value in values.items():
        if key in sweep.space:
            print(f"note: --set {key}={value} pins a key the sweep searches", file=sys.stderr)
            del sweep.space[key]
            if sweep.tune.fuse == key:
                print(f"note: {key} is pinned, so nothing is fused: the best trial is handed over", file=sys.stderr)
                sweep.tune = replace(sweep.tune, fuse="")
        for labels in sweep.recipes.values():
            for keys in labels.values():
                keys.pop(key, None)
        sweep.base[key] = value


def n_train_classes(root: str, protocol: str | None) -> int:
    from sourcetrace.data.protocol import read_protocol

    return len(read_protocol(root, protocol or None, splits=("train",)).known_systems)
