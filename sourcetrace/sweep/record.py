"""A sweep's record (``STORAGE/NAME/sourcetrace_sweep.json``): what a later run of it, or ``--resume``, reuses.

It keeps the trials' settings (BASE, RECIPES, TUNE, RESOURCES), the MLflow store and how the sweep was
launched (a hash of the sweep file, ``--smoke``, ``--set``, the data). Running the same command again
resumes the unfinished trials or, when every trial has ended, only reports; another sweep file or other
settings under the same name are refused.
"""

from __future__ import annotations

import hashlib
import json
import sys
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


def launch(how: Launch, sweep: SweepFile) -> dict:
    """How this command launches the sweep, as the record keeps it."""
    return {
        "sweep_sha256": hashlib.sha256(sweep.path.read_bytes()).hexdigest(),
        "smoke": bool(sweep.smoke),
        "set": sorted(how.set),
        "root": str(Path(how.root).resolve()) if how.root else None,
        "protocol": str(Path(how.protocol).resolve()) if how.protocol else None,
    }


def prepare(how: Launch, sweep: SweepFile, exp_dir: Path):
    """``(mode, store)``: mode ``""`` (a new sweep), ``"resume"`` or ``"report"`` (every trial has ended).

    A new sweep gets its data root, protocol and ``--set`` pins; a recorded one its recorded settings.
    """
    from sourcetrace.tracking.store import resolve_store

    record_file = exp_dir / RECORD
    set_aside_cut_short(exp_dir)
    has_state = exp_dir.is_dir() and any(exp_dir.glob("experiment_state-*.json"))
    if how.resume:
        if not record_file.is_file():
            raise SourcetraceError(f"nothing to resume at {exp_dir} (no {RECORD}); run without --resume")
        if how.set:
            raise SourcetraceError("--set cannot change a sweep being resumed: its trials keep their settings")
        return "resume", _adopt(json.loads(record_file.read_text()), sweep, how)
    if record_file.is_file() and has_state:
        record = json.loads(record_file.read_text())
        was, now = record.get("launch"), launch(how, sweep)
        if was is not None and was != now:
            changed = ", ".join(_WHAT[k] for k in now if was.get(k) != now[k])
            raise SourcetraceError(
                f"a sweep named {sweep.name!r} at {exp_dir} was launched with another {changed}: pass --name for a "
                "new sweep (or --storage for another folder)"
            )
        store = _adopt(record, sweep, how)
        return ("report" if _ended(exp_dir) else "resume"), store
    if has_state:
        raise SourcetraceError(
            f"{exp_dir} holds a Tune experiment that no sourcetrace sweep recorded: pass --name for a new one"
        )
    sweep.base.update({"data.root": str(Path(how.root).resolve())})
    if how.protocol:
        sweep.base["data.protocol"] = str(Path(how.protocol).resolve())
    pin_overrides(sweep, list(how.set))
    return "", resolve_store(how.tracking_uri)


def write_record(exp_dir: Path, sweep: SweepFile, store, how: Launch) -> None:
    record = {
        "sweep_file": str(sweep.path.resolve()),
        "name": sweep.name,
        "smoke": sweep.smoke,
        "tune": sweep.tune.to_dict(),
        "resources": sweep.resources,
        "tracking_uri": store.uri,
        "experiment": sweep.name,
        "space_keys": list(sweep.space),
        "launch": launch(how, sweep),
    } | sweep.spec.to_dict()
    (exp_dir / RECORD).write_text(json.dumps(record, indent=2, default=str))


# Tune's state files: Ray writes them into the sweep folder in place, so a storage fault mid-write (a full disk, a
# folder made read-only) leaves one empty or cut short, and Tune, failing to restore it, restarts the whole sweep.
TUNE_STATE = (
    "experiment_state-*.json",
    "basic-variant-state-*.json",
    "search_gen_state-*.json",
    "searcher-state-*.pkl",
    "callback-states-*.pkl",
)


def set_aside_cut_short(exp_dir: Path) -> None:
    """Rename Tune's state files that a storage fault cut short to ``*.cut-short`` (one note each), so a resume
    restores the trials from the last whole ones (the trials' own folders hold their results)."""
    from sourcetrace.storage import storage_error

    for pattern in TUNE_STATE:
        for path in sorted(exp_dir.glob(pattern)):
            data = path.read_bytes()
            if pattern.startswith("experiment_state"):
                try:
                    whole = isinstance(json.loads(data), dict)
                except ValueError:
                    whole = False
            else:
                whole = data.endswith(b".")  # a pickle ends with its STOP opcode
            if whole:
                continue
            try:
                path.rename(path.with_name(path.name + ".cut-short"))
            except OSError as err:
                raise storage_error(err, path) from None
            print(f"note: {path} was cut short by a storage fault: set aside as {path.name}.cut-short", file=sys.stderr)


def _adopt(record: dict, sweep: SweepFile, how: Launch):
    """Take the recorded trial settings and store; a different ``--tracking-uri`` is refused."""
    from sourcetrace.tracking.store import resolve_store

    sweep.base, sweep.recipes = record["base"], recipes_of(record)  # resumed trials keep their settings
    sweep.tune, sweep.resources = TuneSettings.from_dict(record["tune"], recorded=True), record["resources"]
    store = resolve_store(record["tracking_uri"])
    if how.tracking_uri and resolve_store(how.tracking_uri).uri != store.uri:
        raise SourcetraceError(f"{sweep.name} logs to {store.uri}; it cannot move to {how.tracking_uri}")
    return store


def _ended(exp_dir: Path) -> bool:
    """Every trial Tune knows of has ended (finished, early-stopped or failed)."""
    from sourcetrace.sweep.report import trials_frame

    try:
        status = trials_frame(exp_dir).drop_duplicates("trial_id")["status"]
    except SourcetraceError:  # no trial yet
        return False
    return not status.isin(UNFINISHED).any()
