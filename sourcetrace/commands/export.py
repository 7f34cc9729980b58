"""``sourcetrace export`` (a bundle, and its ONNX graph) and ``fuse`` (a fusion folder of trained models)."""

from __future__ import annotations

import json
from pathlib import Path

from sourcetrace.artefacts import export
from sourcetrace.bundle import files
from sourcetrace.bundle.onnx_export import TOLERANCE, export_onnx
from sourcetrace.errors import SourcetraceError
from sourcetrace.fusion import FUSION_FILE, read_fusion, write_fusion


def run_fuse(args) -> int:
    """``sourcetrace fuse RUN RUN [...] --out DIR [--weights W,W]``."""
    weights = None
    if args.weights:
        try:
            weights = [float(w) for w in args.weights.split(",")]
        except ValueError:
            raise SourcetraceError(f"--weights {args.weights!r}: comma-separated numbers, one per member") from None
    out = Path(args.out)
    if out.exists() and (not out.is_dir() or any(p.name != FUSION_FILE for p in out.iterdir())):
        raise SourcetraceError(f"--out {out} exists and is not a fusion folder; choose a new folder")
    write_fusion(out, args.members, weights)
    members = read_fusion(out)["members"]
    for m in members:
        print(f"  {m['weight']:.3f} x {m['checkpoint']}")
    print(f"fusion: {out}  (evaluate, analyze, export and trace take it as --model)")
    return 0


def _onnx(args) -> int:
    """``sourcetrace export --model MODEL --out DIR --onnx``: also write ``DIR/embedding.onnx``."""
    path, diff = export_onnx(args.out, Path(args.out) / "embedding.onnx")
    print(f"onnx: {path} (max |embedding difference| vs PyTorch {diff:.1e}, tolerance {TOLERANCE:g})")
    return 0


def run_export(args) -> int:
    """``sourcetrace export --model CHECKPOINT|RUN|FUSION|SWEEP --out DIR``."""
    out = export(args.model, args.out, root=args.root, protocol=args.protocol, device=args.device, scorer=args.scorer)
    with open(out / files.THRESHOLD) as f:
        thr = json.load(f)
    print(f"bundle: {out}")
    print(f"operating point: {thr['description']}")
    if (out / files.CALIBRATION).is_file():
        with open(out / files.CALIBRATION) as f:
            print(f"calibration: {json.load(f)['description']}")
    if args.onnx:
        return _onnx(args)
    return 0
