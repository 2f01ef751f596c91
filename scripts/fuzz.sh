#!/usr/bin/env bash
# Builds the libFuzzer targets (with AddressSanitizer) and runs each for
# SECONDS seconds over its corpus in fuzz/corpus/<target>/.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     (default: 60 s, every target)
# New interesting inputs go to .build-fuzz/corpus/<target>/ (not committed);
# a crash, hang (-timeout) or memory blow-up (-rss_limit_mb) writes the input
# to .build-fuzz/findings/ and exits non-zero. One process, one core (no
# -jobs: libFuzzer would fork workers that log to fuzz-N.log instead).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(header index config planner zip pickle torchsave tag dcpmetadata)

echo "== build shardfs-fuzz (libFuzzer + ASan)" >&2
# swiftc keeps only the last -sanitize= it is given, and SwiftPM passes one
# per --sanitize: `--sanitize=fuzzer --sanitize=address` would build Swift code
# with ASan but without coverage, and libFuzzer would fuzz blind. So SwiftPM is
# told `fuzzer` (for the libFuzzer link) and swiftc gets both in one option.
# ld.gold's "Cannot export local symbol" lines are harmless noise from ASan.
swift build -c debug --product shardfs-fuzz --scratch-path .build-fuzz --sanitize=fuzzer \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -j 2 2>&1 | grep -v "Cannot export local symbol" | tail -n 5
binary=.build-fuzz/debug/shardfs-fuzz
test -x "$binary"

mkdir -p .build-fuzz/findings
for target in "${targets[@]}"; do
    echo "== fuzz $target for ${seconds}s" >&2
    mkdir -p ".build-fuzz/corpus/$target"
    # Swift's own backtracer would hang on a trap under libFuzzer: leave the
    # report to libFuzzer and ASan.
    # A tag target input is a whole (micro) tag: a few dozen files.
    max_len=65536
    [ "$target" = tag ] && max_len=262144
    SWIFT_BACKTRACE=enable=no SHARDFS_FUZZ_TARGET=$target "$binary" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 -max_len="$max_len" \
        -print_final_stats=1 \
        -artifact_prefix=".build-fuzz/findings/$target-" \
        ".build-fuzz/corpus/$target" "fuzz/corpus/$target" 2>&1 | grep -a -E "^#|stat::|ERROR|SUMMARY|Test unit|INFO: seed|DONE" | tail -n 12
done
