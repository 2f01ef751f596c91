#!/usr/bin/env bash
# The test command: Swift unit tests, then the package for cluster nodes
# (scripts/package.sh) and the wheel (scripts/wheel.sh), then the Python
# compatibility tests that judge every file ShardFS writes with real
# torch.load and torch.save, and the packaged binary and the wheel with the
# toolchain out of reach; then a training run resharded and resumed
# (tests/zero1); then a tag as a TorchTitan checkpoint, judged by torch's
# dcp.load (tests/dcp; TorchTitan's own code too where TORCHTITAN_SRC names
# its v0.2.2 source, which is not on PyPI: tests/dcp/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== swift test" >&2
swift test 2>&1 | tail -n 40

echo "== swift build -c release" >&2
swift build -c release 2>&1 | tail -n 5
export SHARDFS_BIN="$PWD/.build/release/shardfs"

echo "== scripts/package.sh, scripts/wheel.sh" >&2
scripts/package.sh
export SHARDFS_PACKAGE="$PWD/dist/shardfs-$(tr -d ' \n' < VERSION)-linux-$(uname -m).tar.gz"
scripts/wheel.sh --no-build
export SHARDFS_WHEEL="$PWD/dist/shardfs-$(tr -d ' \n' < VERSION)-py3-none-manylinux_2_34_$(uname -m).whl"

echo "== pytest tests/compat" >&2
.venv/bin/python -m pytest tests/compat -q "$@"

# A training run resumed in another layout, judged with torch_xla's real
# ZeRO-1 optimizer on its CPU backend (tests/zero1/README.md); a venv of its
# own, as torch_xla pins torch 2.9.
echo "== pytest tests/zero1" >&2
scripts/setup-xla.sh
PJRT_DEVICE=CPU .venv-xla/bin/python -m pytest tests/zero1 -q

echo "== pytest tests/dcp" >&2
.venv/bin/python -m pytest tests/dcp -q
