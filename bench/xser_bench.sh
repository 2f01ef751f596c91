#!/usr/bin/env bash
# xser through the mount: reading all tensor files of one rank (many small
# files) against the pt file of the same rank, side by side in one run.
#
# Source: the sparse Llama-3-8B checkpoint (bench/make_sparse_checkpoint.py;
# created on first use, ~3 MB of disk), warm in the page cache before each
# measurement (untimed). Layout TP=32 PP=4 --kv-size-multiplier 4 --qkv-linear
# --fuse-qkv, one rank (default tp 0, pp 1: 8 layers, no embedding). Each
# measurement gets a fresh mount, so the FUSE page cache starts cold:
#   pt:   shardfs mount ... --format pt;   cat MNT/model/P > /dev/null
#   xser: shardfs mount ... --format xser; cat MNT/model/P.tensors/tensor_*.pt > /dev/null
#         (one process reading the files one after another, in tid order)
# Runs alternate pt, xser; each is repeated --repeat times; the table gives the
# medians, GB/s (10^9 bytes), files/s and the ratio xser/pt. Untimed check
# after each read: the bytes read equal the sizes `shardfs plan` gives.
#
# Usage: bench/xser_bench.sh [options]
#   --work DIR        scratch + results directory (default REPO/bench-out)
#   --src8 DIR        sparse checkpoint (default WORK/sparse-llama-3-8b)
#   --rank TP/PP      the rank (default 0/1)
#   --dtype DTYPE     output dtype (default bfloat16)
#   --repeat N        runs of each (default 3)
#   -h, --help
# Environment: SHARDFS_BIN (default REPO/.build/release/shardfs).
# Every mount made here is unmounted on exit, also on error or Ctrl-C.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
SRC8="" RANK="0/1" DTYPE=bfloat16 REPEAT=3

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "xser_bench: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --src8) SRC8="$2"; shift 2 ;;
        --rank) RANK="$2"; shift 2 ;;
        --dtype) DTYPE="$2"; shift 2 ;;
        --repeat) [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "--repeat takes a positive integer"; REPEAT="$2"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$RANK" =~ ^([0-9]+)/([0-9]+)$ ]] || die "--rank takes TP/PP, e.g. 0/1"
TP=${BASH_REMATCH[1]} PP=${BASH_REMATCH[2]}
(( TP < 32 && PP < 4 )) || die "--rank $RANK: the layout has tp ranks 0-31 and pp ranks 0-3"
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC8="${SRC8:-$WORK/sparse-llama-3-8b}"
if [[ ! -f "$SRC8/model.safetensors.index.json" ]]; then
    [[ -e "$SRC8" ]] && die "$SRC8 exists but is not a complete checkpoint; remove it or pass --src8"
    echo "== creating $SRC8 (sparse, Llama-3-8B shapes)" >&2
    python3 "$HERE/make_sparse_checkpoint.py" --model 8b --out "$SRC8" >&2
fi
SHARDFS_BIN="${SHARDFS_BIN:-$REPO/.build/release/shardfs}"
[[ -x "$SHARDFS_BIN" ]] || die "no shardfs binary at $SHARDFS_BIN: run 'swift build -c release' or set SHARDFS_BIN"

STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$WORK/results"
LOGS="$RESULTS/xser-logs-$STAMP"
MNT="$WORK/mnt-xser-$STAMP-$$"
mkdir -p "$LOGS" "$MNT"
LAYOUT=(--tp-size 32 --pp-size 4 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype "$DTYPE")
P="$(printf 'dp_rank_00_tp_rank_%02d_pp_rank_%02d.pt' "$TP" "$PP")"

is_mounted() { awk -v m="$MNT" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
daemon_pid() { pgrep -f "shardfs.*mount.*$MNT .*--foreground" | head -n 1 || true; }
unmount() {
    local pid i
    pid="$(daemon_pid)"
    if is_mounted; then
        "$SHARDFS_BIN" unmount "$MNT" 2>>"$LOGS/unmount.log" \
            || "$SHARDFS_BIN" unmount --lazy "$MNT" 2>>"$LOGS/unmount.log" \
            || fusermount3 -u -z "$MNT" 2>>"$LOGS/unmount.log" || true
    fi
    if [[ -n "$pid" ]]; then
        for (( i = 0; i < 100; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
cleanup() {
    trap '' INT TERM
    unmount
    if is_mounted; then echo "!! $MNT is STILL MOUNTED; run: $SHARDFS_BIN unmount --lazy $MNT" >&2; else rmdir "$MNT" 2>/dev/null || true; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }
per_s() { awk -v n="$1" -v s="$2" 'BEGIN { printf "%.0f", n / s }'; }

# Expected sizes, from the plan (no mount needed).
"$SHARDFS_BIN" plan "$SRC8" "${LAYOUT[@]}" --format xser --json > "$LOGS/plan-xser.json"
read -r XSER_BYTES XSER_FILES < <(python3 - "$LOGS/plan-xser.json" "model/$P" <<'PY'
import json, sys
plan = json.load(open(sys.argv[1]))
f = next(f for f in plan["files"] if f["path"] == sys.argv[2])
sizes = [t["file"]["size"] for t in f["tensors"]]
print(sum(sizes), len(sizes))
PY
)
PT_BYTES=$("$SHARDFS_BIN" plan "$SRC8" "${LAYOUT[@]}" | awk -v p="model/$P" '$1 == p { print $2 }')
(( PT_BYTES > 0 && XSER_BYTES > 0 )) || die "could not read the sizes of $P from shardfs plan"
mapfile -t SHARDS < <(ls "$SRC8"/model-*-of-*.safetensors)

# measure FORMAT: fresh mount, warm sources, read, check; prints seconds.
measure() {
    local format="$1" files t0 t1 got
    unmount
    cat "${SHARDS[@]}" > /dev/null  # warm (holes cost no disk I/O)
    "$SHARDFS_BIN" mount "$SRC8" "$MNT" "${LAYOUT[@]}" --format "$format" --log-file "$LOGS/daemon-$format.log" \
        >>"$LOGS/mount.log" 2>&1 || { tail -n 5 "$LOGS/mount.log" >&2; die "shardfs mount --format $format failed"; }
    if [[ "$format" == pt ]]; then
        files=("$MNT/model/$P")
    else
        files=()
        for (( i = 0; i < XSER_FILES; i++ )); do files+=("$MNT/model/$P.tensors/tensor_$i.pt"); done
    fi
    t0=$(now)
    cat "${files[@]}" > /dev/null
    t1=$(now)
    got=$(cat "${files[@]}" | wc -c)  # untimed (now from the page cache)
    [[ "$format" == pt ]] && want=$PT_BYTES || want=$XSER_BYTES
    (( got == want )) || die "--format $format: read $got bytes, shardfs plan says $want"
    unmount
    elapsed "$t0" "$t1"
}

echo "== $SHARDFS_BIN; rank $P of ${LAYOUT[*]}: pt $PT_BYTES bytes in 1 file, xser $XSER_BYTES bytes in $XSER_FILES tensor files" >&2
T_PT=() T_XS=()
for (( r = 1; r <= REPEAT; r++ )); do
    T_PT+=("$(measure pt)")
    T_XS+=("$(measure xser)")
    printf '   run %d: pt %s s, xser %s s\n' "$r" "${T_PT[-1]}" "${T_XS[-1]}" >&2
done
MPT=$(median "${T_PT[@]}") MXS=$(median "${T_XS[@]}")

REPORT="$RESULTS/xser-$STAMP.md"
{
    echo "### xser vs pt through the mount ($STAMP)"
    echo
    echo "\`$SHARDFS_BIN\`; rank \`$P\` of Llama-3-8B shapes (sparse, warm), \`${LAYOUT[*]}\`; fresh mount per read, \`cat\` (1 reader); median of $REPEAT runs (runs: pt ${T_PT[*]} s; xser ${T_XS[*]} s); $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo
    echo "| read | files | bytes | median s | GB/s | files/s | vs pt |"
    echo "|---|---:|---:|---:|---:|---:|---:|"
    echo "| pt: \`P\` | 1 | $PT_BYTES | $MPT | $(gbps "$PT_BYTES" "$MPT") | $(per_s 1 "$MPT") | 1.00x |"
    echo "| xser: all \`P.tensors/tensor_*.pt\` | $XSER_FILES | $XSER_BYTES | $MXS | $(gbps "$XSER_BYTES" "$MXS") | $(per_s "$XSER_FILES" "$MXS") | $(awk -v a="$XSER_BYTES" -v b="$MXS" -v c="$PT_BYTES" -v d="$MPT" 'BEGIN { printf "%.2fx", (a / b) / (c / d) }') |"
} | tee "$REPORT"
echo "report: $REPORT; logs: $LOGS" >&2
r=$(awk -v a="$XSER_BYTES" -v b="$MXS" -v c="$PT_BYTES" -v d="$MPT" 'BEGIN { printf "%.2f", (a / b) / (c / d) }')
bench_summary mount "xser: one rank's $XSER_FILES tensor files through the mount, bytes/s vs its pt file" "${r}x" ">= 0.8x" "$(ratio_status "$r" ">=" 0.8)"
