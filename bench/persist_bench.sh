#!/usr/bin/env bash
# Benchmark of `shardfs mount --persist-to` (the background materialiser), on
# the sparse Llama-3-8B checkpoint of bench/mount_bench.sh (made on first use
# by bench/make_sparse_checkpoint.py), layout TP=32 PP=4 kv multiplier 4,
# qkv_linear, fuse_qkv, bf16; the materialiser writes share --part of the
# files (default 0/4: 32 files, ~4.4 GB) to a scratch directory on the disk
# under --work. Sources are warmed in the page cache first, untimed. In one run:
#
#  a. the materialiser's rate: seconds from `shardfs mount --persist-to` until
#     `shardfs status` says done (no readers), against `cp -r` of the same
#     files (the persisted ones, to a second directory) followed by `sync`;
#  b. read throughput through the mount: 8 readers (`dd bs=1M`, 4 files each)
#     over the 32 files of pp rank 0, with no materialiser, and with one
#     running (started at the same time; how far it got during the reads is
#     reported too);
#  c. reads of the part's files once persisted (served from DIR) against the
#     same files served from the sources (no --persist-to), 1 reader.
#
# Usage: bench/persist_bench.sh [--work DIR] [--part I/N] [--repeat N]
# Environment: SHARDFS_BIN (default REPO/.build/release/shardfs).
# Output: a markdown table on stdout and in WORK/results/persist-<time>.md.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
PART=0/4
REPEAT=1
while [[ $# -gt 0 ]]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --part) PART="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "persist_bench: unknown option $1" >&2; exit 2 ;;
    esac
done
BIN="${SHARDFS_BIN:-$REPO/.build/release/shardfs}"
[[ -x "$BIN" ]] || { echo "persist_bench: no shardfs binary at $BIN (swift build -c release)" >&2; exit 2; }
SRC="$WORK/sparse-llama-3-8b"
if [[ ! -f "$SRC/model.safetensors.index.json" ]]; then
    python3 "$HERE/make_sparse_checkpoint.py" --model 8b --out "$SRC" >&2
fi
FLAGS=(--tp-size 32 --pp-size 4 --kv-size-multiplier 4 --qkv-linear --fuse-qkv --dtype bfloat16)
STAMP="$(date +%Y%m%d-%H%M%S)"
SCRATCH="$WORK/persist-$STAMP"
MNT="$SCRATCH/mnt"
RESULTS="$WORK/results"
mkdir -p "$MNT" "$RESULTS"

cleanup() {
    if awk -v m="$MNT" '$2 == m { f = 1 } END { exit !f }' /proc/mounts; then "$BIN" unmount "$MNT" || fusermount3 -u -z "$MNT" || true; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

now() { echo "$EPOCHREALTIME"; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.2f", b / s / 1e9 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
persist_field() { "$BIN" status "$MNT" --json | python3 -c "import json,sys; p=json.load(sys.stdin)['persist']; print(p['$1'])"; }
wait_done() {
    local state
    while true; do
        state="$(persist_field state)"
        [[ "$state" == done ]] && return 0
        [[ "$state" == failed ]] && { echo "materialiser failed: $(persist_field lastError)" >&2; exit 1; }
        sleep 0.1
    done
}
mount_it() { "$BIN" mount "$SRC" "$MNT" "${FLAGS[@]}" --log-file "$SCRATCH/daemon.log" "$@" >/dev/null; }
unmount_it() { "$BIN" unmount "$MNT"; }
read8() {  # 8 readers over the 32 files of pp rank 0; prints seconds
    local files=("$MNT"/model/*_pp_rank_00.pt) t0 t1 k
    t0=$(now)
    for k in 0 1 2 3 4 5 6 7; do ( for f in "${files[@]:k*4:4}"; do dd if="$f" of=/dev/null bs=1M status=none; done ) & done
    wait
    t1=$(now)
    secs "$t0" "$t1"
}

echo "== warming the sources" >&2
cat "$SRC"/*.safetensors >/dev/null
PP0_BYTES=$("$BIN" plan "$SRC" "${FLAGS[@]}" --json | python3 -c "
import json,sys; p=json.load(sys.stdin); print(sum(f['size'] for f in p['files'] if f['path'].endswith('_pp_rank_00.pt')))")
ROWS=()
for (( run = 1; run <= REPEAT; run++ )); do
    echo "== run $run: a. materialiser alone, then cp -r + sync of the same files" >&2
    rm -rf "$SCRATCH/dir" "$SCRATCH/cp"
    t0=$(now); mount_it --persist-to "$SCRATCH/dir" --part "$PART"; wait_done; t1=$(now)
    PART_BYTES=$(persist_field bytesTotal); PART_FILES=$(persist_field filesTotal)
    unmount_it
    T_PERSIST=$(secs "$t0" "$t1")
    sync
    t0=$(now); cp -r "$SCRATCH/dir/model" "$SCRATCH/cp"; sync; t1=$(now)
    T_CP=$(secs "$t0" "$t1")
    ROWS+=("| a | materialiser, part $PART ($PART_FILES files), no readers | $PART_BYTES | $T_PERSIST s | $(gbps "$PART_BYTES" "$T_PERSIST") | $(ratio "$T_CP" "$T_PERSIST")x of cp |")
    ROWS+=("| a | \`cp -r\` of the same files + \`sync\` | $PART_BYTES | $T_CP s | $(gbps "$PART_BYTES" "$T_CP") | |")

    echo "== run $run: b. 8 readers without and with a materialiser" >&2
    mount_it; T_PLAIN=$(read8); unmount_it
    rm -rf "$SCRATCH/dir2"
    mount_it --persist-to "$SCRATCH/dir2" --part "$PART"; T_WITH=$(read8); DONE_DURING=$(persist_field bytesDone); wait_done; unmount_it
    ROWS+=("| b | 8 readers, pp rank 0 (32 files), no materialiser | $PP0_BYTES | $T_PLAIN s | $(gbps "$PP0_BYTES" "$T_PLAIN") | |")
    ROWS+=("| b | the same with the materialiser running (it wrote $DONE_DURING bytes meanwhile) | $PP0_BYTES | $T_WITH s | $(gbps "$PP0_BYTES" "$T_WITH") | $(ratio "$T_PLAIN" "$T_WITH")x of without |")

    echo "== run $run: c. the part's files served from DIR vs from the sources" >&2
    mapfile -t PART_NAMES < <(cd "$SCRATCH/dir2/model" && ls)
    mount_it
    t0=$(now); for f in "${PART_NAMES[@]}"; do dd if="$MNT/model/$f" of=/dev/null bs=1M status=none; done; t1=$(now)
    unmount_it
    T_ENGINE=$(secs "$t0" "$t1")
    mount_it --persist-to "$SCRATCH/dir2" --part "$PART"; wait_done
    t0=$(now); for f in "${PART_NAMES[@]}"; do dd if="$MNT/model/$f" of=/dev/null bs=1M status=none; done; t1=$(now)
    SERVED=$(persist_field filesServedFromDirectory)
    unmount_it
    T_DIR=$(secs "$t0" "$t1")
    ROWS+=("| c | 1 reader, the part's $PART_FILES files made from the sources | $PART_BYTES | $T_ENGINE s | $(gbps "$PART_BYTES" "$T_ENGINE") | |")
    ROWS+=("| c | the same files served from DIR ($SERVED verified copies, CRC fields still 0) | $PART_BYTES | $T_DIR s | $(gbps "$PART_BYTES" "$T_DIR") | $(ratio "$T_ENGINE" "$T_DIR")x of from sources |")
done
# Headline figures for bench/report.sh (the last run's).
bench_summary persist "\`--persist-to\`: the materialiser alone vs \`cp -r\` of its files" "$(ratio "$T_CP" "$T_PERSIST")x" ">= 0.7x" "$(ratio_status "$(ratio "$T_CP" "$T_PERSIST")" ">=" 0.7)"
bench_summary persist "8 readers while the materialiser runs, vs without" "$(ratio "$T_PLAIN" "$T_WITH")x" ">= 0.9x" "$(ratio_status "$(ratio "$T_PLAIN" "$T_WITH")" ">=" 0.9)"
bench_summary persist "a persisted file served from DIR vs made from the sources" "$(ratio "$T_ENGINE" "$T_DIR")x faster" "" ""
OUT="$RESULTS/persist-$STAMP.md"
{
    echo "persist benchmark $STAMP: $(nproc) CPUs; source $SRC (sparse, warm); flags ${FLAGS[*]}; binary $BIN"
    echo
    echo "| | measurement | bytes | time | GB/s | ratio |"
    echo "|---|---|---:|---:|---:|---|"
    printf '%s\n' "${ROWS[@]}"
} | tee "$OUT"
