"""``sourcetrace train``: one model trained and evaluated without Ray (the trainer: ``training/loop.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

from sourcetrace.config import Config
from sourcetrace.device import device_report, resolve_device
from sourcetrace.errors import AudioError, ProtocolError
from sourcetrace.training.loop import EpochResult, train


def run(args) -> int:
    """``sourcetrace train --root DIR [--protocol P] --set k=v ... --out RUN_DIR [--resume]``."""
    cfg = Config().with_values({"data.root": args.root, "data.protocol": args.protocol or ""})
    cfg = cfg.with_overrides(args.set)
    out = Path(args.out)
    resume = out / "last" if args.resume and (out / "last").exists() else None

    def show(r: EpochResult) -> None:
        m = r.metrics
        line = f"epoch {r.epoch:4d}  loss {m['train_loss']:.4f}  lr {m['lr']:.2e}  {m['clips_per_s']:.0f} clips/s"
        if r.evaluated:
            line += f"  dev EER {m['dev_eer']:.2f}%" + (f"  test EER {m['test_eer']:.2f}%" if "test_eer" in m else "")
        print(line, flush=True)

    device = resolve_device(cfg.train.device)
    for line in device_report(cfg.train.device, device):
        print(line, file=sys.stderr if line.startswith("warning") else sys.stdout, flush=True)
    try:
        result = train(cfg, out, on_epoch=show, resume_from=resume, device=device)
    except (AudioError, ProtocolError):
        from sourcetrace.training.preflight import preflight

        preflight([cfg])  # the trainer stops at the first bad file: name them all (only on failure)
        raise
    except KeyboardInterrupt:
        print(f"training interrupted: add --resume to the same command to continue from {out / 'last'}")
        raise
    best = result.best_metrics
    print(
        f"best dev EER {best.get('dev_eer', float('nan')):.2f}% at epoch {result.best_epoch}; "
        f"test EER there {best.get('test_eer', float('nan')):.2f}%"
    )
    for key in sorted(k for k in best if "." in k):
        print(f"  {key:45s} {best[key]:6.2f}%")
    print(f"run folder: {out}")
    return 0
