"""Two models' cosine scores averaged: does a model with band statistics and one without make up for each other?

    .venv/bin/python benchmarks/probe_ensemble.py --root data/demo ray_results/demo/best_model runs/band_eq

For each weight w the pair score is (1 - w) cos(first) + w cos(second), the cosine of the two models'
unit embeddings concatenated after scaling by sqrt(1 - w) and sqrt(w); every model embeds the split's
clips with its own centred ``data.eval_seconds`` window, as ``sourcetrace evaluate``. Printed: all-pairs
EER % overall and per condition (the corpus's ``fine/`` files, else derived from its train split), the
first model alone at w = 0 and the second at w = 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sourcetrace.bundle.export import load_any  # noqa: E402
from sourcetrace.data.bank import WaveBank  # noqa: E402
from sourcetrace.evaluation.conditions import split_metrics  # noqa: E402
from sourcetrace.evaluation.embed import embed_waves  # noqa: E402
from sourcetrace.evaluation.evaluate import read_corpus  # noqa: E402


def unit_embeddings(model_path: str, files: list[str]) -> np.ndarray:
    loaded = load_any(model_path, torch.device("cpu"))
    cfg = loaded.config
    bank = WaveBank.load(files, sample_rate=cfg.data.sample_rate)
    emb = embed_waves(loaded.model, bank, cfg.data.eval_seconds, 64, torch.device("cpu"), cfg.data.sample_rate, None)
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", required=True, help="corpus in MLAAD layout")
    ap.add_argument("--split", default="eval")
    ap.add_argument("--weights", default="0,0.3,0.5,0.7,1", help="weights w of the second model, comma-separated")
    ap.add_argument("models", nargs=2, help="two run, checkpoint or bundle folders")
    args = ap.parse_args(argv)
    table = read_corpus(args.root, None, args.split)[0]
    first, second = (unit_embeddings(m, list(table["file"])) for m in args.models)
    for w in (float(x) for x in args.weights.split(",")):
        emb = np.concatenate([np.sqrt(1 - w) * first, np.sqrt(w) * second], axis=1)
        eers = {k.lstrip("_") or "eer": v for k, v in split_metrics("", emb, table).items() if "eer" in k}
        print(f"w={w:.1f}  " + "  ".join(f"{k.replace('eer.', '')} {v:.2f}" for k, v in eers.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
