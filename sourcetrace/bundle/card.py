"""The bundle's model card: what the model is for, what it was trained on, how well it did, where it fails.

``model_card.json`` is for programs, ``model_card.md`` for people: a Hugging Face model card (YAML front
matter, then intended use, out-of-scope use, training data, evaluation with clip counts and 95 % intervals
per condition, known failure modes, how to read the scores, enrolled systems, provenance). Both hold the
same facts and no machine's paths: the model's source, the corpus and the protocol are named relative to
each other or by their folder names. Metrics are the checkpoint's own (``metrics.json`` of its best
evaluation), beside the featureless baseline's where the sweep recorded one (``baseline_*``); a rate with
its clip count gets a Wilson 95 % interval, an EER its clip counts only (its pairs are not independent
draws). Enrolment rewrites the card's enrolled systems (``enrolled_card``), under the bundle's lock.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sourcetrace.bundle import files
from sourcetrace.storage import RECORD

CARD_FORMAT = 2
ENROLLED_MARK = "<!-- enrolled systems: rewritten by `sourcetrace enroll` -->"
Z95 = 1.959963984540054  # two-sided 95 % normal quantile
RATE_COUNTS = {  # open-set rate -> the clip count it is a share of
    "closed_accuracy": "n_known",
    "false_unknown_rate": "n_known",
    "false_known_rate": "n_unknown",
}
TAGS = ("audio", "audio-classification", "source-tracing", "synthetic-speech", "speech-deepfake", "sourcetrace")


def git_commit() -> str | None:
    """The commit of the sourcetrace source tree, when it is a git checkout."""
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10, check=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def sweep_baseline(checkpoint: Path) -> dict[str, float]:
    """The featureless baseline's metrics of the sweep a checkpoint belongs to (``SWEEP/baseline.json``,
    written by the sweep beside its record), as ``baseline_<metric>`` keys; empty when there is none."""
    for folder in list(Path(checkpoint).resolve().parents)[:4]:
        path = folder / "baseline.json"
        if (folder / RECORD).is_file() and path.is_file():
            try:
                metrics = json.loads(path.read_text()).get("metrics", {})
            except (json.JSONDecodeError, AttributeError, OSError):
                return {}
            return {f"baseline_{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    return {}


def _split_metrics(metrics: dict) -> dict[str, dict[str, dict[str, float]]]:
    """{"model"|"baseline": {condition ("all" first): {metric: value}}} from flat ``name[.condition]`` keys."""
    table: dict[str, dict[str, dict[str, float]]] = {"model": {}, "baseline": {}}
    for key, value in sorted(metrics.items()):
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            continue
        name, _, cond = key.partition(".")
        who = "baseline" if name.startswith("baseline_") else "model"
        name = name.removeprefix("baseline_")
        table[who].setdefault(cond or "all", {})[name] = float(value)
    return table


def wilson(k: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval of a proportion k / n (95 % by default).

    >>> [round(x, 4) for x in wilson(0, 20)]
    [0.0, 0.1611]
    >>> [round(x, 4) for x in wilson(19, 20)]
    [0.7639, 0.9911]
    """
    if n <= 0:
        raise ValueError(f"a proportion needs n >= 1 clips, got {n}")
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    lo, hi = max(0.0, mid - half), min(1.0, mid + half)
    return (0.0 if k <= 0 else min(lo, p)), (1.0 if k >= n else max(hi, p))  # exact at the ends, not rounded


def _interval(value: float, n: int) -> dict:
    lo, hi = wilson(round(value * n), n)
    return {"value": value, "n": int(n), "ci95": [lo, hi], "method": "Wilson score"}


def rate_intervals(metrics: dict) -> dict[str, dict]:
    """``{key: {value, n, ci95, method}}`` for every open-set rate of ``metrics`` (flat keys such as
    ``dev_openset_false_known_rate``) whose clip count the metrics also hold."""
    out = {}
    for key, value in sorted(metrics.items()):
        for rate, count in RATE_COUNTS.items():
            if key.endswith("_openset_" + rate) and "." not in key:
                n = metrics.get(key.removesuffix(rate) + count)
                if isinstance(value, (int, float)) and isinstance(n, (int, float)) and n >= 1:
                    out[key] = _interval(float(value), int(n))
    return out


def _portable(path, *bases) -> str:
    """``path`` relative to the first of ``bases`` that holds it, else its last folders (never absolute)."""
    p = Path(os.path.abspath(path))
    for base in bases:
        try:
            rel = p.relative_to(Path(os.path.abspath(base)))
        except ValueError:
            continue
        return rel.as_posix() or "."
    return Path(*p.parts[-2:]).as_posix() if len(p.parts) > 2 else p.name


