"""Clean and degraded EER of two ``sourcetrace evaluate --degrade`` results: without and with augmentation.

    .venv/bin/python benchmarks/robustness_table.py OFF/metrics.json ON/metrics.json [--goal a,b]

Prints a markdown table (eval split, EER %: model without / with augmentation, and the featureless
baseline) per condition, then the mean degraded-minus-clean gap over the ``--goal`` degradations (the
others are listed as held out: augmentation never saw them) and whether augmentation halves that gap at
<= 1 pp of clean EER.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sourcetrace.evaluation.degraded import columns, eer_gap  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("off", help="metrics.json of the model trained without augmentation")
    ap.add_argument("on", help="metrics.json of the model trained with augmentation")
    ap.add_argument("--goal", default="mp3_32,opus_16,amr_nb,replay", help="degradations the goal averages over")
    args = ap.parse_args()
    off, on = (json.loads(Path(p).read_text()) for p in (args.off, args.on))
    goal = args.goal.split(",")
    m_off, m_on, base = columns(off, "model"), columns(on, "model"), columns(off, "baseline")
    print("| condition | EER without aug. | EER with aug. | baseline EER | open-set AUROC without / with |")
    print("|---|---|---|---|---|")
    for name in m_off:
        tag = "" if name == "clean" or name in goal else " (held out)"
        auroc = " / ".join(f"{m[name].get('openset_auroc', float('nan')):.3f}" for m in (m_off, m_on))
        print(
            f"| {name}{tag} | {m_off[name]['eer']:.2f} | {m_on[name]['eer']:.2f} | {base[name]['eer']:.2f} | {auroc} |"
        )
    g_off, g_on = eer_gap(off, "model", goal), eer_gap(on, "model", goal)
    held = [n for n in m_off if n != "clean" and n not in goal]
    cost = m_on["clean"]["eer"] - m_off["clean"]["eer"]
    print(
        f"\nmean degraded - clean EER over {', '.join(goal)}: {g_off:+.2f} pp without, {g_on:+.2f} pp with augmentation"
    )
    if held:
        h_off, h_on = eer_gap(off, "model", held), eer_gap(on, "model", held)
        print(f"held out ({', '.join(held)}): {h_off:+.2f} pp without, {h_on:+.2f} pp with augmentation")
    print(f"clean EER cost of augmentation: {cost:+.2f} pp")
    met = g_on <= g_off / 2 and cost <= 1.0
    print(f"goal (gap halved at <= 1 pp clean cost): {'MET' if met else 'NOT met'}")


if __name__ == "__main__":
    main()
