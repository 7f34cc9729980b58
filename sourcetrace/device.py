"""Device and precision: one rule for training, evaluation, export and attribution alike."""

from __future__ import annotations

import torch

from sourcetrace.errors import ConfigError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | None, source: str = "--device") -> torch.device:
    """``auto`` -> cuda when available, else cpu; anything but cpu, cuda or cuda:N, or a CUDA device this
    machine lacks, is a ``ConfigError`` naming ``source`` (the flag or config key it came from).

    >>> resolve_device("cpu")
    device(type='cpu')
    """

    name = name or "auto"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{source} {name!r}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{source} {name!r} but CUDA is not available here; use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{source} {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype of ``train.precision``, or None for fp32 (``auto``: bf16 on CUDA; fp32 on CPU,
    where bf16 is slower here).

    >>> autocast_dtype("auto", torch.device("cpu")) is None
    True
    """
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return PRECISIONS[precision]