def _split_counts(table, renderings: int = 0) -> dict:
    """Clips and systems of one split, overall and per condition (each clean clip once per rendering too)."""
    factor = 1 + renderings
    conditions = {}
    for cond, rows in table.groupby("condition", sort=True):
        conditions[str(cond)] = {"n_clips": int(len(rows)) * factor, "n_systems": int(rows["system"].nunique())}
    return {"n_clips": int(len(table)) * factor, "n_systems": int(table["system"].nunique()), "conditions": conditions}


def _evaluation(cfg, proto, metrics: dict, known) -> dict:
    """The splits the metrics were measured on: clip and system counts per condition, unknown systems."""
    out = {}
    renderings = 0
    if cfg.data.dev_degrade:
        from sourcetrace.degrade import check_names, split_condition

        names = check_names(cfg.data.dev_degrade)
        renderings = sum(1 for chain, window in map(split_condition, names) if chain and window is None)
    tables = dict(proto.tables)
    wants_test = any(k.startswith("test_") for k in metrics)
    if wants_test and cfg.data.test_split not in tables:
        from sourcetrace.data.protocol import read_protocol
        from sourcetrace.errors import SourcetraceError

        try:
            got = read_protocol(proto.root, proto.folder, splits=(cfg.data.train_split, cfg.data.test_split))
            tables[cfg.data.test_split] = got.tables[cfg.data.test_split]
        except (SourcetraceError, KeyError, OSError):
            pass  # the test split's counts stay unrecorded
    for prefix, split, rend in (("dev", cfg.data.dev_split, renderings), ("test", cfg.data.test_split, 0)):
        if split not in tables or not any(k.startswith(prefix + "_") for k in metrics):
            continue
        table = tables[split]
        entry = {"split": split} | _split_counts(table, rend)
        entry["unknown_systems"] = sorted(set(table["system"]) - set(known))
        if rend:
            entry["renderings"] = rend
        out[prefix] = entry
    return out


def _loses_to_baseline(table: dict) -> list[dict]:
    """Every (metric, condition) of an EER the model and the baseline both have where the baseline is lower."""
    out = []
    for cond, row in table["model"].items():
        base = table["baseline"].get(cond, {})
        for name, value in sorted(row.items()):
            if name.endswith("eer") and name in base and value > base[name]:
                out.append({"metric": name, "condition": cond, "model": value, "baseline": base[name]})
    return out


def _corpus(proto, cfg) -> dict:
    root = Path(proto.root)
    info = {"name": root.name}
    try:
        built = json.loads((root / "corpus.json").read_text())  # a corpus built by `sourcetrace corpus build`
        info |= {k: built[k] for k in ("preset", "seed") if k in built}
    except (OSError, json.JSONDecodeError, TypeError):
        pass
    info["protocol"] = _portable(proto.folder, root)
    return info


def model_card(
    loaded, metrics: dict, train, proto, threshold: dict, scorer: str, resolved, calibration: dict | None = None
) -> tuple[dict, str]:
    """(model_card.json content, model_card.md text). ``calibration``: the bundle's calibration, when it has one
    (its ``description`` is quoted in "how to read the scores")."""
    from sourcetrace.evaluation.scorers import SCORERS
    from sourcetrace.version import __version__

    cfg = loaded.config
    langs = sorted(set(train["language"])) if "language" in train else []
    table = _split_metrics({**metrics, **sweep_baseline(resolved.checkpoint)})
    known = list(loaded.known_systems)
    thr = dict(threshold)
    thr_intervals = {}
    for rate, count in (("false_unknown_rate", "n_known"), ("false_known_rate", "n_unknown")):
        if isinstance(thr.get(rate), (int, float)) and isinstance(thr.get(count), int) and thr[count] >= 1:
            thr_intervals[rate] = _interval(float(thr[rate]), thr[count])
    per_system = train["system"].value_counts() if "system" in train else None
    card = {
        "card_format": CARD_FORMAT,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sourcetrace_version": __version__,
        "git_commit": git_commit(),
        "source": {
            "kind": resolved.kind,
            "name": Path(os.path.abspath(resolved.path)).name,
            "checkpoint": _portable(resolved.checkpoint, resolved.path) if resolved.checkpoint else None,
        },
        "model": {
            "name": cfg.model.name if not loaded.meta.get("fusion") else "fusion",
            "embedding_dim": int(getattr(loaded.model, "embedding_dim", cfg.model.embedding_dim)),
            "loss": cfg.loss.name,
            "sampler": cfg.sampler.name,
            "epoch": loaded.meta.get("epoch"),
        }
        | _fusion(loaded, resolved),
        "training_corpus": _corpus(proto, cfg)
        | {
            "train_split": cfg.data.train_split,
            "n_clips": int(len(train)),
            "n_clips_per_system": {str(k): int(v) for k, v in sorted(per_system.items())}
            if per_system is not None
            else None,
            "systems": known,
            "languages": langs,
            "dev_split": cfg.data.dev_split,
        },
        "metrics": table["model"],
        "baseline_metrics": table["baseline"] or None,
        "evaluation": _evaluation(cfg, proto, metrics, known),
        "intervals": rate_intervals(metrics),
        "loses_to_baseline": _loses_to_baseline(table),
        "open_set": {
            "scorer": scorer,
            "score_label": SCORERS[scorer].score_label if scorer in SCORERS else f"{scorer} score",
            "threshold": thr,
            "threshold_intervals": thr_intervals,
        },
        "calibration": calibration,
        "input": {
            "sample_rate": cfg.data.sample_rate,
            "eval_seconds": cfg.data.eval_seconds,
            "level": cfg.features.level,
            "dev_degrade": cfg.data.dev_degrade or None,
        },
        "enrolled_systems": [],
    }
    return card, markdown(card)


