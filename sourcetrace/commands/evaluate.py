"""``sourcetrace evaluate``: a model and the featureless baseline scored on any MLAAD-layout corpus, clean and
under named degradations, each difference with its bootstrap interval (the metrics: ``evaluation/``)."""

from __future__ import annotations

import json
import math
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from sourcetrace.artefacts import load_any
from sourcetrace.data.bank import WaveBank
from sourcetrace.data.protocol import protocol_folder
from sourcetrace.degrade import check_names, rendered_parts, split_condition
from sourcetrace.degrade.codecs import require
from sourcetrace.device import autocast_dtype, flag_device
from sourcetrace.errors import ConfigError, ProtocolError, SourcetraceError
from sourcetrace.evaluation.baseline import clip_features, standardise
from sourcetrace.evaluation.bootstrap import MARGIN_PP, N_BOOT
from sourcetrace.evaluation.degraded import format_degraded, summary
from sourcetrace.evaluation.embed import embed_waves
from sourcetrace.evaluation.evaluate import (
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    _metrics,
    eer_intervals,
    format_table,
    long_table,
    read_corpus,
    sample_per_system,
    split_csv,
)
from sourcetrace.storage import writable_folder


def score(
    model_path: str | os.PathLike,
    root: str | os.PathLike,
    protocol: str | os.PathLike | None = None,
    split: str = "eval",
    out: str | os.PathLike | None = None,
    *,
    device: str = "auto",
    batch_size: int = 64,
    degrade: str | list[str] | None = None,
    degrade_seed: int = 0,
    eval_seconds: float | None = None,
    max_clips_per_system: int = 0,
    n_boot: int = N_BOOT,
    command: str | None = None,
) -> dict[str, Any]:
    """Score the model and the baseline on ``split`` of the corpus at ``root``; write metrics.json/.parquet.

    Every model-vs-baseline EER difference (overall and on the unseen-system conditions, clean and under each
    degradation) gets a paired bootstrap 95 % interval over systems and clips within them (``n_boot``
    resamples, ``evaluation/bootstrap.py``; 0: none), stored under ``intervals``; the verdicts read them.

    ``max_clips_per_system`` k > 0 scores a seeded sample of at most k clips of each system of the split (the
    same clips every time), for a quicker check; 0 scores them all.

    ``command``: the command line that asked for it, recorded in metrics.json with the version and git commit.

    ``eval_seconds``: the centred window both embed (0 = the whole clip); default the model's
    ``data.eval_seconds``, the window it was selected on.

    ``degrade`` (names or "mp3_32,replay"): also score the split's clips after each degradation (rendered
    and cached by ``sourcetrace.degrade``), against the same clean training references. A chain
    (``replay+amr_nb``) is rendered left to right; the set ``everyday`` expands in place. An evaluation
    window (``short_1s``, ``short_2s``, or ending a chain: ``amr_nb+short_1s``) is no rendering: the model and
    the baseline embed the (rendered) split's clips with that centred window instead of ``eval_seconds``
    (shorter clips stay whole, wrap-padded as in every window); the training references keep the clean
    ``eval_seconds`` window. The result's ``degraded_summary`` holds, per scorer, the mean and the worst EER
    over the degraded conditions, and the conditions where the model does / does not beat the baseline.
    """
    from sourcetrace.degrade.render import render_files

    root = str(root)
    if eval_seconds is not None and not (
        math.isfinite(eval_seconds) and (eval_seconds == 0 or MIN_WINDOW_S <= eval_seconds <= MAX_WINDOW_S)
    ):
        raise ConfigError(
            f"--eval-seconds {eval_seconds!r} is not a window of {MIN_WINDOW_S:g} to {MAX_WINDOW_S:g} s "
            "(0 = whole clip)"
        )
    if n_boot < 0:
        raise ConfigError(f"--bootstrap {n_boot} is negative; 0 computes no interval")
    if max_clips_per_system < 0:
        raise ConfigError(f"--max-clips-per-system {max_clips_per_system} is negative; 0 scores every clip")
    names = check_names(degrade) if degrade else []
    require(rendered_parts(names))  # a missing encoder is named before the model is loaded or a clip decoded
    if not Path(root).is_dir():
        raise ProtocolError(f"corpus root {root!r} is not a folder")
    try:
        folder = protocol_folder(root, str(protocol) if protocol else None)
    except ProtocolError:  # a missing protocol folder is named after the model, as it always was
        folder = Path(root) / "protocol"
    split_csv(folder, split)  # --split is a name, not a path: refused before the model loads
    dev = flag_device(device)
    loaded = load_any(model_path, dev)  # a folder without a model fails here, before any decoding
    table, train, source, notes = read_corpus(root, str(protocol) if protocol else None, split)
    if max_clips_per_system:
        table = sample_per_system(table, max_clips_per_system)
        notes.append(f"a seeded sample of at most {max_clips_per_system} clips per system: {len(table)} clips")
    out = Path(out) if out else Path(loaded.path) / f"evaluate_{Path(root).resolve().name}_{split}"
    writable_folder(out, "the output folder", "choose another --out")  # before anything is decoded or scored

    cfg = loaded.config
    seconds = cfg.data.eval_seconds if eval_seconds is None else float(eval_seconds)
    sr, cache = cfg.data.sample_rate, os.environ.get("SOURCETRACE_CACHE") or None
    amp = autocast_dtype(cfg.train.precision, dev)
    banks = {"split": WaveBank.load(list(table["file"]), sample_rate=sr, cache_dir=cache)}
    if train is not None:
        banks["train"] = WaveBank.load(list(train["file"]), sample_rate=sr, cache_dir=cache)
    model_train = (
        embed_waves(loaded.model, banks["train"], seconds, batch_size, dev, sr, amp) if train is not None else None
    )
    raw_train = clip_features(banks["train"], seconds, sr) if train is not None else None

    intervals: dict[str, dict[str, dict]] = {}

    def measure(bank, window: float, name: str = "clean") -> dict[str, dict[str, float]]:
        """Model and baseline metrics of the split's clips in ``bank`` embedded with a centred ``window`` (s),
        references from the clean train split (``seconds``); the paired bootstrap interval of their EER
        difference goes to ``intervals[name]``."""
        model_emb = {"split": embed_waves(loaded.model, bank, window, batch_size, dev, sr, amp), "train": model_train}
        raw = clip_features(bank, window, sr)
        base_emb = {"split": standardise(raw), "train": None if train is None else standardise(raw_train, raw)}
        out = {
            "model": _metrics(model_emb, table, train, source != "none"),
            "baseline": _metrics(base_emb, table, train, source != "none"),  # z-scored on the scored split
        }
        if n_boot:
            intervals[name] = eer_intervals(model_emb["split"], base_emb["split"], table, out, n_boot)
        return out

    metrics = measure(banks["split"], seconds)
    degraded, windows, kept = {}, {}, {}
    conditions = [split_condition(name) for name in names]
    for i, (name, (chain, window)) in enumerate(zip(names, conditions)):
        if chain is None:
            bank = banks["split"]
        else:  # a chain scored with and without a window is loaded once, and held only while still needed
            bank = kept.pop(chain, None)
            if bank is None:
                rendered = render_files(list(table["file"]), chain, degrade_seed, sr, progress=True)
                bank = WaveBank.load(rendered, sample_rate=sr, cache_dir=cache)
            if any(c == chain for c, _ in conditions[i + 1 :]):
                kept[chain] = bank
        if window is not None:
            windows[name] = window
        degraded[name] = measure(bank, seconds if window is None else window, name)
    out.mkdir(parents=True, exist_ok=True)
    from sourcetrace.bundle.card import git_commit
    from sourcetrace.version import __version__

    result = {
        "sourcetrace_version": __version__,
        "git_commit": git_commit(),
        "command": command,
        "machine": machine(),
        "model": str(loaded.path),
        "corpus": str(Path(root).resolve()),
        "split": split,
        "n_clips": int(len(table)),
        "eval_seconds": seconds,
        "n_systems": int(table["system"].nunique()),
        "conditions_from": source,
        "notes": notes,
        "metrics": metrics,
    }
    if intervals:
        result["intervals"] = intervals
        result["bootstrap"] = {"n_boot": n_boot, "margin_pp": MARGIN_PP, "over": "systems, then clips within them"}
    if names:
        result |= {"degraded": degraded, "degrade_seed": degrade_seed, "degrade_windows": windows}
        result["degraded_summary"] = summary(result)
    (out / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    long_table(metrics, degraded).to_parquet(out / "metrics.parquet", index=False)
    return result | {"out": out}


def machine() -> str:
    """What computed the numbers: CPU model and count (CPU training and scoring reproduce on one machine)."""
    import platform

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), model)
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} CPUs"


def run(args) -> int:
    """``sourcetrace evaluate --model MODEL --root DIR [--protocol P] [--split eval] [--out DIR]``."""
    if not args.model:
        raise SourcetraceError("--model is required (a run or checkpoint folder)")
    res = score(
        args.model,
        args.root,
        args.protocol,
        args.split,
        args.out,
        degrade=args.degrade,
        eval_seconds=args.eval_seconds,
        max_clips_per_system=args.max_clips_per_system,
        n_boot=args.bootstrap,
        command=shlex.join(["sourcetrace", *sys.argv[1:]]),
    )
    print(format_table(res))
    if res.get("degraded"):
        print(format_degraded(res))
    for note in res["notes"]:
        print(f"note: {note}")
    print(f"wrote {res['out'] / 'metrics.json'} and metrics.parquet")
    return 0
