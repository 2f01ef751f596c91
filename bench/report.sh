#!/usr/bin/env bash
# Regenerates the table of current figures at the top of BENCHMARKS.md: runs
# every benchmark whose figure it shows, collects the headline figures each
# reports (bench/summary.sh, bench/benchlib.py), and writes the table between
# the report markers of BENCHMARKS.md (--write) or to stdout. Each
# benchmark's own full report goes to bench-out/results/ as usual.
#
#   bench/report.sh            every benchmark, their default rounds (about an hour here)
#   bench/report.sh --quick    one round each, the slow Python baselines left out (about 15 minutes)
#   bench/report.sh --write    ... and rewrite BENCHMARKS.md's table
#   bench/report.sh --only scale,verify    just those (convert mount xser persist verify hf cold scale package optimizer dcp)
#
# Needs root (FUSE mounts, drop_caches for the cold loads), GNU time, the
# project's .venv (scripts/setup.sh), and a release build (made here).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
cd "$REPO"
QUICK=0 WRITE=0 ONLY=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --write) WRITE=1 ;;
        --only) ONLY=$2; shift ;;
        -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
want() { [[ -z "$ONLY" || ",$ONLY," == *",$1,"* ]]; }

swift build -c release 2>&1 | tail -n 1 >&2
export SHARDFS_BIN="$REPO/.build/release/shardfs"
export PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
mkdir -p bench-out/results
export BENCH_SUMMARY="$REPO/bench-out/results/summary-$(date +%Y%m%d-%H%M%S).tsv"
: > "$BENCH_SUMMARY"
LOG="${BENCH_SUMMARY%.tsv}.log"

run() {
    local name=$1; shift
    echo "== $name: $*" >&2
    if ! "$@" >> "$LOG" 2>&1; then
        printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "the benchmark failed (see $LOG)" "-" "" "failed" "$(basename "$1")" >> "$BENCH_SUMMARY"
    fi
}

if (( QUICK )); then
    want convert && run convert bench/convert_bench.sh --skip-python --repeat 1
    want mount && run mount bench/mount_bench.sh --repeat 1 --mount-repeat 3 --skip-fp32 --skip-variants
    want xser && run xser bench/xser_bench.sh --repeat 1
    want persist && run persist bench/persist_bench.sh --repeat 1
    want verify && run verify bench/verify_bench.sh --repeat 3
    want hf && run hf "$PYTHON" bench/hf_bench.py --rounds 1 --skip-python
    want cold && run cold "$PYTHON" bench/cold_bench.py --rounds 1
    want scale && run scale "$PYTHON" bench/scale_bench.py --quick
    want package && run package bench/package_bench.sh --quick
    want optimizer && run optimizer "$PYTHON" bench/optimizer_bench.py --rounds 1
    want dcp && run dcp "$PYTHON" bench/dcp_bench.py --rounds 1
else
    want convert && run convert bench/convert_bench.sh --repeat 3
    want mount && run mount bench/mount_bench.sh --repeat 3 --skip-variants
    want xser && run xser bench/xser_bench.sh --repeat 3
    want persist && run persist bench/persist_bench.sh
    want verify && run verify bench/verify_bench.sh --repeat 7
    want hf && run hf "$PYTHON" bench/hf_bench.py --rounds 5
    want cold && run cold "$PYTHON" bench/cold_bench.py --rounds 5
    want scale && run scale "$PYTHON" bench/scale_bench.py --wide
    want package && run package bench/package_bench.sh
    want optimizer && run optimizer "$PYTHON" bench/optimizer_bench.py --rounds 3
    want dcp && run dcp "$PYTHON" bench/dcp_bench.py --rounds 3
fi

TABLE=$(
    echo "<!-- report:begin (bench/report.sh$( ((QUICK)) && echo " --quick")) -->"
    echo "Figures of $(date '+%Y-%m-%d') at $(git rev-parse --short HEAD)$( ((QUICK)) && echo ", one round each (\`--quick\`)"), on this machine ($(nproc) CPUs); regenerate with \`bench/report.sh\` (\`--write\` puts them here)."
    echo
    # One round cannot say a target is missed: figures move by about 30%
    # from run to run here. A --quick table says where a round landed, and
    # leaves the verdict to paired rounds.
    if (( QUICK )); then
        echo "One round is no verdict: figures here move by about ±30% from run to run. A figure below its target in one round says where to look; paired rounds decide (\`bench/report.sh\` without \`--quick\`, or the benchmark's own \`--rounds\`/\`--repeat\`), as in the history below."
        echo
        echo "| area | figure | value | target | this round | from |"
    else
        echo "| area | figure | value | target | | from |"
    fi
    echo "|---|---|---|---|---|---|"
    awk -F'\t' -v quick="$QUICK" '{
        if ($5 == "failed") mark = "**failed**"
        else if (quick) mark = ($5 == "met") ? "at target" : ($5 == "not met") ? "below target" : ""
        else mark = ($5 == "met") ? "met" : ($5 == "not met") ? "**not met**" : ""
        printf "| %s | %s | %s | %s | %s | `bench/%s` |\n", $1, $2, $3, $4, mark, $6 }' "$BENCH_SUMMARY"
    echo "<!-- report:end -->"
)
if (( WRITE )); then
    python3 - "$TABLE" <<'PY'
import re, sys
path = "BENCHMARKS.md"
text = open(path).read()
new = sys.argv[1]
pattern = re.compile(r"<!-- report:begin.*?<!-- report:end -->", re.S)
if not pattern.search(text):
    sys.exit("BENCHMARKS.md has no <!-- report:begin --> ... <!-- report:end --> section")
open(path, "w").write(pattern.sub(lambda _: new, text, count=1))
PY
    echo "BENCHMARKS.md: table rewritten ($(wc -l < "$BENCH_SUMMARY") figures)" >&2
else
    echo "$TABLE"
fi
echo "figures: $BENCH_SUMMARY; the benchmarks' output: $LOG and bench-out/results/" >&2