def _fusion(loaded, resolved) -> dict:
    """The members of a fused model (``sourcetrace/fusion.py``): checkpoint (relative), weight and recipe."""
    members = loaded.meta.get("fusion")
    if not members:
        return {}
    base = resolved.checkpoint or resolved.path
    out = []
    for m, cfg in zip(members, loaded.model.configs):
        recipe = {"name": cfg.model.name, "embedding_dim": cfg.model.embedding_dim, "loss": cfg.loss.name}
        entry = m | {"checkpoint": _portable(m["checkpoint"], base, Path(base).parent)} if "checkpoint" in m else m
        out.append(entry | recipe | {"band_stats": cfg.model.band_stats, "band_eq_db": cfg.augment.band_eq_db})
    return {"fusion": out}


# -- markdown ------------------------------------------------------------------------------------------


def _yaml_list(items) -> list[str]:
    return [f"  - {json.dumps(str(x))}" for x in items]


def _front_matter(card: dict) -> list[str]:
    """The Hugging Face card header (YAML; strings JSON-quoted, which YAML reads as they are)."""
    corpus = card["training_corpus"]
    metric_ids = ["eer", "min_dcf"] + (["roc_auc", "accuracy"] if card["intervals"] else [])
    lines = ["---", "library_name: sourcetrace", "license: mit", "pipeline_tag: audio-classification", "tags:"]
    lines += _yaml_list(TAGS)
    lines += ["datasets:"] + _yaml_list([corpus["name"]])
    lines += ["language:"] + _yaml_list(corpus["languages"] or ["multilingual"])
    lines += ["metrics:"] + _yaml_list(metric_ids)
    return lines + ["---", ""]


def _fmt(v, digits: int = 2) -> str:
    return "" if v is None else f"{v:.{digits}f}"


def _pct_ci(entry: dict) -> str:
    lo, hi = entry["ci95"]
    return f"{100 * entry['value']:.1f} % (95 % CI {100 * lo:.1f}-{100 * hi:.1f} %, n = {entry['n']})"


def _title(card: dict) -> str:
    m = card["model"]
    if not m.get("fusion"):
        return f"{m['name']}, {m['loss']} loss, {m['embedding_dim']}-d"
    parts = " and ".join(
        f"{f['name']} ({f['loss']}, {f['embedding_dim']}-d{', band statistics' if f['band_stats'] else ''}) "
        f"x {f['weight']:.2g}"
        for f in m["fusion"]
    )
    return f"score fusion of {parts}: {m['embedding_dim']}-d"


