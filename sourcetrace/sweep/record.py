"""A sweep's record (``STORAGE/NAME/sourcetrace_sweep.json``): what a later run of it, or ``--resume``, reuses.

It keeps the trials' settings (BASE, RECIPES, TUNE, RESOURCES), the MLflow store and how the sweep was
launched (a hash of the sweep file, ``--smoke``, ``--set``, the data). Running the same command again
resumes the unfinished trials or, when every trial has ended, only reports; another sweep file or other
settings under the same name are refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from sourcetrace.errors import SourcetraceError
from sourcetrace.sweep import RECORD
from sourcetrace.sweep.spec import SweepFile, TuneSettings, pin_overrides, recipes_of
from sourcetrace.sweep.status import UNFINISHED


@dataclass(frozen=True)
class Launch:
    """How ``sourcetrace sweep`` was asked to run a sweep file (its command-line options, typed)."""

    sweep_file: str
    root: str | None = None
    protocol: str | None = None
    smoke: bool = False
    set: tuple[str, ...] = ()  # KEY=VALUE pins for every trial
    name: str | None = None
    storage: str | None = None
    tracking_uri: str | None = None
    resume: bool = False
    address: str | None = None
    verbose: bool = False
    dashboard: bool = False


_WHAT = {"sweep_sha256": "sweep file", "smoke": "--smoke", "set": "--set", "root": "--root", "protocol": "--protocol"}


def launch(args: Launch, sweep: SweepFile) -> dict:
    """How this command launches the sweep, as the record keeps it."""
    return {
        "sweep_sha256": hashlib.sha256(sweep.path.read_bytes()).hexdigest(),
        "smoke": bool(sweep.smoke),
        "set": sorted(args.set),
        "root": str(Path(args.root).resolve()) if args.root else None,
        "protocol": str(Path(args.protocol).resolve()) if args.protocol else None,
    }


def prepare(args: Launch, sweep: SweepFile, exp_dir: Path):
    """``(mode, store)``: mode ``""`` (a new sweep), ``"resume"`` or ``"report"`` (every trial has ended).

    A new sweep gets its data root, protocol and ``--set`` pins; a recorded one its recorded settings.
    """
    from sourcetrace.tracking.store import resolve_store

    record_file = exp_dir / RECORD
    has_state = exp_dir.is_dir() and any(exp_dir.glob("experiment_state-*.json"))
    if args.resume:
        if not record_file.is_file():
            raise SourcetraceError(f"nothing to resume at {exp_dir} (no {RECORD}); run without --resume")
        if args.set:
            raise SourcetraceError("--set cannot change a sweep being resumed: its trials keep their settings")
        return "resume", _adopt(json.loads(record_file.read_text()), sweep, args)
    if record_file.is_file() and has_state:
        record = json.loads(record_file.read_text())
        was, now = record.get("launch"), launch(args, sweep)
        if was is not None and was != now:
            changed = ", ".join(_WHAT[k] for k in now if was.get(k) != now[k])
            raise SourcetraceError(
                f"a sweep named {sweep.name!r} at {exp_dir} was launched with another {changed}: pass --name for a "
                "new sweep (or --storage for another folder)"
            )
        store = _adopt(record, sweep, args)
        return ("report" if _ended(exp_dir) else "resume"), store
    if has_state:
        raise SourcetraceError(
            f"{exp_dir} holds a Tune experiment that no sourcetrace sweep recorded: pass --name for a new one"
        )
    sweep.base.update({"data.root": str(Path(args.root).resolve())})
    if args.protocol:
        sweep.base["data.protocol"] = str(Path(args.protocol).resolve())
    pin_overrides(sweep, list(args.set))
    return "", resolve_store(args.tracking_uri)


def write_record(exp_dir: Path, sweep: SweepFile, store, args: Launch) -> None:
    record = {
        "sweep_file": str(sweep.path.resolve()),
        "name": sweep.name,
        "smoke": sweep.smoke,
        "tune": sweep.tune.to_dict(),
        "resources": sweep.resources,
        "tracking_uri": store.uri,
        "experiment": sweep.name,
        "space_keys": list(sweep.space),
        "launch": launch(args, sweep),
    } | sweep.spec.to_dict()
    (exp_dir / RECORD).write_text(json.dumps(record, indent=2, default=str))


def _adopt(record: dict, sweep: SweepFile, args: Launch):
    """Take the recorded trial settings and store; a different ``--tracking-uri`` is refused."""
    from sourcetrace.tracking.store import resolve_store

    sweep.base, sweep.recipes = record["base"], recipes_of(record)  # resumed trials keep their settings
    sweep.tune, sweep.resources = TuneSettings.from_dict(record["tune"], recorded=True), record["resources"]
    store = resolve_store(record["tracking_uri"])
    if args.tracking_uri and resolve_store(args.tracking_uri).uri != store.uri:
        raise SourcetraceError(f"{sweep.name} logs to {store.uri}; it cannot move to {args.tracking_uri}")
    return store


def _ended(exp_dir: Path) -> bool:
    """Every trial Tune knows of has ended (finished, early-stopped or failed)."""
    from sourcetrace.sweep.report import trials_frame

    try:
        status = trials_frame(exp_dir).drop_duplicates("trial_id")["status"]
    except SourcetraceError:  # no trial yet
        return False
    return not status.isin(UNFINISHED).any()
