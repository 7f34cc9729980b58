#!/usr/bin/env bash
# The prepared device check (benchmarks/gpu_check.py): run as is from the repo root, ~8 minutes on one GPU.
#   bash benchmarks/gpu_check.sh [--device cuda:N] [--skip STEP ...]      (--help for all options)
# PYTHON picks the interpreter (default: .venv/bin/python if it exists, else python3); WHEELS the folder of
# wheels for packages that interpreter lacks (default .whl/). The repo root joins PYTHONPATH: nothing is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x .venv/bin/python ]]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
exec "$PYTHON" benchmarks/gpu_check.py "$@"