def _evaluation_lines(card: dict) -> list[str]:
    metrics, base, ev = card["metrics"], card["baseline_metrics"] or {}, card.get("evaluation", {})
    if not metrics:
        return ["No metrics were recorded with this checkpoint."]
    names = sorted({k for row in metrics.values() for k in row if k.endswith("eer") and "openset" not in k})
    with_base = [n for n in names if any(n in r for r in base.values())]
    lines = [
        "All-pairs EER (%) of the checkpoint's best evaluation, per split and condition, with the clips it was "
        "measured on. An EER has no interval here: its trials are pairs of the same clips, not independent draws.",
        "",
    ]
    head = ["condition"] + [f"{p} clips" for p in ("dev", "test") if p in ev] + names
    head += [f"baseline {n}" for n in with_base]
    lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for cond in sorted(metrics, key=lambda c: (c != "all", c)):
        counts = []
        for p in ("dev", "test"):
            if p in ev:
                n = ev[p]["n_clips"] if cond == "all" else ev[p]["conditions"].get(cond, {}).get("n_clips")
                counts.append("" if n is None else str(n))
        cells = counts + [_fmt(metrics[cond].get(n)) for n in names]
        cells += [_fmt(base.get(cond, {}).get(n)) for n in with_base]
        lines.append(f"| {cond} | " + " | ".join(cells) + " |")
    if not base:
        lines += ["", "The featureless baseline was not recorded with this checkpoint (no sweep baseline)."]
    for p, entry in ev.items():
        if entry.get("renderings"):
            lines += ["", f"{p} counts include {entry['renderings']} rendering(s) of every clean clip."]
    if card["intervals"]:
        lines += ["", "Open-set and closed-set rates of the checkpoint (at its training-time threshold):", ""]
        lines += [f"- {key}: {_pct_ci(entry)}" for key, entry in card["intervals"].items()]
    return lines


def markdown(card: dict) -> str:
    """``model_card.md`` from ``model_card.json``'s content (enrolled systems included)."""
    corpus, thr = card["training_corpus"], card["open_set"]["threshold"]
    thr_ci = card["open_set"].get("threshold_intervals", {})
    ev = card.get("evaluation", {})
    unknown_dev = ev.get("dev", {}).get("unknown_systems", [])
    fkr = thr_ci.get("false_known_rate")
    lost = card.get("loses_to_baseline", [])
    lost_text = (
        "; ".join(f"{x['metric']} on {x['condition']} ({x['model']:.2f} vs {x['baseline']:.2f})" for x in lost)
        if lost
        else ("none measured" if card["baseline_metrics"] else "not measured (no baseline recorded)")
    )
    lines = _front_matter(card) + [
        f"# sourcetrace model: {_title(card)}",
        "",
        "Attributes a synthetic speech clip to the text-to-speech system that made it, among the "
        f"{len(corpus['systems'])} systems it was trained on and any enrolled later, or answers `unknown`. "
        "Use it with `sourcetrace trace --model BUNDLE clips...` or `sourcetrace.load(BUNDLE).trace(clips)`.",
        "",
        "## Intended use",
        "- Source tracing of audio already believed to be synthetic speech: which known TTS system (engine, voice, "
        "vocoder) most likely made it, with a score and an `unknown` decision for systems it does not know.",
        "- A lead for an analyst, to be weighed with other evidence; `trace --format json` records the clip's "
        "SHA-256, the bundle's hash, the sourcetrace version and the time for a case file.",
        "- Enrolling new systems from a few of their clips (`sourcetrace enroll`), without retraining.",
        "",
        "## Out-of-scope use",
        "- Real human speech: the model does not tell real from synthetic speech; a human recording is attributed "
        "to its nearest system or `unknown`, and either answer means nothing.",
        "- TTS systems and families absent from the training list below (neural TTS families in particular): at "
        "best they are `unknown`; a near relative of a training system is accepted as known"
        + (f" at {_pct_ci(fkr)} on the dev split's unknown systems" if fkr else "")
        + ".",
        "- Telephone (narrow-band, 8 kHz) and heavily processed audio: read and resampled, and marked so in the "
        "output, but not measured here unless a condition below says so.",
        f"- The conditions where it loses to the featureless baseline: {lost_text}.",
        "- Deciding anything alone: the scores are similarities, and the threshold was set on one dev split.",
        "",
        "## Training data",
        f"- Corpus `{corpus['name']}`"
        + (f" (preset {corpus['preset']}, seed {corpus['seed']})" if "preset" in corpus else "")
        + f", protocol `{corpus['protocol']}`: the {corpus['train_split']} split, "
        f"{corpus['n_clips']} reference clips that fit the open-set scorer.",
        f"- {len(corpus['systems'])} systems: {', '.join(corpus['systems'])}",
        f"- {len(corpus['languages'])} languages: {', '.join(corpus['languages']) or 'not recorded'}",
        f"- Threshold set on the {corpus['dev_split']} split.",
        "",
        "## Evaluation",
        *_evaluation_lines(card),
        "",
        "## Known failure modes",
        f"- Unknown systems accepted as known: {_pct_ci(fkr) if fkr else 'not measured (no unknown system in dev)'}"
        + (f" on the dev split's unknown systems ({', '.join(unknown_dev)})" if unknown_dev else "")
        + ". Near relatives of a training system (the same engine with another vocoder or voice) are the "
        "likeliest to be accepted.",
        f"- Known systems' clips called unknown: {_pct_ci(thr_ci['false_unknown_rate'])} on dev, where the "
        "threshold was set (so this rate is the target, not an independent measurement)."
        if "false_unknown_rate" in thr_ci
        else "- Known systems' clips called unknown: not recorded.",
        f"- Conditions where the featureless baseline does better: {lost_text}.",
        "- Clips shorter than half the training crop are refused; long clips are heard through one centred "
        f"window of {card['input']['eval_seconds']:g} s unless `--crop multi` or `full` is given.",
        "",
        "## How to read the scores",
        f"Each clip gets a knownness, {card['open_set'].get('score_label', 'the scorer score')} "
        f"({card['open_set']['scorer']} scorer), and per top-k system the scorer's score against that system's "
        f"references. These are similarities, not probabilities. The decision is `unknown` below the threshold, "
        f"{thr['description']}.",
    ]
    cal = card.get("calibration")
    if cal:
        lines += [
            "",
            "`p_known` is the calibrated probability that the clip comes from a known system, and each top-k "
            "entry's `p` the probability of that system given that the clip's system is known, fitted on the "
            f"dev split: {cal.get('description', cal.get('method', 'see calibration.json'))}. They sit beside "
            "the raw scores; the decision is still the threshold on the knownness.",
        ]
    else:
        lines += ["", "This bundle holds no calibration: no probabilities are given."]
    lines += [
        "",
        "## Provenance",
        f"Exported {card['created']} with sourcetrace {card['sourcetrace_version']} "
        f"(commit {card['git_commit'] or 'unknown'}) from the {card['source']['kind']} `{card['source']['name']}`"
        + (f" (checkpoint `{card['source']['checkpoint']}`)" if card["source"].get("checkpoint") else "")
        + ".",
        "",
    ]
    return "\n".join(lines) + "\n" + _enrolled_section(card.get("enrolled_systems", []))


