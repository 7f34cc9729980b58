"""Which torch device a run uses, and the guards that keep a GPU trial on its GPU.

``resolve_device`` is the one rule for ``auto | cpu | cuda | cuda:N`` (training, evaluation, bundles), and
``autocast_dtype`` the one for ``train.precision``.
``trial_device`` adds what a Ray trial knows: the GPUs it was granted. A trial granted a GPU runs on
CUDA or fails naming the torch build's CUDA version and the driver (never a silent CPU run); a trial
granted no GPU never touches CUDA (devices hidden before torch initialises CUDA); a fractional GPU
caps the trial's CUDA memory to its share.
"""

from __future__ import annotations

import os
import subprocess

import torch

from sourcetrace.errors import ConfigError, TrainingError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def driver_version() -> str:
    """The NVIDIA driver version in words, or why none was found (for error messages)."""
    try:
        with open("/proc/driver/nvidia/version") as f:
            return f.readline().strip()
    except OSError:
        pass
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        if out.returncode == 0 and out.stdout.strip():
            return "driver " + out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    return "no NVIDIA driver found (no /proc/driver/nvidia/version, no nvidia-smi)"


def nvidia_gpu_present() -> bool:
    """Whether this machine has an NVIDIA GPU, whatever torch can do with it (the driver's files or nvidia-smi)."""
    if os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0"):
        return True
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
        return out.returncode == 0 and "GPU" in out.stdout
    except (OSError, subprocess.SubprocessError):
        return False


def device_report(name: str | None, device: torch.device) -> list[str]:
    """What a run prints about its device: ``device: ...``, and a warning when ``auto`` fell back to the CPU on a
    machine that has an NVIDIA GPU (a torch build the driver cannot run, typically: README, GPU section)."""
    lines = [f"device: {device_name(device)}"]
    if (name or "auto") == "auto" and device.type == "cpu" and nvidia_gpu_present():
        lines.append(
            f"warning: train.device=auto runs on the CPU although this machine has an NVIDIA GPU: {no_cuda_reason()}; "
            "install the torch build for this driver (make setup TORCH_INDEX=..., README: GPU) or set train.device=cpu"
        )
    return lines


def no_cuda_reason() -> str:
    """Why CUDA is unusable here: the torch build's CUDA version and the driver."""
    build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU build"
    return f"torch {torch.__version__} is {build}; {driver_version()}"


def resolve_device(name: str | None, culprit: str | None = None) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cpu``, ``cuda`` or ``cuda:N`` checked against this machine.

    ``culprit`` names the setting in errors (default ``train.device=NAME``).

    >>> resolve_device("cpu")
    device(type='cpu')
    """
    name = name or "auto"
    culprit = culprit or f"train.device={name!r}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"{culprit}: use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{culprit} but CUDA is not available here ({no_cuda_reason()}); use cpu or auto")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"{culprit}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def flag_device(name: str | None) -> torch.device:
    """``resolve_device`` for a command's ``--device`` flag (bundles, evaluate, analyze): errors name the flag."""
    return resolve_device(name, f"--device {name or 'auto'!r}")


def hide_gpus() -> None:
    """Make CUDA invisible to this process (Ray >= 2.48 no longer hides GPUs from zero-GPU workers).

    Effective only before torch initialises CUDA; a process that already did keeps its devices, and
    ``trial_device`` then still returns cpu.
    """
    os.environ["CUDA_VISIBLE_DEVICES"] = ""


def trial_device(name: str, gpus: float) -> torch.device:
    """The device of a Ray trial holding ``gpus`` GPUs, with ``train.device=name``.

    ``gpus == 0``: cpu, with CUDA hidden (``train.device`` naming cuda is an error). ``gpus > 0``: CUDA or
    an error naming the torch build and the driver; ``train.device=cpu`` is an error (the GPU would idle).
    """
    if gpus <= 0:
        if name not in ("auto", "cpu"):
            raise ConfigError(f"train.device={name!r} but the trial holds no GPU (RESOURCES gpu: 0); use auto or cpu")
        hide_gpus()
        return torch.device("cpu")
    if name == "cpu":
        raise ConfigError(f"train.device='cpu' but the trial holds {gpus:g} GPU; use auto, or RESOURCES gpu: 0")
    if not torch.cuda.is_available():
        raise TrainingError(
            f"the trial holds {gpus:g} GPU but CUDA is not available in it ({no_cuda_reason()}, "
            f"CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}); install a torch wheel built "
            "for this driver's CUDA version, or update the driver"
        )
    return resolve_device("cuda" if name == "auto" else name)


def cuda_index(device: torch.device) -> int:
    """The index of a CUDA ``device``: its own, or the current device for a bare ``cuda`` (as
    ``resolve_device("auto")`` returns it; torch's per-device calls refuse a device without an index)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def share_gpu_memory(device: torch.device, gpus: float) -> None:
    """Cap this process's CUDA memory on ``device`` to its share of the GPU when it holds a fraction of one."""
    if device.type == "cuda" and 0 < gpus < 1:
        torch.cuda.set_per_process_memory_fraction(gpus, cuda_index(device))


def device_name(device: torch.device) -> str:
    """``NVIDIA H100 80GB HBM3 (cuda:0)`` or ``cpu``."""
    if device.type != "cuda":
        return "cpu"
    index = cuda_index(device)
    return f"{torch.cuda.get_device_name(index)} (cuda:{index})"


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """Mixed-precision dtype of ``train.precision``, or None for fp32 (``auto``: bf16 on CUDA; fp32 on CPU,
    where bf16 is slower here).

    >>> autocast_dtype("auto", torch.device("cpu")) is None
    True
    """
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" else "fp32"
    return PRECISIONS[precision]
