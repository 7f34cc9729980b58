"""``sourcetrace sweep``: launch a sweep file (``sweep/run.py``), then end it: the featureless baseline, the fusion,
the reports, the export of the model handed over (``sweep/handover.py``), its field check and analyses.

Everything after Tune is here, in the order it runs; each step that fails leaves a note and the steps before
it stand. (Its imports load torch, pandas and MLflow: only once a sweep runs.)
"""

from __future__ import annotations

import sys
from pathlib import Path

from sourcetrace.artefacts import SWEEP_BUNDLE, export
from sourcetrace.commands.analyze import analyze
from sourcetrace.commands.evaluate import score
from sourcetrace.errors import SourcetraceError, StorageError
from sourcetrace.interrupt import EXIT_CODES
from sourcetrace.storage import storage_error
from sourcetrace.sweep.baseline import sweep_baseline
from sourcetrace.sweep.handover import HandedOver, handed_over, read_sweep_fusion
from sourcetrace.sweep.record import Launch
from sourcetrace.sweep.report import format_table1, report_with_or_without_mlflow
from sourcetrace.sweep.run import run_sweep
from sourcetrace.sweep.spec import SweepFile
from sourcetrace.tracking.store import log_artifact_dir, noting_failure, store_failed, store_fault


def run(args) -> int:
    """``sourcetrace sweep FILE --root DIR``: run the sweep, then report it and hand over its model."""
    launch = Launch(
        sweep_file=args.sweep_file,
        root=args.root,
        protocol=args.protocol,
        smoke=args.smoke,
        set=tuple(args.set),
        name=args.name,
        storage=args.storage,
        tracking_uri=args.tracking_uri,
        resume=args.resume,
        address=args.address,
        verbose=args.verbose,
        dashboard=args.dashboard,
    )
    ran = run_sweep(launch)
    code = finish(ran.exp_dir, ran.store, ran.sweep, analyze=not args.no_analyze)
    return EXIT_CODES[ran.signal] if ran.signal else code


def finish(exp_dir: Path, store, sweep: SweepFile, analyze: bool = True) -> int:
    """The end of a sweep: baseline, fusion, reports, the export of the model handed over, its field check and
    analyses. Writes and prints the reports; non-zero exit when trials failed (1) or did not end (130)."""

    def live():  # the store, None once it has failed (mid-sweep too): what goes to it then waits for --resume
        return None if store_failed(store) else store

    try:
        with noting_failure(store):  # the featureless row of Table 1, an MLflow run
            sweep_baseline(exp_dir, sweep.base, live() and store.uri, sweep.name)
    except StorageError:
        raise
    except SourcetraceError as err:  # the trials' results still get their report
        print(f"note: no baseline row: {err}", file=sys.stderr)
    if sweep.tune.fuse:
        with noting_failure(store):
            _fuse(exp_dir, live(), sweep)
    try:
        reports = report_with_or_without_mlflow(exp_dir, store)
    except OSError as err:
        raise storage_error(err, exp_dir / "report") from err
    print(format_table1(reports))
    print(f"reports: {reports.out_dir}")
    status = reports.trials.drop_duplicates("trial_id")["status"]
    chosen = handed_over(exp_dir, reports.trials)
    fusion = read_sweep_fusion(exp_dir)
    if fusion is not None and chosen is not None and chosen.kind == "trial":
        print(
            f"note: the fusion ({fusion['name']}, dev EER {fusion['metrics'].get('dev_eer', float('nan')):.2f}%) does "
            f"not beat its best member on dev: {chosen.what} is handed over",
            flush=True,
        )
    bundle = export_best(exp_dir, chosen, live())  # the portable bundle of the model handed over, logged
    _mark_handed_over(chosen, live(), sweep, bundle)  # to its run, registered as an MLflow model
    field = _field_check(chosen, reports, sweep) if sweep.tune.field_check else None
    _log_reports(chosen, reports, live(), field)
    if analyze:
        _analyze_best(chosen, reports, sweep, live())
    if store_failed(store):  # the trials and the reports stand; --resume logs and closes what the runs missed
        raise store_fault(store, exp_dir)
    if status.isin(["running", "pending", "interrupted"]).any():
        _mark_interrupted(reports, store, sweep)
        print("sweep interrupted: continue it with --resume (same --name/--storage)", file=sys.stderr)
        return 130
    return 1 if (status == "failed").any() else 0


def _mark_interrupted(reports, store, sweep: SweepFile) -> None:
    """True MLflow records after a signal: the runs of trials that did not end say "interrupted" (KILLED)."""
    from sourcetrace.tracking.store import mark_interrupted, quiet_db, store_errors

    per_trial = reports.trials.drop_duplicates("trial_id")
    cut = per_trial.loc[per_trial["status"].isin(["running", "pending", "interrupted"]), "trial_id"]
    try:
        with quiet_db():
            mark_interrupted(store, sweep.name, list(cut))
    except store_errors() as err:  # the report and the sweep folder stand; --resume reopens the runs
        print(f"note: MLflow runs of interrupted trials not marked: {type(err).__name__}: {err}", file=sys.stderr)


