#!/usr/bin/env bash
# The test command: Swift unit tests, then the package for cluster nodes
# (scripts/package.sh), then the Python compatibility tests that judge every
# file ShardFS writes with real torch.load and torch.save, and the packaged
# binary with the toolchain out of reach.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== swift test" >&2
swift test 2>&1 | tail -n 40

echo "== swift build -c release" >&2
swift build -c release 2>&1 | tail -n 5
export SHARDFS_BIN="$PWD/.build/release/shardfs"

echo "== scripts/package.sh" >&2
scripts/package.sh
export SHARDFS_PACKAGE="$PWD/dist/shardfs-$(tr -d ' \n' < VERSION)-linux-$(uname -m).tar.gz"

echo "== pytest tests/compat" >&2
.venv/bin/python -m pytest tests/compat -q "$@"
