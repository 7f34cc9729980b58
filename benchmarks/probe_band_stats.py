"""What the log-Mel band statistics say about systems, and how much a model built with them leans on them.

    .venv/bin/python benchmarks/probe_band_stats.py --root data/demo --systems festival_lp_diphone mbrola_it4
    .venv/bin/python benchmarks/probe_band_stats.py --root data/outside --model RUN   # a model.band_stats=true run

``--systems``: for each named system's clips in the split, the mean over clips of every 4th band's mean
and standard deviation over time (log-Mel as the models see it, before any instance norm, over the same
centred eval window as ``sourcetrace evaluate``), and the share of 10 ms frames more than 40 dB below the
clip's loudest: what tells two systems apart before any learning.

``--model``: the split's EER overall and per condition three ways: as trained; with the band statistics
batch-normalised by this split's own mean and variance instead of the training ones (does a shift in
their scale explain a loss on another corpus?); and with the band-statistics branch zeroed (how much of
the embedding rests on it).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sourcetrace.artefacts import load_any  # noqa: E402
from sourcetrace.config import FeaturesConfig  # noqa: E402
from sourcetrace.data.bank import WaveBank  # noqa: E402
from sourcetrace.evaluation.conditions import split_metrics  # noqa: E402
from sourcetrace.evaluation.embed import embed_waves  # noqa: E402
from sourcetrace.evaluation.evaluate import read_corpus  # noqa: E402
from sourcetrace.features import LogMelFbank  # noqa: E402

RATE = 16000


def band_stats(fbank: LogMelFbank, bank: WaveBank, seconds: float) -> torch.Tensor:
    """[n, 2 n_mels]: each clip's band means then band stds over its centred ``seconds`` window."""
    rows = np.arange(len(bank))
    out = []
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            out.append(fbank.with_band_stats(bank.center_crops(rows[i : i + 64], int(seconds * RATE)))[1])
    return torch.cat(out)


def pause_share(wave: np.ndarray) -> float:
    frames = wave[: len(wave) // 160 * 160].reshape(-1, 160)
    level = 10 * np.log10((frames**2).mean(1) + 1e-10)
    return float((level < level.max() - 40).mean())


def describe_systems(table, bank: WaveBank, systems: list[str], seconds: float) -> None:
    fbank = LogMelFbank(replace(FeaturesConfig(), instance_norm=False), sample_rate=RATE)
    n = fbank.n_mels
    for name in systems:
        rows = np.flatnonzero(table["system"].to_numpy() == name)
        if not len(rows):
            raise SystemExit(f"no clips of system {name!r} in this split")
        waves = bank.center_crops(rows, int(seconds * RATE))
        with torch.no_grad():
            st = fbank.with_band_stats(waves)[1].numpy()
        pauses = [pause_share(w.numpy()) for w in waves]
        print(f"{name}: {len(rows)} clips, pauses {np.mean(pauses):.2f} of frames")
        print("  band means (every 4th)", np.round(st[:, :n].mean(0)[::4], 1))
        print("  band stds  (every 4th)", np.round(st[:, n:].mean(0)[::4], 1))


def probe_model(table, bank: WaveBank, model_path: str) -> None:
    loaded = load_any(model_path, torch.device("cpu"))
    model, seconds = loaded.model, loaded.config.data.eval_seconds
    if getattr(model, "band_norm", None) is None:
        raise SystemExit(f"{model_path}: this model was not built with model.band_stats=true")
    norm = model.band_norm[0] if isinstance(model.band_norm, torch.nn.Sequential) else model.band_norm

    def row(label: str) -> None:
        emb = embed_waves(model, bank, seconds, 64, torch.device("cpu"), RATE, None)
        eers = {k.lstrip("_") or "eer": v for k, v in split_metrics("", emb, table).items() if "eer" in k}
        print(f"{label:38s}" + "  ".join(f"{k.replace('eer.', '')} {v:.2f}" for k, v in eers.items()))

    row("as trained")
    stats = band_stats(model.fbank, bank, seconds)
    with torch.no_grad():
        norm.running_mean.copy_(stats.mean(0))
        norm.running_var.copy_(stats.var(0))
    row("band norm on this split's statistics")
    with torch.no_grad():
        norm.weight.zero_()
        norm.bias.zero_()
    row("band statistics zeroed")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--split", default="eval")
    ap.add_argument("--model", help="a run or bundle built with model.band_stats=true")
    ap.add_argument("--systems", nargs="*", default=[], help="systems whose band statistics to print")
    ap.add_argument("--seconds", type=float, default=3.0, help="centred window for --systems (default 3)")
    args = ap.parse_args(argv)
    if not args.model and not args.systems:
        ap.error("give --model, --systems or both")
    torch.set_num_threads(1)
    table = read_corpus(args.root, None, args.split)[0]
    bank = WaveBank.load(list(table["file"]), sample_rate=RATE)
    if args.systems:
        describe_systems(table, bank, args.systems, args.seconds)
    if args.model:
        probe_model(table, bank, args.model)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
