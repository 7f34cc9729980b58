#!/usr/bin/env bash
# The PyTorch wheel index that fits this machine's NVIDIA driver, printed for `make setup` (TORCH_INDEX);
# nothing when PyPI's torch fits (no NVIDIA GPU: CPU; driver >= 580: PyPI's build for CUDA 13.0).
# Drivers 525-579 get the CUDA 12.6 build (CUDA 12's minor-version compatibility starts at 525.60.13).
set -u
drv=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' ')
[ -n "$drv" ] || exit 0
major=${drv%%.*}
case "$major" in '' | *[!0-9]*) exit 0 ;; esac
if [ "$major" -ge 580 ]; then
    exit 0
elif [ "$major" -ge 525 ]; then
    echo "https://download.pytorch.org/whl/cu126"
else
    echo "warning: NVIDIA driver $drv is older than 525: no CUDA build of torch 2.11 runs on it (PyPI's is installed; training runs on the CPU)" >&2
fi
