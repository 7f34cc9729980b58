"""Compare the open-set scorers on one trained model: known-vs-unknown detection on dev and eval.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_openset.py MODEL [--root DIR] [--protocol P]
        [--scorers centroid knn:k=5 mahalanobis ...] [--cache EMB.npz] [--json OUT.json]

Embeds the reference clips of the training split (``reference_rows``: the policy that training,
``analyze`` and attribution share), dev and eval once (``--cache`` keeps them for re-runs), then per
scorer: AUROC, FPR95 and EER of "known system vs unseen system" on dev and on eval, the "unknown"
threshold calibrated on dev at a 5 % false-unknown rate, and at that threshold the false-known rate on
eval and the share of each unseen system's clips accepted as known (with the known system they are
most often attributed to).
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np


def parse_scorer(spec: str) -> tuple[str, dict]:
    """``knn:k=5`` -> ("knn", {"k": 5})."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        params[key] = int(value) if value.lstrip("-").isdigit() else float(value)
    return name, params


def embeddings(args) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """{"ref" | "dev" | "eval": (embeddings, system names, language seen in train)}, from the cache when
    it is there."""
    if args.cache and Path(args.cache).is_file():
        with np.load(args.cache, allow_pickle=False) as z:
            return {k: (z[f"{k}_x"], z[f"{k}_s"], z[f"{k}_l"]) for k in ("ref", "dev", "eval")}
    from sourcetrace.artefacts import load_any
    from sourcetrace.data.protocol import read_checked
    from sourcetrace.device import flag_device
    from sourcetrace.evaluation.embed import embed_table
    from sourcetrace.evaluation.openset import reference_table

    device = flag_device(args.device)
    loaded = load_any(args.model, device)  # a run, checkpoint, fusion, sweep folder or bundle
    root, protocol = loaded.data_location(args.root, args.protocol)
    cfg = loaded.config
    proto = read_checked(root, protocol, (cfg.data.train_split, cfg.data.dev_split, args.eval_split))
    tables = {
        "ref": reference_table(proto.tables[cfg.data.train_split], loaded.known_systems),
        "dev": proto.tables[cfg.data.dev_split],
        "eval": proto.tables[args.eval_split],
    }
    out = {}
    for key, table in tables.items():
        t0 = time.perf_counter()
        x = embed_table(loaded, table, device)
        dt = time.perf_counter() - t0
        print(f"embedded {key}: {len(table)} clips in {dt:.1f} s ({1000 * dt / max(1, len(table)):.1f} ms/clip)")
        out[key] = (x, table["system"].to_numpy(dtype=str), table["language_seen"].to_numpy(dtype=bool))
    if args.cache:
        np.savez(args.cache, **{f"{k}_{p}": v[i] for k, v in out.items() for i, p in enumerate("xsl")})
    return out


def bootstrap_fpr95(dev_scores: dict[str, np.ndarray], known: np.ndarray, n: int, seed: int = 0) -> dict:
    """Per scorer: 95 % interval of dev FPR95 over ``n`` resamples of dev (known and unknown clips drawn
    separately, the same draw for every scorer) and how often it beats the first scorer."""
    from sourcetrace.evaluation.openset import fpr_at_tpr

    rng = np.random.default_rng(seed)
    ki, ui = np.flatnonzero(known), np.flatnonzero(~known)
    draws = {k: [] for k in dev_scores}
    for _ in range(n):
        idx = np.r_[rng.choice(ki, len(ki)), rng.choice(ui, len(ui))]
        for k, v in dev_scores.items():
            draws[k].append(fpr_at_tpr(v[idx], known[idx]))
    first = np.array(next(iter(draws.values())))
    return {
        k: {
            "lo": float(np.percentile(v, 2.5)),
            "hi": float(np.percentile(v, 97.5)),
            "beats_first": float(np.mean(np.array(v) < first)),
        }
        for k, v in draws.items()
    }


