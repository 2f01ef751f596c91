#!/usr/bin/env bash
# Makes .venv-xla, the Python venv of the ZeRO-1 resharding tests
# (tests/zero1): torch 2.9.0 and torch_xla 2.9.0, whose XLA:CPU backend runs
# torch_xla's real ZeroRedundancyOptimizer to write the optimizer files a
# resharded NxD training tag must match, and pytest. A venv of its own because
# torch_xla pins its torch (2.9.0), which the compatibility venv (.venv) does
# not use. torch 2.9.0 from PyPI brings the CUDA libraries (about 4 GB); the
# tests only use the CPU.
# Safe to run again: it does nothing when the venv already imports both.
set -euo pipefail
cd "$(dirname "$0")/.."

if .venv-xla/bin/python -c 'import torch_xla, pytest' 2>/dev/null; then
    exit 0
fi
if [ ! -x .venv-xla/bin/python ]; then
    echo "setup-xla: creating .venv-xla" >&2
    python3 -m venv .venv-xla
fi
echo "setup-xla: installing torch 2.9.0, torch_xla 2.9.0 and pytest into .venv-xla" >&2
.venv-xla/bin/pip install -q 'torch==2.9.0' 'torch_xla==2.9.0' pytest
