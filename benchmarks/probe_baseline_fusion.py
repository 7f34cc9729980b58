"""A lead: the featureless baseline as one more fusion member. Does it win back the new voices of known
engines that the learned models lose outside the corpus?

    PYTHONPATH=. .venv/bin/python benchmarks/probe_baseline_fusion.py ray_results/demo/best_model \
        --train-root data/demo --roots data/demo data/outside --weights 0,0.2,0.33,0.5

The baseline's 120 MFCC statistics of each clip are z-scored with the mean and std of the model's training
split (fixed statistics, as a network member would need) and made unit length; the pair score is
(1 - w) cos(model) + w cos(baseline), the cosine of the two unit embeddings concatenated after scaling by
sqrt(1 - w) and sqrt(w) (as ``sourcetrace/fusion.py`` fuses). Printed: all-pairs EER % of each corpus's
eval split overall and per condition, as ``sourcetrace evaluate`` scores it (centred ``data.eval_seconds``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sourcetrace.artefacts import load_any  # noqa: E402
from sourcetrace.data.bank import WaveBank  # noqa: E402
from sourcetrace.data.protocol import read_protocol  # noqa: E402
from sourcetrace.evaluation.baseline import clip_features, standardise  # noqa: E402
from sourcetrace.evaluation.conditions import split_metrics  # noqa: E402
from sourcetrace.evaluation.embed import embed_waves  # noqa: E402
from sourcetrace.evaluation.evaluate import read_corpus  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", help="a bundle, run, checkpoint, fusion or sweep folder")
    ap.add_argument("--train-root", required=True, help="the model's training corpus (its train split's statistics)")
    ap.add_argument("--roots", nargs="+", required=True, help="corpora in MLAAD layout whose eval split is scored")
    ap.add_argument("--weights", default="0,0.2,0.33,0.5", help="weights w of the baseline, comma-separated")
    args = ap.parse_args(argv)
    cpu = torch.device("cpu")
    loaded = load_any(args.model, cpu)
    seconds, sr = loaded.config.data.eval_seconds, loaded.config.data.sample_rate
    train = read_protocol(args.train_root, splits=("train",)).tables["train"]
    reference = clip_features(WaveBank.load(list(train["file"]), sample_rate=sr), seconds, sr)
    for root in args.roots:
        table = read_corpus(root, None, "eval")[0]
        bank = WaveBank.load(list(table["file"]), sample_rate=sr)
        model = embed_waves(loaded.model, bank, seconds, 64, cpu, sr, None)
        base = standardise(clip_features(bank, seconds, sr), stats_from=reference)
        base /= np.linalg.norm(base, axis=1, keepdims=True)
        for w in (float(x) for x in args.weights.split(",")):
            emb = np.concatenate([np.sqrt(1 - w) * model, np.sqrt(w) * base], axis=1)
            eers = {k.lstrip("_") or "eer": v for k, v in split_metrics("", emb, table).items() if "eer" in k}
            cells = "  ".join(f"{k.replace('eer.', '')} {v:.2f}" for k, v in eers.items())
            print(f"{Path(root).name} w={w:.2f}  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