def compare(emb: dict, specs: list[str], n_boot: int = 1000) -> list[dict]:
    from sourcetrace.evaluation.openset import calibrate_threshold, fit_scorer, openset_scores

    ref_x, ref_s, _ = emb["ref"]
    rows, dev_scores = [], {}
    for spec in specs:
        name, params = parse_scorer(spec)
        t0 = time.perf_counter()
        scorer = fit_scorer(name, ref_x, ref_s, **params)
        dev = openset_scores(scorer, *emb["dev"][:2])
        thr = calibrate_threshold(dev.scores, np.isin(emb["dev"][1], scorer.systems), "fur", 0.05, scorer=name)
        row = {"scorer": spec, "threshold": thr.value}
        for split in ("dev", "eval"):
            x, names, lang_seen = emb[split]
            r = openset_scores(scorer, x, names, thr)
            known, rejected = np.isin(names, scorer.systems), r.scores < thr.value
            for tag, lang in (("seen", lang_seen), ("unseen", ~lang_seen)):  # known systems, by language
                row[f"{split}_false_unknown_lang_{tag}"] = (
                    float(rejected[known & lang].mean()) if (known & lang).any() else None
                )
            row.update({f"{split}_{k}": getattr(r, k) for k in ("auroc", "fpr95", "eer", "closed_accuracy")})
            row.update({f"{split}_false_known": r.false_known_rate, f"{split}_false_unknown": r.false_unknown_rate})
            accepted = {}
            for system in r.unknown_systems:
                mask = names == system
                took = r.scores[mask] >= thr.value
                top = Counter(np.asarray(r.predicted)[mask]).most_common(1)[0][0]
                accepted[system] = {"accepted": float(took.mean()), "n": int(mask.sum()), "as": top}
            row[f"{split}_unknown_systems"] = accepted
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        dev_scores[spec] = dev.scores
    if n_boot and rows:
        known = np.isin(emb["dev"][1], sorted(set(ref_s)))
        for row, boot in zip(rows, bootstrap_fpr95(dev_scores, known, n_boot).values()):
            row.update({f"dev_fpr95_{k}": v for k, v in boot.items()})
    return rows


def show(rows: list[dict]) -> None:
    pct = lambda v: "—" if v is None else f"{100 * v:.1f}"  # noqa: E731
    print(
        "\n| scorer | dev AUROC | dev FPR95 % | eval AUROC | eval FPR95 % | eval false-known % at dev threshold "
        "| eval false-unknown % (seen / unseen languages) | dev false-unknown % (seen / unseen languages) "
        "| closed-set acc. eval % |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['scorer']} | {r['dev_auroc']:.3f} | {pct(r['dev_fpr95'])} | {r['eval_auroc']:.3f} | "
            f"{pct(r['eval_fpr95'])} | {pct(r['eval_false_known'])} | {pct(r['eval_false_unknown'])} "
            f"({pct(r['eval_false_unknown_lang_seen'])} / {pct(r['eval_false_unknown_lang_unseen'])}) | "
            f"{pct(r['dev_false_unknown'])} ({pct(r['dev_false_unknown_lang_seen'])} / "
            f"{pct(r['dev_false_unknown_lang_unseen'])}) | "
            f"{pct(r['eval_closed_accuracy'])} |"
        )
    if "dev_fpr95_lo" in rows[0]:
        print(f"\nDev FPR95 % with a 95 % bootstrap interval; share of resamples where it beats {rows[0]['scorer']}:\n")
        print("| scorer | dev FPR95 % | 95 % interval | beats " + rows[0]["scorer"] + " |")
        print("|---|---|---|---|")
        for r in rows[1:]:
            lo, hi = pct(r["dev_fpr95_lo"]), pct(r["dev_fpr95_hi"])
            print(f"| {r['scorer']} | {pct(r['dev_fpr95'])} | {lo}-{hi} | {r['dev_fpr95_beats_first']:.2f} |")
    systems = sorted({s for r in rows for s in r["eval_unknown_systems"]})
    print("\nShare (%) of each unseen system's eval clips accepted as known at the dev threshold:\n")
    print("| unseen system (eval) | " + " | ".join(r["scorer"] for r in rows) + " |")
    print("|---|" + "---|" * len(rows))
    for s in systems:
        cells = [r["eval_unknown_systems"][s] for r in rows]
        print(f"| {s} (n={cells[0]['n']}) | " + " | ".join(f"{pct(c['accepted'])} → {c['as']}" for c in cells) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="run or checkpoint folder")
    ap.add_argument("--root", help="data root (default: the model's)")
    ap.add_argument("--protocol")
    ap.add_argument("--eval-split", default="eval")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--scorers",
        nargs="+",
        default=["centroid", "knn", "knn:k=5", "knn:k=20", "mahalanobis", "relative_mahalanobis"],
    )
    ap.add_argument("--cache", help="npz file for the embeddings (written once, reused)")
    ap.add_argument("--json", help="write the full comparison here")
    ap.add_argument("--bootstrap", type=int, default=1000, help="dev resamples for FPR95 intervals (0: none)")
    args = ap.parse_args()
    emb = embeddings(args)
    for key, (x, s, _) in emb.items():
        print(f"{key}: {len(x)} clips, {len(set(s))} systems, {x.shape[1]}-d")
    rows = compare(emb, args.scorers, args.bootstrap)
    show(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
