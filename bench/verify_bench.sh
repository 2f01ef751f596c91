#!/usr/bin/env bash
# `shardfs verify` against `cat` of the same bytes (issue 13): the tree of
# Llama-3.2-1B at TP=8 PP=2 --qkv-linear --fuse-qkv (made with `shardfs
# convert` if missing) and its source, warm in the page cache. Runs
# alternate (cat, verify, cat, verify, ...); each is timed with GNU time.
# Reports the median of each, their ratio (cat's time / verify's: verify's
# speed as a fraction of cat's, reading the tree and the source together)
# and verify's largest RSS.
#
# Usage: bench/verify_bench.sh [options]
#   --src DIR        HF checkpoint (default WORK/llama-3.2-1b; created with
#                    bench/make_checkpoint.py if missing)
#   --work DIR       scratch + results directory (default REPO/bench-out)
#   --tree DIR       the tree to verify (default WORK/verify-llama-3.2-1b-tp8-pp2;
#                    converted from --src if missing)
#   --repeat N       runs of each (default 5; the median is reported)
#   --jobs N         pass --jobs N to shardfs verify (default: its own, the cores)
#   -h, --help
# Environment:
#   SHARDFS_BIN   shardfs binary (default REPO/.build/release/shardfs)
#   PYTHON        python with torch/safetensors, only to create --src
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
SRC="" TREE=""
REPEAT=5
JOBS=()
SHARDFS_BIN="${SHARDFS_BIN:-$REPO/.build/release/shardfs}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi
LAYOUT=(--tp-size 8 --pp-size 2 --qkv-linear --fuse-qkv)

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "verify_bench: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --tree) TREE="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --jobs) JOBS=(--jobs "$2"); shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat takes a positive integer"
[[ -x "$SHARDFS_BIN" ]] || die "no shardfs binary at $SHARDFS_BIN (swift build -c release, or set SHARDFS_BIN)"
[[ "$(/usr/bin/time -v true 2>&1)" == *"Maximum resident set size"* ]] \
    || die "/usr/bin/time is not GNU time (no -v): apt-get install -y time"

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC="${SRC:-$WORK/llama-3.2-1b}"
TREE="${TREE:-$WORK/verify-llama-3.2-1b-tp8-pp2}"
if [[ ! -f "$SRC/config.json" ]]; then
    [[ -e "$SRC" ]] && die "$SRC exists but is not a checkpoint; remove it or pass --src"
    echo "== creating $SRC with bench/make_checkpoint.py (Llama-3.2-1B shapes, random bf16)" >&2
    "$PYTHON" "$HERE/make_checkpoint.py" --out "$SRC"
fi
if [[ ! -d "$TREE/model" ]]; then
    echo "== converting $SRC into $TREE (${LAYOUT[*]})" >&2
    "$SHARDFS_BIN" convert "$SRC" "$TREE" "${LAYOUT[@]}" >&2
fi

FILES=("$TREE"/model/* "$SRC"/*.safetensors)
BYTES=$(cat "${FILES[@]}" | wc -c)
cat "${FILES[@]}" > /dev/null  # warm
cat "${FILES[@]}" > /dev/null

median() { sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

LOG="$(mktemp -d)"
trap 'rm -rf "$LOG"' EXIT
CAT=() VERIFY=() RSS=()
for ((i = 1; i <= REPEAT; i++)); do
    /usr/bin/time -f "%e" -o "$LOG/cat" cat "${FILES[@]}" > /dev/null
    CAT+=("$(cat "$LOG/cat")")
    status=0
    /usr/bin/time -v -o "$LOG/verify" "$SHARDFS_BIN" verify "$SRC" "$TREE" "${LAYOUT[@]}" "${JOBS[@]}" \
        > "$LOG/verify.out" 2> "$LOG/verify.err" || status=$?
    [[ $status -eq 0 ]] || { cat "$LOG/verify.out" "$LOG/verify.err" >&2; die "verify failed (exit $status)"; }
    VERIFY+=("$(awk -F': ' '/Elapsed \(wall clock\)/ { n = split($2, p, ":"); s = 0; for (j = 1; j <= n; j++) s = s * 60 + p[j]; print s }' "$LOG/verify")")
    RSS+=("$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$LOG/verify")")
    echo "run $i: cat ${CAT[-1]} s, verify ${VERIFY[-1]} s, ${RSS[-1]} KB" >&2
done

cat_median=$(printf '%s\n' "${CAT[@]}" | median)
verify_median=$(printf '%s\n' "${VERIFY[@]}" | median)
rss_max=$(printf '%s\n' "${RSS[@]}" | sort -n | tail -1)
tail -1 "$LOG/verify.out" >&2
awk -v c="$cat_median" -v v="$verify_median" -v b="$BYTES" -v r="$rss_max" -v n="$REPEAT" 'BEGIN {
    printf "| what | median of %d (s) | GB/s of tree + source |\n|---|---|---|\n", n
    printf "| `cat` tree + source | %.2f | %.2f |\n", c, b / c / 1e9
    printf "| `shardfs verify` | %.2f | %.2f |\n", v, b / v / 1e9
    printf "\nverify / cat speed: %.2fx; verify max RSS %.0f MB; %.2f GB read (tree + source)\n", c / v, r / 1024, b / 1e9
}'
r=$(awk -v c="$cat_median" -v v="$verify_median" 'BEGIN { printf "%.2f", c / v }')
bench_summary verify "\`verify\` of the 1B TP=8 PP=2 tree vs \`cat\` of the tree and the source" "${r}x" ">= 0.7x" "$(ratio_status "$r" ">=" 0.7)"
bench_summary verify "\`verify\` peak RSS" "$(( rss_max / 1024 )) MB" "< 256 MB" "$(ratio_status "$rss_max" "<=" 250000)"