def _enrolled_section(systems: list[dict]) -> str:
    lines = [ENROLLED_MARK, "## Enrolled systems"]
    if not systems:
        lines.append("None: the bundle knows only its training systems.")
    for s in systems:
        ov = s.get("overlap")
        note = ""
        if ov:
            note = (
                f"; before enrolment {ov['known_as']} of {ov['n_clips']} of its clips were attributed to "
                f"{ov['nearest']} as known" + (" (overlaps it)" if ov.get("overlaps") else "")
            )
        lines.append(f"- {s['name']}: {s['n_clips']} clips{note}")
    return "\n".join(lines) + "\n"


def enrolled_card(folder: str | os.PathLike, systems: list[dict], overlaps: dict[str, dict]) -> dict[str, str]:
    """The card files (name -> text) with the enrolled ``systems`` (``enrolled.json``'s entries) listed, their
    clip counts and, from ``overlaps`` or as the card recorded it before, how close each was to the existing
    systems when enrolled. Empty for a bundle without a card. Call under the bundle's lock."""
    folder = Path(folder)
    if not (folder / files.CARD_JSON).is_file():
        return {}
    card = files.read_json(folder, files.CARD_JSON)
    if not isinstance(card, dict):
        raise files.BundleError(f"{folder / files.CARD_JSON}: not a model card (a JSON object)")
    before = {s.get("name"): s for s in card.get("enrolled_systems") or [] if isinstance(s, dict)}
    card["enrolled_systems"] = [
        {
            "name": e["name"],
            "n_clips": len(e["clips"]),
            "overlap": overlaps.get(e["name"], before.get(e["name"], {}).get("overlap")),
        }
        for e in systems
    ]
    out = {files.CARD_JSON: json.dumps(card, indent=2, sort_keys=True, allow_nan=False) + "\n"}
    if card.get("card_format", 1) >= CARD_FORMAT:
        out[files.CARD_MD] = markdown(card)
    elif (folder / files.CARD_MD).is_file():  # an older card: its text stays, the enrolled section is replaced
        text = (folder / files.CARD_MD).read_text().split(ENROLLED_MARK)[0].rstrip("\n")
        out[files.CARD_MD] = text + "\n\n" + _enrolled_section(card["enrolled_systems"])
    return out


def write_card(folder: str | os.PathLike, card_files: dict[str, str]) -> None:
    """Write what ``enrolled_card`` made, each file atomically."""
    for name, text in card_files.items():
        files.atomic_write(Path(folder) / name, text)
