#!/usr/bin/env bash
# The test command: Swift unit tests, then the Python compatibility tests that
# judge every file ShardFS writes with real torch.load and torch.save.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== swift test" >&2
swift test 2>&1 | tail -n 40

echo "== swift build -c release" >&2
swift build -c release 2>&1 | tail -n 5
export SHARDFS_BIN="$PWD/.build/release/shardfs"

echo "== pytest tests/compat" >&2
.venv/bin/python -m pytest tests/compat -q "$@"
