#!/usr/bin/env bash
# The reliability checks CI runs besides scripts/test.sh (RELIABILITY.md):
# the Swift tests under ThreadSanitizer, concurrent-read tests included, and
# a short fuzz run of every target over the committed corpus.
#   FUZZ_SECONDS=30 scripts/reliability.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

echo "== swift test --sanitize=thread" >&2
# A separate build folder: sanitized objects must not mix with the plain ones.
swift build --build-tests --sanitize=thread --scratch-path .build-tsan -j 2 2>&1 | tail -n 3
# TSan exits non-zero (66) at the end of a run that reported any race.
swift test --skip-build --sanitize=thread --scratch-path .build-tsan 2>&1 | tail -n 5

echo "== fuzz, ${FUZZ_SECONDS:-30} s per target" >&2
scripts/fuzz.sh "${FUZZ_SECONDS:-30}"
