"""ONNX export of a bundle's embedding extractor: waveform [B, T] (16 kHz float) -> embedding [B, D].

The whole network is exported, front end included (the log-Mel fbank's STFT exports with the
``torch.onnx`` dynamo exporter), with batch and time dynamic. ``parity`` runs the same clips through
PyTorch and onnxruntime and returns the largest absolute difference of the unit embeddings; the
export fails loudly when it exceeds ``TOLERANCE``. Embeddings are compared after L2 normalisation,
as scoring uses them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sourcetrace.errors import SourcetraceError

TOLERANCE = 1e-4  # max |embedding difference| (unit vectors) accepted between PyTorch and onnxruntime
OPSET = 18


def export_onnx(bundle: str | os.PathLike, out: str | os.PathLike, check_seconds: tuple[float, ...] = (2.0, 3.5)):
    """Write ``out`` (an .onnx file) from a bundle and check parity on random waves; returns (path, max diff)."""
    import torch

    from sourcetrace.bundle.model import SourceTracer

    tracer = SourceTracer(bundle, device="cpu")
    model = tracer.model.eval()
    sr = tracer.config.data.sample_rate
    example = torch.randn(2, int(sr * tracer.config.data.eval_seconds or 3 * sr)) * 0.1
    batch, time = torch.export.Dim("batch", min=1, max=1024), torch.export.Dim("samples", min=sr // 2, max=sr * 600)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=["wave"],
            output_names=["embedding"],
            dynamic_shapes=({0: batch, 1: time},),
            opset_version=OPSET,
            verbose=False,
        )
    except Exception as err:  # the exporter raises many types; the model or op is named in the message
        raise SourcetraceError(
            f"ONNX export of {tracer.config.model.name} failed: {type(err).__name__}: {err}"
        ) from err
    program.save(str(out))
    rng = np.random.default_rng(0)
    waves = [(0.1 * rng.standard_normal((2, int(s * sr)))).astype(np.float32) for s in check_seconds]
    diff = parity(model, out, waves)
    if diff > TOLERANCE:
        raise SourcetraceError(f"ONNX model {out} differs from PyTorch by {diff:.2e} > {TOLERANCE:g}")
    return out, diff


def parity(model, onnx_path: str | os.PathLike, waves: list[np.ndarray]) -> float:
    """Max |unit embedding (PyTorch) - unit embedding (onnxruntime)| over batches of waves [B, T]."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for w in waves:
        with torch.no_grad():
            ref = model(torch.from_numpy(w)).numpy()
        got = session.run(None, {session.get_inputs()[0].name: w})[0]
        unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
        worst = max(worst, float(np.abs(unit(ref) - unit(got)).max()))
    return worst