def _mark_handed_over(chosen: HandedOver | None, store, sweep: SweepFile, bundle: Path | None) -> None:
    """Tag the MLflow run of the model the sweep hands over (its fusion's or its best trial's), and log its
    ``bundle`` there as an MLflow model registered under the sweep's name (``tracking/pyfunc.py``)."""
    from sourcetrace.tracking.pyfunc import log_handed_over_model
    from sourcetrace.tracking.store import mark_handed_over, quiet_db, store_errors

    if chosen is None or not chosen.run_id or store is None:  # None: the store failed during the sweep
        return
    try:
        with quiet_db():
            mark_handed_over(store, sweep.name, chosen.run_id)
    except store_errors() as err:  # the bundle on disk stands
        store_failed(store, err)  # the sweep ends with exit 1: --resume tags it
        print(
            f"note: MLflow run {chosen.run_id} not tagged as handed over: {type(err).__name__}: {err}", file=sys.stderr
        )
        return
    if bundle is not None:
        log_handed_over_model(store, sweep.name, chosen.run_id, bundle)


def _fuse(exp_dir: Path, store, sweep: SweepFile) -> None:
    """Fuse the best trial of each value of TUNE fuse once every trial has ended (``sweep/fuse.py``)."""
    from sourcetrace.sweep.fuse import sweep_fusion
    from sourcetrace.sweep.report import trials_frame
    from sourcetrace.sweep.status import UNFINISHED

    key = sweep.tune.fuse
    try:
        trials = trials_frame(exp_dir)
        if trials["status"].isin(["running", *UNFINISHED]).any():
            return  # fused when the resumed sweep ends
        sweep_fusion(exp_dir, trials, key, sweep.space[key]["grid_search"], store and store.uri, sweep.name)
    except SourcetraceError as err:  # the trials' results still get their report
        print(f"note: no fusion of the best trial per {key}: {err}", file=sys.stderr)


def _field_check(chosen: HandedOver | None, reports, sweep: SweepFile) -> dict | None:
    """The model handed over beside the baseline on the test split, clean and under TUNE field_check's
    conditions (``evaluate --degrade``), written to ``report/field/`` and printed as one table."""
    from sourcetrace.config import Config
    from sourcetrace.evaluation.degraded import format_field

    if chosen is None:
        return
    model, what = chosen.folder, chosen.what
    cfg = Config.from_dict(sweep.base)
    try:
        res = score(
            model,
            cfg.data.root,
            cfg.data.protocol or None,
            cfg.data.test_split,
            reports.out_dir / "field",
            degrade=sweep.tune.field_check,
            max_clips_per_system=int(sweep.tune.field_check_clips),
        )
    except SourcetraceError as err:  # the reports and the bundle stand
        print(f"note: no field check of the model handed over: {err}", file=sys.stderr)
        return None
    print(f"field check of the model handed over ({what}):")
    print(format_field(res))
    for note in res["notes"]:
        print(f"  note: {note}")
    return res


def _log_reports(chosen: HandedOver | None, reports, store, field: dict | None) -> None:
    """Put the sweep's results where MLflow users look, on the handed-over run (artifact ``report/``): Table 1
    as text and parquet, the model-vs-baseline comparison, the field check, and their figures (per condition
    of the test split, and per field condition with its interval)."""
    from sourcetrace.evaluation.degraded import columns, interval_of
    from sourcetrace.evaluation.plots import plot_beside_baseline

    if chosen is None or not chosen.run_id:
        return
    out = reports.out_dir
    try:
        (out / "table1.txt").write_text(format_table1(reports) + "\n")
        if reports.comparison is not None:
            test = reports.comparison[reports.comparison["split"] == "test"]
            rows = [(r.condition, r.model_eer, r.baseline_eer) for r in test.itertuples()]
            if rows:
                plot_beside_baseline(rows, out / "plots" / "conditions.png", f"{chosen.what}: test EER per condition")
        if field is not None:
            model, base = columns(field, "model"), columns(field, "baseline")
            rows = [(n, model[n]["eer"], base[n]["eer"]) for n in model if n in base]
            ivs = {n: (iv["lo"], iv["hi"]) for n in model if (iv := interval_of(field, n))}
            title = f"field check: {field['split']}, {field['n_clips']} clips (model - baseline, 95 % interval)"
            plot_beside_baseline(rows, out / "plots" / "field.png", title, ivs)
    except OSError as err:  # the reports on disk stand
        print(f"note: the report's figures could not be written: {err}", file=sys.stderr)
        return
    if store is not None:  # None: the store failed during the sweep
        log_artifact_dir(store, chosen.run_id, out, "report")


def _analyze_best(chosen: HandedOver | None, reports, sweep: SweepFile, store) -> None:
    """Linear probe / confusion / UMAP of the model the sweep hands over (as ``sourcetrace analyze``), logged
    to its MLflow run."""
    from sourcetrace.evaluation.analyze import summary

    if chosen is None:
        return
    model, run_id = chosen.folder, chosen.run_id
    root, protocol = sweep.base["data.root"], sweep.base.get("data.protocol")
    res = analyze(model, root, protocol, "dev", reports.out_dir / "best_analysis")
    print(summary(res, "dev"))
    if run_id and store is not None:  # the plots and tables beside the model's run in MLflow
        log_artifact_dir(store, run_id, res["out"], "best_analysis")


def export_best(exp_dir: Path, chosen: HandedOver | None, store=None) -> Path | None:
    """What a finished sweep hands over (``sweep/handover.py``) -> ``EXP/best_model``, printed and logged to its
    MLflow run as the ``bundle`` artifact folder. A failure is a note: the sweep's results stand."""
    if chosen is None:
        return None
    run_id, what = chosen.run_id, chosen.what
    try:
        out = export(chosen.folder, Path(exp_dir) / SWEEP_BUNDLE, overwrite=True)
    except SourcetraceError as err:
        print(f"note: the best model's bundle was not written: {err}", file=sys.stderr)
        return None
    print(f"best model bundle: {out}  ({what})", flush=True)
    if store is not None and run_id:
        log_artifact_dir(store, run_id, out, "bundle")
    return out
