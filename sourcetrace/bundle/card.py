"""The bundle's model card: what the model was trained on, how well it did, how it decides "unknown".

``model_card.json`` is for programs, ``model_card.md`` for people; both hold the same facts: the
training corpus with its systems and languages, the checkpoint's metrics overall and per condition
(with the featureless baseline's beside them where the checkpoint recorded them as ``baseline_*``),
the open-set scorer and threshold, the sourcetrace version, the git commit and the date.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from sourcetrace.sweep import RECORD


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
        if not isinstance(value, (int, float)):
            continue
        name, _, cond = key.partition(".")
        who = "baseline" if name.startswith("baseline_") else "model"
        name = name.removeprefix("baseline_")
        table[who].setdefault(cond or "all", {})[name] = float(value)
    return table


def model_card(loaded, metrics: dict, train, proto, threshold: dict, scorer: str, resolved) -> tuple[dict, str]:
    """(model_card.json content, model_card.md text)."""
    from sourcetrace import __version__

    cfg = loaded.config
    langs = sorted(set(train["language"])) if "language" in train else []
    table = _split_metrics({**metrics, **sweep_baseline(resolved.checkpoint)})
    card = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "sourcetrace_version": __version__,
        "git_commit": git_commit(),
        "source": {"kind": resolved.kind, "path": str(resolved.path), "checkpoint": str(resolved.checkpoint)},
        "model": {
            "name": cfg.model.name,
            "embedding_dim": cfg.model.embedding_dim,
            "loss": cfg.loss.name,
            "sampler": cfg.sampler.name,
            "epoch": loaded.meta.get("epoch"),
        }
        | _fusion(loaded),
        "training_corpus": {
            "root": cfg.data.root,
            "protocol": cfg.data.protocol or None,
            "train_split": cfg.data.train_split,
            "n_clips": int(len(train)),
            "systems": list(loaded.known_systems),
            "languages": langs,
            "dev_split": cfg.data.dev_split,
        },
        "metrics": table["model"],
        "baseline_metrics": table["baseline"] or None,
        "open_set": {"scorer": scorer, "threshold": threshold},
        "input": {"sample_rate": cfg.data.sample_rate, "eval_seconds": cfg.data.eval_seconds},
    }
    return card, _markdown(card)


def _fusion(loaded) -> dict:
    """The members of a fused model (``sourcetrace/fusion.py``): checkpoint, weight and recipe of each."""
    members = loaded.meta.get("fusion")
    if not members:
        return {}
    out = []
    for m, cfg in zip(members, loaded.model.configs):
        recipe = {"name": cfg.model.name, "embedding_dim": cfg.model.embedding_dim, "loss": cfg.loss.name}
        out.append(m | recipe | {"band_stats": cfg.model.band_stats, "band_eq_db": cfg.augment.band_eq_db})
    return {"fusion": out}


def _markdown(card: dict) -> str:
    corpus, m = card["training_corpus"], card["model"]
    title = f"{m['name']}, {m['loss']} loss, {m['embedding_dim']}-d"
    if m.get("fusion"):
        title = "score fusion of " + " and ".join(
            f"{f['name']} ({f['loss']}, {f['embedding_dim']}-d{', band statistics' if f['band_stats'] else ''}) "
            f"x {f['weight']:.2g}"
            for f in m["fusion"]
        )
    lines = [
        f"# sourcetrace model: {title}",
        "",
        f"Exported {card['created']} with sourcetrace {card['sourcetrace_version']} "
        f"(commit {card['git_commit'] or 'unknown'}) from {card['source']['path']}.",
        "",
        "## Training corpus",
        f"- {corpus['root']} ({corpus['train_split']} split; {corpus['n_clips']} reference clips fit the scorer)",
        f"- {len(corpus['systems'])} systems: {', '.join(corpus['systems'])}",
        f"- {len(corpus['languages'])} languages: {', '.join(corpus['languages']) or 'not recorded'}",
        "",
        "## Metrics of the checkpoint (EER in %, per condition)",
    ]
    metrics, base = card["metrics"], card["baseline_metrics"] or {}
    if not metrics:
        lines.append("No metrics were recorded with this checkpoint.")
    else:
        names = sorted({k for row in metrics.values() for k in row if k.endswith("eer")}) or sorted(
            {k for row in metrics.values() for k in row}
        )
        head = [f"{n}" for n in names] + [f"baseline {n}" for n in names if any(n in r for r in base.values())]
        lines += ["| condition | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
        for cond in sorted(metrics, key=lambda c: (c != "all", c)):
            cells = [_fmt(metrics[cond].get(n)) for n in names]
            cells += [_fmt(base.get(cond, {}).get(n)) for n in names if any(n in r for r in base.values())]
            lines.append(f"| {cond} | " + " | ".join(cells) + " |")
        if not base:
            lines += ["", "The featureless baseline was not recorded with this checkpoint."]
    thr = card["open_set"]["threshold"]
    lines += ["", "## Open-set decision", f"Scorer: {card['open_set']['scorer']}. {thr['description']}.", ""]
    return "\n".join(lines)


def _fmt(v) -> str:
    return "" if v is None else f"{v:.2f}"
