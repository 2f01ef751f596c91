#!/usr/bin/env bash
# FUSE mount benchmark for `shardfs mount`, on sparse checkpoints with real
# Llama-3 shapes (bench/make_sparse_checkpoint.py; created on first use, they
# cost ~20 MB of disk). Sources are warmed in the page cache before each
# measurement, untimed; each read measurement gets a fresh mount, so the FUSE
# page cache starts cold.
#
#  a. mount time: Llama-3-70B shapes, TP=32 PP=8 (kv multiplier 4, qkv_linear,
#     fuse_qkv; 256 files): seconds from `shardfs mount` until `ls MNT/model`
#     lists every file. Median of --mount-repeat runs (target < 1 s). Every
#     file's size is also checked against `shardfs plan`.
#  b. read throughput: Llama-3-8B shapes, TP=32 PP=4 (same flags), bf16 and
#     float32 output: the 32 files of pp rank 0 with `dd bs=1M` by 1 reader
#     (all 32 in a row) and by 8 readers (8 parallel dd loops, 4 files each),
#     against reading as many bytes of the source shards directly (1 reader;
#     8 readers over 8 equal byte ranges with dd skip/count). GB/s and the
#     ratio mount/direct (target >= 0.5x for bf16). Median of --repeat runs.
#  c. the daemon's peak RSS (VmHWM of the pid `pgrep -f "shardfs.*mount.*MNT"`,
#     read after the reads, before unmounting; target < 256 MB).
#  d. variants --page-cache, --no-splice, --max-read-kib 1024: bf16 (see
#     --variant-dtypes), 1 and 8 readers, --variant-repeat runs each (default 1).
#  e. the transport alone beside the mount: the same 32 bf16 files of b read
#     (same dd patterns, 1 and 8 readers, warm) through bench/zerofs.c, a
#     FUSE file system set up as the daemon is that replies zeros (compiled
#     with cc into the run's log directory; a manifest of the 128 names and
#     sizes of `shardfs plan`), and through the shardfs mount, with the same
#     --max-read-kib. --repeat PAIRED rounds (zerofs then mount in odd rounds,
#     mount then zerofs in even ones, fresh mounts each): GB/s of each, the
#     ratio mount/transport per round and the median of those ratios (and
#     of the ratios of the two servers' CPU seconds for the same bytes). The
#     ratio is the share of FUSE's own ceiling here that the daemon reaches;
#     absolute GB/s swing with the machine's other load, ratios of a pair less.
# Untimed checks after each mount read: dd byte counts equal the file sizes,
# and the sha256 of two rank files agrees across all bf16 (and all fp32) mounts;
# with --check, torch.load of two files compared with the source (needs torch).
#
# Usage: bench/mount_bench.sh [options]
#   --work DIR            scratch + results directory (default REPO/bench-out)
#   --src8 DIR --src70 DIR  sparse checkpoints (default WORK/sparse-llama-3-{8b,70b})
#   --repeat N            runs per read measurement in b, paired rounds in e (default 3)
#   --mount-repeat N      runs of a (default 5)
#   --variant-repeat N    runs per variant in d (default 1)
#   --variants LIST       ';'-separated flag sets for d
#                         (default "--page-cache;--no-splice;--max-read-kib 1024")
#   --variant-dtypes LIST ','-separated output dtypes for d (default bfloat16;
#                         e.g. bfloat16,float32)
#                         A variant may hold `--bench-readahead-kib N`: the bench
#                         then writes N to the mount's bdi read_ahead_kb after
#                         mounting (root; the kernel's readahead request size).
#   --max-read-kib N      e: the request size given to both zerofs and the mount
#                         (default: the daemon's default, from `shardfs mount --help`)
#   --skip-mount-time --skip-reads --skip-fp32 --skip-variants --skip-transport
#                         (--skip-reads skips b, c, d; --skip-transport skips e)
#   --transport-only      e alone (= --skip-mount-time --skip-reads): about a
#                         minute per round
#   --check               also torch.load two rank files per mount and compare
#                         tensors with the source (PYTHON needs torch, safetensors)
#   -h, --help
# Environment:
#   SHARDFS_BIN   shardfs binary (default WORK/shardfs-bench; when missing it is
#                 copied from REPO/.build/release/shardfs, so rebuilding during a
#                 run does not change the binary under test)
#   PYTHON        python (default REPO/.venv/bin/python, made by scripts/setup.sh;
#                 else python3)
#
# Output: a markdown table on stdout, also saved to WORK/results/mount-<time>.md;
# per-run logs (dd output, daemon logs) in WORK/results/mount-logs-<time>/.
# Every mount made here (zerofs's too) is unmounted on exit, also on error or Ctrl-C.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
SRC8="" SRC70=""
REPEAT=3 MOUNT_REPEAT=5 VARIANT_REPEAT=1
VARIANTS="--page-cache;--no-splice;--max-read-kib 1024"
VARIANT_DTYPES=bfloat16
SKIP_MOUNT=0 SKIP_READS=0 SKIP_FP32=0 SKIP_VARIANTS=0 SKIP_TRANSPORT=0 CHECK=0
MAX_READ_KIB=""
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "mount_bench: $*" >&2; exit 2; }
posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 takes a positive integer"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --src8) SRC8="$2"; shift 2 ;;
        --src70) SRC70="$2"; shift 2 ;;
        --repeat) posint "$1" "$2"; REPEAT="$2"; shift 2 ;;
        --mount-repeat) posint "$1" "$2"; MOUNT_REPEAT="$2"; shift 2 ;;
        --variant-repeat) posint "$1" "$2"; VARIANT_REPEAT="$2"; shift 2 ;;
        --variants) VARIANTS="$2"; shift 2 ;;
        --variant-dtypes) VARIANT_DTYPES="$2"; shift 2 ;;
        --skip-mount-time) SKIP_MOUNT=1; shift ;;
        --skip-reads) SKIP_READS=1; shift ;;
        --skip-fp32) SKIP_FP32=1; shift ;;
        --skip-variants) SKIP_VARIANTS=1; shift ;;
        --skip-transport) SKIP_TRANSPORT=1; shift ;;
        --transport-only) SKIP_MOUNT=1; SKIP_READS=1; SKIP_TRANSPORT=0; shift ;;
        --max-read-kib) posint "$1" "$2"; MAX_READ_KIB="$2"; shift 2 ;;
        --check) CHECK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
(( CHECK )) && { "$PYTHON" -c "import torch, safetensors" 2>/dev/null || die "--check: $PYTHON lacks torch/safetensors (set PYTHON)"; }

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC8="${SRC8:-$WORK/sparse-llama-3-8b}"
SRC70="${SRC70:-$WORK/sparse-llama-3-70b}"

SHARDFS_BIN="${SHARDFS_BIN:-$WORK/shardfs-bench}"
if [[ ! -x "$SHARDFS_BIN" ]]; then
    [[ "$SHARDFS_BIN" == "$WORK/shardfs-bench" && -x "$REPO/.build/release/shardfs" ]] \
        || die "no shardfs binary at $SHARDFS_BIN: run 'swift build -c release' in $REPO and copy .build/release/shardfs there, or set SHARDFS_BIN"
    cp "$REPO/.build/release/shardfs" "$SHARDFS_BIN"
    echo "== copied $REPO/.build/release/shardfs to $SHARDFS_BIN" >&2
fi

if (( ! SKIP_TRANSPORT )) && [[ -z "$MAX_READ_KIB" ]]; then
    # The daemon's own default: "(default: N)" in the option's help.
    # (awk reads to the end: leaving early would SIGPIPE the writer, and pipefail fail it)
    MAX_READ_KIB=$("$SHARDFS_BIN" mount --help 2>/dev/null | awk '/--max-read-kib/ { f = 1 }
        f && !done && match($0, /\(default: [0-9]+\)/) { print substr($0, RSTART + 10, RLENGTH - 11); done = 1 }')
    [[ "$MAX_READ_KIB" =~ ^[1-9][0-9]*$ ]] || die "could not read --max-read-kib's default from '$SHARDFS_BIN mount --help': pass --max-read-kib"
fi

for spec in "8b:$SRC8" "70b:$SRC70"; do
    model="${spec%%:*}" dir="${spec#*:}"
    if [[ ! -f "$dir/model.safetensors.index.json" ]]; then
        [[ -e "$dir" ]] && die "$dir exists but is not a complete checkpoint; remove it or pass --src8/--src70"
        echo "== creating $dir (sparse, Llama-3-${model^^} shapes)" >&2
        python3 "$HERE/make_sparse_checkpoint.py" --model "$model" --out "$dir" >&2
    fi
done
SRC8="$(cd "$SRC8" && pwd)"
SRC70="$(cd "$SRC70" && pwd)"

# ---------------------------------------------------------------- scratch, cleanup
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$WORK/results"
LOGS="$RESULTS/mount-logs-$STAMP"
MNT="$WORK/mnt-bench-$STAMP-$$"
ZMNT="$WORK/mnt-zerofs-$STAMP-$$"   # e: zerofs's mount point
mkdir -p "$LOGS" "$MNT"
READER_PIDS=()
ZPID=""

is_mounted() { awk -v m="$MNT" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
# The daemon is `shardfs mount SRC MNT ... --foreground --ready-fd 3` (re-exec'd
# by the mount command); requiring --foreground skips `shardfs mount/unmount`.
daemon_pid() { pgrep -f "shardfs.*mount.*$MNT .*--foreground" | head -n 1 || true; }
plural() { if (( $1 > 1 )); then echo s; fi; }
wait_gone() {  # PID: wait up to 10 s for the daemon to exit after unmounting
    local pid="$1" i
    [[ -n "$pid" ]] || return 0
    for (( i = 0; i < 100; i++ )); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "warning: daemon $pid still running 10 s after unmount" >&2
    return 1
}
unmount() {
    local pid
    pid="$(daemon_pid)"
    if is_mounted; then
        "$SHARDFS_BIN" unmount "$MNT" 2>>"$LOGS/unmount.log" \
            || "$SHARDFS_BIN" unmount --lazy "$MNT" 2>>"$LOGS/unmount.log" \
            || fusermount3 -u -z "$MNT" 2>>"$LOGS/unmount.log" || true
    fi
    wait_gone "$pid" || true
}
zerofs_mounted() { awk -v m="$ZMNT" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
# zerofs_stop: SIGTERM to zerofs (it unmounts and exits), then make sure.
zerofs_stop() {
    local i
    if [[ -n "$ZPID" ]]; then
        kill -TERM "$ZPID" 2>/dev/null || true
        for (( i = 0; i < 100; i++ )); do kill -0 "$ZPID" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$ZPID" 2>/dev/null && echo "warning: zerofs $ZPID still running 10 s after SIGTERM" >&2
        wait "$ZPID" 2>/dev/null || true
        ZPID=""
    fi
    if zerofs_mounted; then fusermount3 -u "$ZMNT" 2>>"$LOGS/unmount.log" || fusermount3 -u -z "$ZMNT" 2>>"$LOGS/unmount.log" || true; fi
}
cleanup() {
    local pid
    trap '' INT TERM  # a second signal must not cut the unmount short
    for pid in "${READER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    unmount
    if is_mounted; then
        echo "!! $MNT is STILL MOUNTED; run: $SHARDFS_BIN unmount --lazy $MNT" >&2
    else
        rmdir "$MNT" 2>/dev/null || true
    fi
    zerofs_stop
    if zerofs_mounted; then
        echo "!! $ZMNT is STILL MOUNTED; run: fusermount3 -u -z $ZMNT" >&2
    else
        rmdir "$ZMNT" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 }
        END { if (NR % 2) { print a[(NR + 1) / 2]; exit }
              m = sprintf("%.3f", (a[NR / 2] + a[NR / 2 + 1]) / 2); sub(/0+$/, "", m); sub(/\.$/, "", m); print m }'
}
minmax() { printf '%s\n' "$@" | sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { print lo "-" hi }'; }
gbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.2f", b / s / 1e9; else print "-" }'; }
cpu_ticks() { awk '/^cpu / { idle = $5 + $6; t = 0; for (i = 2; i <= 9; i++) t += $i; print t - idle, t; exit }' /proc/stat; }
busy_pct() {  # "busy0 total0" "busy1 total1" -> % of all CPUs
    awk -v a="$1" -v b="$2" 'BEGIN { split(a, x, " "); split(b, y, " "); d = y[2] - x[2]; if (d > 0) printf "%.0f", 100 * (y[1] - x[1]) / d; else print "-" }'
}
TCK=$(getconf CLK_TCK)
proc_cpu_s() { awk -v t="$TCK" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / t }' "/proc/$1/stat" 2>/dev/null || echo 0; }
vmhwm_kb() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
size_of() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
dd_bytes() { awk '/bytes .* copied/ { s += $1 } END { printf "%.0f\n", s }' "$@"; }

# warm FILE...: read into the page cache (untimed); holes cost no disk I/O.
warm() { cat "$@" > /dev/null; }

# do_mount SRC FLAGS...: fresh mount at $MNT; sets DPID. Prints nothing.
do_mount() {
    local src="$1"; shift
    unmount
    "$SHARDFS_BIN" mount "$src" "$MNT" "$@" --log-file "$LOGS/daemon.log" >>"$LOGS/mount.log" 2>&1 \
        || { tail -n 5 "$LOGS/mount.log" "$LOGS/daemon.log" >&2; die "shardfs mount failed: $*"; }
    DPID="$(daemon_pid)"
    [[ -n "$DPID" ]] || die "mounted, but no daemon matches pgrep -f \"shardfs.*mount.*$MNT\""
}

# ---------------------------------------------------------------- header
SUMMARY=()   # markdown table rows
COMMANDS=()  # full commands, numbered
NOTES=()
FAIL=0
cmd_ref() { COMMANDS+=("$1"); CREF=${#COMMANDS[@]}; }  # sets CREF (no subshell)

base_busy="$(cpu_ticks)"; sleep 1; base_busy="$(busy_pct "$base_busy" "$(cpu_ticks)")"
echo "== shardfs $SHARDFS_BIN; mount point $MNT; background CPU load ${base_busy}% of $(nproc) CPUs" >&2

LAYOUT70=(--tp-size 32 --pp-size 8 --kv-size-multiplier 4 --qkv-linear --fuse-qkv)
LAYOUT8=(--tp-size 32 --pp-size 4 --kv-size-multiplier 4 --qkv-linear --fuse-qkv)

# ================================================================ a. mount time
if (( ! SKIP_MOUNT )); then
    echo "== a. mount time, Llama-3-70B shapes, ${LAYOUT70[*]}" >&2
    # The mount reads only the headers: warm those (the data is 141 GB of holes).
    for f in "$SRC70"/*.safetensors; do head -c 4M "$f" > /dev/null; done
    warm "$SRC70"/*.json
    "$SHARDFS_BIN" plan "$SRC70" "${LAYOUT70[@]}" > "$LOGS/plan70.txt"
    awk '/^model\/dp_rank_.*\.pt  *[0-9]+ bytes/ { sub(/^model\//, "", $1); print $1, $2 }' "$LOGS/plan70.txt" | sort > "$LOGS/plan70.sizes"
    want_files=$(wc -l < "$LOGS/plan70.sizes")
    [[ "$want_files" -eq 256 ]] || { echo "warning: shardfs plan lists $want_files files, expected 256" >&2; }
    t_ret=() t_ls=() t_lsl=() rss=()
    for (( i = 1; i <= MOUNT_REPEAT; i++ )); do
        unmount
        t0=$(now)
        "$SHARDFS_BIN" mount "$SRC70" "$MNT" "${LAYOUT70[@]}" --log-file "$LOGS/daemon.log" >>"$LOGS/mount.log" 2>&1 \
            || { tail -n 5 "$LOGS/mount.log" >&2; die "mount failed"; }
        t1=$(now)
        n=0 tries=0
        while :; do
            n=$(ls "$MNT/model" 2>/dev/null | wc -l)
            (( n >= want_files || ++tries > 500 )) && break
        done
        t2=$(now)
        ls -l "$MNT/model" > "$LOGS/ls70.txt"
        t3=$(now)
        DPID="$(daemon_pid)"
        rss+=("$(vmhwm_kb "$DPID")")
        t_ret+=("$(elapsed "$t0" "$t1")") t_ls+=("$(elapsed "$t0" "$t2")") t_lsl+=("$(elapsed "$t2" "$t3")")
        printf '   run %d: mount returned %.3f s, ls shows %d files at %.3f s, then ls -l %.3f s\n' \
            "$i" "${t_ret[-1]}" "$n" "${t_ls[-1]}" "${t_lsl[-1]}" >&2
        if (( i == 1 )); then
            awk '$1 ~ /^-/ { print $NF, $5 }' "$LOGS/ls70.txt" | sort > "$LOGS/mount70.sizes"
            if ! diff -q "$LOGS/plan70.sizes" "$LOGS/mount70.sizes" > /dev/null; then
                NOTES+=("BUG: file names/sizes under the 70B mount differ from \`shardfs plan\` (diff $LOGS/plan70.sizes $LOGS/mount70.sizes)")
                FAIL=1
            else
                NOTES+=("70B mount: all $want_files file names and sizes equal \`shardfs plan\`'s ($(awk '{ s += $2 } END { printf "%.1f GB", s / 1e9 }' "$LOGS/plan70.sizes") in all)")
            fi
        fi
        (( n == want_files )) || { NOTES+=("BUG: ls listed $n files, expected $want_files"); FAIL=1; }
    done
    unmount
    med=$(median "${t_ls[@]}")
    ok=$(awk -v m="$med" 'BEGIN { print (m < 1) ? "yes" : "**NO**" }')
    cmd_ref "shardfs mount $SRC70 MNT ${LAYOUT70[*]}; until [ \$(ls MNT/model | wc -l) = 256 ]; do :; done"; c=$CREF
    SUMMARY+=("| a | mount 70B TP32 PP8 → \`ls\` shows 256 files | [$c] | - | $med s (mount returns $(median "${t_ret[@]}") s; then \`ls -l\` $(median "${t_lsl[@]}") s) | runs $(minmax "${t_ls[@]}") s | - | $(( $(printf '%s\n' "${rss[@]}" | sort -n | tail -n 1) / 1024 )) MiB | - | - | < 1 s: $ok |")
    bench_summary mount "mount Llama-3-70B TP=32 PP=8 until \`ls\` lists its 256 files" "$med s" "< 1 s" "$(ratio_status "$med" "<=" 1)"
    # The same layout in xser: 15,968 files (256 rank files, their .info.pt, 15,456 tensor files).
    t_x=() rss_x=()
    for (( i = 1; i <= MOUNT_REPEAT; i++ )); do
        unmount
        t0=$(now)
        "$SHARDFS_BIN" mount "$SRC70" "$MNT" "${LAYOUT70[@]}" --format xser --log-file "$LOGS/daemon.log" >>"$LOGS/mount.log" 2>&1 \
            || { tail -n 5 "$LOGS/mount.log" >&2; die "mount --format xser failed"; }
        n=$(find "$MNT/model" -type f | wc -l)
        t_x+=("$(elapsed "$t0" "$(now)")")
        rss_x+=("$(vmhwm_kb "$(daemon_pid)")")
        (( n == 15968 )) || { NOTES+=("BUG: the xser mount holds $n files, expected 15968"); FAIL=1; }
    done
    unmount
    medx=$(median "${t_x[@]}")
    cmd_ref "shardfs mount $SRC70 MNT ${LAYOUT70[*]} --format xser; find MNT/model -type f | wc -l   # 15968"; c=$CREF
    SUMMARY+=("| a | mount 70B TP32 PP8 xser → \`find\` lists all 15,968 files | [$c] | - | $medx s | runs $(minmax "${t_x[@]}") s | - | $(( $(printf '%s\n' "${rss_x[@]}" | sort -n | tail -n 1) / 1024 )) MiB | - | - | |")
    bench_summary mount "mount the same layout in xser until \`find\` lists its 15,968 files" "$medx s" "" ""
fi

# ================================================================ b-d. reads
declare -A MED_GBPS   # key -> median GB/s
PP0_GLOB='dp_rank_00_tp_rank_*_pp_rank_00.pt'

# Source files that hold N bytes from the first shard on, for the direct reads.
mapfile -t SHARDS8 < <(ls "$SRC8"/model-*-of-*.safetensors | sort)

# read_files READERS LOGPREFIX FILE...: dd each file (1 reader: in a row;
# R readers: R parallel dd loops over R contiguous groups).
read_files() {
    local readers="$1" log="$2"; shift 2
    local files=("$@") n=$# k per
    if (( readers == 1 )); then
        local st=0
        for f in "${files[@]}"; do dd if="$f" of=/dev/null bs=1M 2>>"$log.0" || st=1; done
        return $st
    fi
    per=$(( (n + readers - 1) / readers ))
    READER_PIDS=()
    for (( k = 0; k < readers; k++ )); do
        ( st=0; for f in "${files[@]:k*per:per}"; do dd if="$f" of=/dev/null bs=1M 2>>"$log.$k" || st=1; done; exit $st ) &
        READER_PIDS+=("$!")
    done
    local st=0 pid
    for pid in "${READER_PIDS[@]}"; do wait "$pid" || st=1; done
    READER_PIDS=()
    return $st
}

# read_direct READERS NBYTES LOGPREFIX: NBYTES from the start of shard 1 on
# (continuing into the next shards), split in READERS equal byte ranges.
read_direct() {
    local readers="$1" total="$2" log="$3" k
    local -a plan=()
    # plan lines: reader file skip count
    mapfile -t plan < <(
        for f in "${SHARDS8[@]}"; do echo "$f $(stat -c %s "$f")"; done |
        awk -v total="$total" -v R="$readers" '
            { name[NR] = $1; size[NR] = $2; n = NR }
            END {
                for (k = 0; k < R; k++) {
                    lo = int(total * k / R); hi = int(total * (k + 1) / R); base = 0
                    for (i = 1; i <= n && lo < hi; i++) {
                        if (lo < base + size[i]) {
                            c = (hi < base + size[i] ? hi : base + size[i]) - lo
                            printf "%d %s %.0f %.0f\n", k, name[i], lo - base, c
                            lo += c
                        }
                        base += size[i]
                    }
                    if (lo < hi) { print "short" ; exit 1 }
                }
            }')
    [[ "${plan[*]}" != *short* ]] || die "the source shards hold fewer than $total bytes"
    READER_PIDS=()
    for (( k = 0; k < readers; k++ )); do
        (
            st=0
            for line in "${plan[@]}"; do
                read -r r f s c <<< "$line"
                [[ "$r" == "$k" ]] || continue
                dd if="$f" of=/dev/null bs=1M iflag=skip_bytes,count_bytes skip="$s" count="$c" 2>>"$log.$k" || st=1
            done
            exit $st
        ) &
        READER_PIDS+=("$!")
    done
    local st=0 pid
    for pid in "${READER_PIDS[@]}"; do wait "$pid" || st=1; done
    READER_PIDS=()
    return $st
}

# Shards covering the first N bytes (what the direct reads and pp rank 0 touch).
shards_for() {
    local total="$1" acc=0 f
    for f in "${SHARDS8[@]}"; do
        echo "$f"
        acc=$(( acc + $(stat -c %s "$f") ))
        (( acc >= total )) && break
    done
}

declare -A HASH0=() HASH31=() RA_SEEN=()
# measure KEY LABEL DTYPE READERS REPEATS MODE-FLAGS...: mount reads; records a row.
measure_mount() {
    local key="$1" label="$2" dtype="$3" readers="$4" reps="$5"; shift 5
    # --bench-readahead-kib N (a bench option, not shardfs's): after mounting,
    # write N to the mount's /sys/class/bdi/<dev>/read_ahead_kb (root).
    local mode=() ra=""
    while (( $# )); do
        if [[ "$1" == --bench-readahead-kib ]]; then ra="$2"; shift 2; else mode+=("$1"); shift; fi
    done
    local times=() rsses=() dcpus=() busys=() bytes=0 i files vanished=0
    for (( i = 1; i <= reps; i++ )); do
        warm $(shards_for "${BYTES_OUT[$dtype]}")
        do_mount "$SRC8" "${LAYOUT8[@]}" --dtype "$dtype" "${mode[@]}"
        local bdi
        bdi="/sys/class/bdi/$(awk -v m="$MNT" '$5 == m { d = $3 } END { print d }' /proc/self/mountinfo)/read_ahead_kb"
        if [[ -n "$ra" ]]; then echo "$ra" > "$bdi" || die "cannot write $bdi"; fi
        mapfile -t files < <(ls "$MNT/model"/$PP0_GLOB | sort)
        (( ${#files[@]} == 32 )) || { NOTES+=("BUG: $label: ${#files[@]} pp rank 0 files, expected 32"); FAIL=1; }
        bytes=$(size_of "${files[@]}")
        local log="$LOGS/$key.$i.dd" c0 b0 t0 t1 st=0
        c0=$(proc_cpu_s "$DPID"); b0=$(cpu_ticks); t0=$(now)
        read_files "$readers" "$log" "${files[@]}" || st=$?
        t1=$(now)
        if (( i == 1 )); then  # after the reads: the daemon tunes it once INIT is done
            local rak; rak=$(cat "$bdi" 2>/dev/null || echo '?')
            RA_SEEN[$rak]="${RA_SEEN[$rak]:+${RA_SEEN[$rak]}; }$label"
        fi
        if ! is_mounted || [[ "$(daemon_pid)" != "$DPID" ]]; then
            # Someone else unmounted it mid-run (e.g. a CI script that lazily
            # unmounts every fuse.shardfs mount): not a measurement; redo it.
            vanished=$(( vanished + 1 ))
            local f
            for f in "$log".*; do mv "$f" "$LOGS/vanished-$vanished-${f##*/}"; done
            NOTES+=("$label run $i: the mount disappeared during the reads at $(date +%T) (unmounted from outside, daemon log: \"unmounted\" with no unmount from this script); run repeated (dd logs: $LOGS/vanished-$vanished-*)")
            echo "   !! $label run $i: mount disappeared during the reads (external unmount?); repeating" >&2
            (( vanished <= 3 )) || die "the mount keeps disappearing; is something unmounting fuse.shardfs mounts?"
            unmount
            i=$(( i - 1 ))
            continue
        fi
        busys+=("$(busy_pct "$b0" "$(cpu_ticks)")")
        dcpus+=("$(awk -v a="$c0" -v b="$(proc_cpu_s "$DPID")" 'BEGIN { printf "%.2f", b - a }')")
        rsses+=("$(vmhwm_kb "$DPID")")
        times+=("$(elapsed "$t0" "$t1")")
        local got; got=$(dd_bytes "$log".*)
        if (( st != 0 || got != bytes )); then
            NOTES+=("BUG: $label run $i: dd exit status $st, read $got bytes of $bytes (logs $log.*)")
            FAIL=1
            grep -h -v -e 'records' -e 'copied' "$log".* | sort | uniq -c | head -n 5 | sed 's/^/   /' >&2 || true
        fi
        if (( i == 1 )); then  # untimed: content agrees across modes (same dtype)
            local h0 h31
            h0=$(sha256sum < "$MNT/model/dp_rank_00_tp_rank_00_pp_rank_00.pt" | cut -c1-16) || h0="read-failed"
            h31=$(sha256sum < "$MNT/model/dp_rank_00_tp_rank_31_pp_rank_00.pt" | cut -c1-16) || h31="read-failed"
            if [[ -z "${HASH0[$dtype]:-}" ]]; then
                HASH0[$dtype]=$h0 HASH31[$dtype]=$h31
            elif [[ "${HASH0[$dtype]}" != "$h0" || "${HASH31[$dtype]}" != "$h31" ]]; then
                NOTES+=("BUG: $label: tp 0 / tp 31 file contents (sha256 $h0 / $h31) differ from the first $dtype mount's (${HASH0[$dtype]} / ${HASH31[$dtype]})")
                FAIL=1
            fi
            if (( CHECK )); then
                if "$PYTHON" - "$SRC8" "$MNT" "$dtype" > "$LOGS/$key.check" 2>&1 <<'PY'
import sys, json, os, torch
from safetensors import safe_open
src, mnt, dtype = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
wm = json.load(open(os.path.join(src, "model.safetensors.index.json")))["weight_map"]
def get(name):
    with safe_open(os.path.join(src, wm[name]), "pt") as f:
        return f.get_tensor(name).to(dtype)
T = 32
for r in (0, 31):
    nonzero = 0
    sd = torch.load(f"{mnt}/model/dp_rank_00_tp_rank_{r:02d}_pp_rank_00.pt", mmap=True, weights_only=True)
    for name, dim in [("model.embed_tokens.weight", 0), ("model.layers.3.mlp.down_proj.weight", 1),
                      ("model.layers.7.self_attn.o_proj.weight", 1)]:
        full = get(name); k = full.size(dim) // T
        want = full.narrow(dim, r * k, k)
        got = sd[name]
        assert got.dtype == dtype and got.shape == want.shape, (name, got.dtype, got.shape, want.shape)
        assert torch.equal(got, want), (r, name, "values differ")
        nonzero += int((want != 0).sum())
    g = get("model.layers.5.mlp.gate_proj.weight"); u = get("model.layers.5.mlp.up_proj.weight"); k = g.size(0) // T
    assert torch.equal(sd["model.layers.5.mlp.gate_up_proj.weight"], torch.cat([g[r*k:(r+1)*k], u[r*k:(r+1)*k]])), (r, "gate_up")
    print(f"tp {r}: {len(sd)} tensors, embed/down/o/gate_up equal the source ({nonzero} non-zero values compared)")
PY
                then
                    NOTES+=("$label: torch.load(mmap=True) of tp 0 and tp 31 through the mount: embed_tokens, down_proj, o_proj, gate_up_proj equal the source slices ($dtype)")
                else
                    NOTES+=("BUG: $label: torch.load check failed: $(tail -n 1 "$LOGS/$key.check")")
                    FAIL=1
                fi
            fi
        fi
        unmount
        printf '   %-34s run %d/%d: %s s, %s GB/s, daemon VmHWM %s MiB, daemon CPU %s s, machine busy %s%%\n' \
            "$label" "$i" "$reps" "${times[-1]}" "$(gbps "$bytes" "${times[-1]}")" "$(( rsses[-1] / 1024 ))" "${dcpus[-1]}" "${busys[-1]}" >&2
    done
    local med; med=$(median "${times[@]}")
    MED_GBPS[$key]=$(gbps "$bytes" "$med")
    ROW_BYTES=$bytes ROW_MED=$med ROW_RANGE="$(minmax "${times[@]}") s"
    ROW_RSS=$(( $(printf '%s\n' "${rsses[@]}" | sort -n | tail -n 1) / 1024 ))
    ROW_DCPU=$(median "${dcpus[@]}") ROW_BUSY=$(median "${busys[@]}")
}

measure_direct() {
    local key="$1" label="$2" readers="$3" reps="$4" total="$5"
    local times=() busys=() i
    for (( i = 1; i <= reps; i++ )); do
        warm $(shards_for "$total")
        local log="$LOGS/$key.$i.dd" b0 t0 t1 st=0
        b0=$(cpu_ticks); t0=$(now)
        read_direct "$readers" "$total" "$log" || st=$?
        t1=$(now)
        busys+=("$(busy_pct "$b0" "$(cpu_ticks)")")
        times+=("$(elapsed "$t0" "$t1")")
        local got; got=$(dd_bytes "$log".*)
        (( st == 0 && got == total )) || { NOTES+=("$label run $i: dd exit status $st, read $got of $total bytes"); FAIL=1; }
        printf '   %-34s run %d/%d: %s s, %s GB/s, machine busy %s%%\n' "$label" "$i" "$reps" "${times[-1]}" "$(gbps "$total" "${times[-1]}")" "${busys[-1]}" >&2
    done
    local med; med=$(median "${times[@]}")
    MED_GBPS[$key]=$(gbps "$total" "$med")
    ROW_BYTES=$total ROW_MED=$med ROW_RANGE="$(minmax "${times[@]}") s" ROW_BUSY=$(median "${busys[@]}")
}

c_dd1="" c_dd8=""
dd_commands() {  # numbers the reads' two dd commands, once (b and e share them)
    [[ -z "$c_dd1" ]] || return 0
    cmd_ref "for f in MNT/model/$PP0_GLOB; do dd if=\$f of=/dev/null bs=1M; done   # 1 reader, 32 files in a row"; c_dd1=$CREF
    cmd_ref "8 x ( for f in <4 of the 32 files>; do dd if=\$f of=/dev/null bs=1M; done ) &  wait   # 8 readers"; c_dd8=$CREF
}

ratio() { awk -v a="${MED_GBPS[$1]:-0}" -v b="${MED_GBPS[$2]:-0}" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }'; }

if (( ! SKIP_READS )); then
    DTYPES=(bfloat16)
    (( SKIP_FP32 )) || DTYPES+=(float32)
    declare -A BYTES_OUT
    # Output bytes of pp rank 0 per dtype, from the plan (no mount needed).
    for dt in "${DTYPES[@]}"; do
        BYTES_OUT[$dt]=$("$SHARDFS_BIN" plan "$SRC8" "${LAYOUT8[@]}" --dtype "$dt" |
            awk '/^model\/dp_rank_00_tp_rank_[0-9]+_pp_rank_00\.pt  *[0-9]+ bytes/ { s += $2 } END { printf "%.0f\n", s }')
        (( BYTES_OUT[$dt] > 0 )) || die "could not read pp rank 0 sizes from shardfs plan"
    done
    dd_commands
    cmd_ref "dd if=SRC/model-0000i-of-00004.safetensors of=/dev/null bs=1M iflag=skip_bytes,count_bytes skip=S count=C   # the first N bytes of shards 1, 2, ... in a row"; c_dir1=$CREF
    cmd_ref "8 parallel dd as above, reader k reading bytes [kN/8, (k+1)N/8) of the shards' concatenation"; c_dir8=$CREF
    for dt in "${DTYPES[@]}"; do
        short=$([[ $dt == bfloat16 ]] && echo bf16 || echo fp32)
        cmd_ref "shardfs mount $SRC8 MNT ${LAYOUT8[*]} --dtype $dt"; c_m=$CREF
        echo "== b. reads, Llama-3-8B shapes, ${LAYOUT8[*]} --dtype $dt: ${BYTES_OUT[$dt]} bytes (32 files of pp rank 0)" >&2
        for readers in 1 8; do
            measure_direct "direct-$short-$readers" "direct $short bytes, $readers reader(s)" "$readers" "$REPEAT" "${BYTES_OUT[$dt]}"
            SUMMARY+=("| b | direct: source shards, $ROW_BYTES bytes, $readers reader$(plural "$readers") | [$( ((readers == 1)) && echo "$c_dir1" || echo "$c_dir8")] | $ROW_BYTES | $ROW_MED s | $ROW_RANGE | **${MED_GBPS[direct-$short-$readers]}** | - | - | $ROW_BUSY% | |")
            measure_mount "mount-$short-$readers" "mount $short, $readers reader(s)" "$dt" "$readers" "$REPEAT"
            r=$(ratio "mount-$short-$readers" "direct-$short-$readers")
            verdict=""
            [[ $dt == bfloat16 ]] && verdict=$(awk -v a="${MED_GBPS[mount-$short-$readers]}" -v b="${MED_GBPS[direct-$short-$readers]}" 'BEGIN { print (a >= 0.5 * b) ? "≥ 0.5x: yes" : "≥ 0.5x: **NO**" }')
            if [[ $dt == bfloat16 ]]; then
                bench_summary mount "mount Llama-3-8B TP=32 bf16 warm, $readers reader$(plural "$readers"), vs reading the source directly" "$r (${MED_GBPS[mount-$short-$readers]} GB/s)" ">= 0.5x" "$(ratio_status "${r%x}" ">=" 0.5)"
                bench_summary mount "daemon peak RSS, $readers reader$(plural "$readers")" "$ROW_RSS MiB" "< 256 MB" "$(ratio_status "$ROW_RSS" "<=" 244)"
            fi
            SUMMARY+=("| b,c | mount $short (default: direct_io, max-read 512 KiB), $readers reader$(plural "$readers") | [$c_m] + [$( ((readers == 1)) && echo "$c_dd1" || echo "$c_dd8")] | $ROW_BYTES | $ROW_MED s | $ROW_RANGE | **${MED_GBPS[mount-$short-$readers]}** ($r of direct) | $ROW_RSS MiB$(if ((ROW_RSS >= 256)); then echo ' **≥ 256**'; fi) | $ROW_DCPU s | $ROW_BUSY% | $verdict |")
        done
    done

    if (( ! SKIP_VARIANTS )); then
        IFS=';' read -r -a VARIANT_LIST <<< "$VARIANTS"
        IFS=',' read -r -a VDTYPES <<< "$VARIANT_DTYPES"
        for vdt in "${VDTYPES[@]}"; do
            [[ -n "${BYTES_OUT[$vdt]:-}" ]] || die "--variant-dtypes $vdt: that dtype is not measured in b (--skip-fp32?)"
            vshort=$([[ $vdt == bfloat16 ]] && echo bf16 || echo fp32)
            echo "== d. variants, $vshort" >&2
            for v in "${VARIANT_LIST[@]}"; do
                read -r -a vflags <<< "$v"
                (( ${#vflags[@]} )) || continue
                cmd_ref "shardfs mount $SRC8 MNT ${LAYOUT8[*]} --dtype $vdt $v"; c_v=$CREF
                for readers in 8 1; do
                    key="var-$vshort-${v// /}-$readers"
                    measure_mount "$key" "$vshort $v, $readers reader(s)" "$vdt" "$readers" "$VARIANT_REPEAT" "${vflags[@]}"
                    SUMMARY+=("| d | mount $vshort \`$v\`, $readers reader$(plural "$readers") | [$c_v] + [$( ((readers == 1)) && echo "$c_dd1" || echo "$c_dd8")] | $ROW_BYTES | $ROW_MED s | $ROW_RANGE | **${MED_GBPS[$key]}** ($(ratio "$key" "direct-$vshort-$readers") of direct, $(ratio "$key" "mount-$vshort-$readers") of default) | $ROW_RSS MiB | $ROW_DCPU s | $ROW_BUSY% | |")
                done
            done
        done
    fi

fi

# ================================================================ e. the transport alone
if (( ! SKIP_TRANSPORT )); then
    command -v cc > /dev/null && pkg-config --exists fuse3 \
        || die "e: compiling bench/zerofs.c needs cc and pkg-config with fuse3 (libfuse3-dev); or --skip-transport"
    ZEROFS="$LOGS/zerofs"  # compiled per run: the binary measured is the source committed
    cc -O2 -o "$ZEROFS" "$HERE/zerofs.c" $(pkg-config --cflags --libs fuse3) 2> "$LOGS/zerofs-cc.log" \
        || { cat "$LOGS/zerofs-cc.log" >&2; die "e: compiling bench/zerofs.c failed"; }
    # The mount's file names and sizes, from the plan (no mount needed).
    "$SHARDFS_BIN" plan "$SRC8" "${LAYOUT8[@]}" --dtype bfloat16 |
        awk '/^model\/[^ ]+  *[0-9]+ bytes/ { printf "%s\t%s\n", $1, $2 }' > "$LOGS/zerofs.manifest"
    ZFILES=$(wc -l < "$LOGS/zerofs.manifest")
    T_BYTES=$(awk -F'\t' '$1 ~ /^model\/dp_rank_00_tp_rank_[0-9]+_pp_rank_00\.pt$/ { s += $2 } END { printf "%.0f\n", s }' "$LOGS/zerofs.manifest")
    (( ZFILES > 0 && T_BYTES > 0 )) || die "e: could not read the file sizes from shardfs plan"

    # zerofs_start: zerofs on $ZMNT, ready once `ls` lists every file; sets ZPID.
    zerofs_start() {
        local i n
        zerofs_stop
        mkdir -p "$ZMNT"
        "$ZEROFS" "$LOGS/zerofs.manifest" "$ZMNT" --max-read-kib "$MAX_READ_KIB" 2>> "$LOGS/zerofs.log" &
        ZPID=$!
        for (( i = 0; i < 200; i++ )); do
            if zerofs_mounted; then
                n=$(ls "$ZMNT/model" 2>/dev/null | wc -l)
                (( n == ZFILES )) && return 0
            fi
            kill -0 "$ZPID" 2>/dev/null || { tail -n 3 "$LOGS/zerofs.log" >&2; die "e: zerofs exited before it was ready"; }
            sleep 0.05
        done
        die "e: zerofs on $ZMNT not ready after 10 s (log: $LOGS/zerofs.log)"
    }

    # transport_run KIND READERS ROUND: one timed read of the 32 pp rank 0
    # files through a fresh zerofs (KIND z) or shardfs mount (KIND m), sources
    # warmed first for both. Sets RUN_S, RUN_CPU (the server's CPU seconds),
    # RUN_RSS (its VmHWM, KiB), RUN_BUSY; RUN_VANISHED=1 when the shardfs
    # mount was unmounted from outside meanwhile (the run is then void).
    transport_run() {
        local kind="$1" readers="$2" round="$3" dir pid log st=0 files=() bytes got c0 b0 t0 t1
        RUN_VANISHED=0
        warm $(shards_for "$T_BYTES")
        if [[ $kind == z ]]; then
            zerofs_start; dir="$ZMNT"; pid="$ZPID"
        else
            do_mount "$SRC8" "${LAYOUT8[@]}" --dtype bfloat16 --max-read-kib "$MAX_READ_KIB"; dir="$MNT"; pid="$DPID"
        fi
        mapfile -t files < <(ls "$dir/model"/$PP0_GLOB | sort)
        (( ${#files[@]} == 32 )) || die "e: ${#files[@]} pp rank 0 files under $dir, expected 32"
        bytes=$(size_of "${files[@]}")
        (( bytes == T_BYTES )) || { NOTES+=("BUG: e: the pp rank 0 files under $dir hold $bytes bytes, the plan $T_BYTES"); FAIL=1; }
        log="$LOGS/transport-$kind-$readers.$round.dd"
        c0=$(proc_cpu_s "$pid"); b0=$(cpu_ticks); t0=$(now)
        read_files "$readers" "$log" "${files[@]}" || st=$?
        t1=$(now)
        RUN_S=$(elapsed "$t0" "$t1")
        RUN_BUSY=$(busy_pct "$b0" "$(cpu_ticks)")
        RUN_CPU=$(awk -v a="$c0" -v b="$(proc_cpu_s "$pid")" 'BEGIN { printf "%.2f", b - a }')
        RUN_RSS=$(vmhwm_kb "$pid")
        if [[ $kind == z ]]; then
            zerofs_stop
        elif ! is_mounted || [[ "$(daemon_pid)" != "$DPID" ]]; then
            RUN_VANISHED=1
            for f in "$log".*; do mv "$f" "$LOGS/vanished-${f##*/}"; done
            NOTES+=("e: the mount disappeared during round $round's reads at $(date +%T) (unmounted from outside); run repeated")
            unmount
            return 0
        else
            unmount
        fi
        got=$(dd_bytes "$log".*)
        if (( st != 0 || got != bytes )); then
            NOTES+=("BUG: e: $([[ $kind == z ]] && echo zerofs || echo mount), $readers reader(s), round $round: dd exit status $st, read $got bytes of $bytes (logs $log.*)")
            FAIL=1
        fi
    }

    echo "== e. the transport alone beside the mount: zerofs and shardfs, max-read $MAX_READ_KIB KiB, $REPEAT paired round$(plural "$REPEAT"), $T_BYTES bytes (32 files of pp rank 0, bf16)" >&2
    dd_commands
    cmd_ref "cc -O2 -o zerofs bench/zerofs.c \$(pkg-config --cflags --libs fuse3); zerofs MANIFEST MNT --max-read-kib $MAX_READ_KIB   # MANIFEST: \"path<TAB>size\" of the $ZFILES model/*.pt files \`shardfs plan\` lists"; c_z=$CREF
    cmd_ref "shardfs mount $SRC8 MNT ${LAYOUT8[*]} --dtype bfloat16 --max-read-kib $MAX_READ_KIB"; c_tm=$CREF
    declare -A TS TCPU TRSS TBUSY   # "kind,readers,round" -> value
    for (( r = 1; r <= REPEAT; r++ )); do
        if (( r % 2 )); then order=(z m); else order=(m z); fi
        for readers in 1 8; do
            for kind in "${order[@]}"; do
                tries=0
                while :; do
                    transport_run "$kind" "$readers" "$r"
                    (( RUN_VANISHED )) || break
                    (( ++tries <= 3 )) || die "e: the mount keeps disappearing; is something unmounting fuse.shardfs mounts?"
                done
                TS[$kind,$readers,$r]=$RUN_S TCPU[$kind,$readers,$r]=$RUN_CPU TRSS[$kind,$readers,$r]=$RUN_RSS TBUSY[$kind,$readers,$r]=$RUN_BUSY
                printf '   round %d/%d %-7s %d reader(s): %s s, %s GB/s, CPU %s s, VmHWM %s MiB, machine busy %s%%\n' "$r" "$REPEAT" \
                    "$([[ $kind == z ]] && echo zerofs || echo mount)" "$readers" "$RUN_S" "$(gbps "$T_BYTES" "$RUN_S")" "$RUN_CPU" "$(( RUN_RSS / 1024 ))" "$RUN_BUSY" >&2
            done
            printf '   round %d/%d mount/transport, %d reader(s): %s\n' "$r" "$REPEAT" "$readers" \
                "$(awk -v z="${TS[z,$readers,$r]}" -v m="${TS[m,$readers,$r]}" 'BEGIN { printf "%.2fx", z / m }')" >&2
        done
    done
    for readers in 1 8; do
        for kind in z m; do
            times=() cpus=() rsses=() busys=()
            for (( r = 1; r <= REPEAT; r++ )); do
                times+=("${TS[$kind,$readers,$r]}") cpus+=("${TCPU[$kind,$readers,$r]}") rsses+=("${TRSS[$kind,$readers,$r]}") busys+=("${TBUSY[$kind,$readers,$r]}")
            done
            med=$(median "${times[@]}")
            MED_GBPS[transport-$kind-$readers]=$(gbps "$T_BYTES" "$med")
            rss=$(( $(printf '%s\n' "${rsses[@]}" | sort -n | tail -n 1) / 1024 ))
            dd_ref=$( ((readers == 1)) && echo "$c_dd1" || echo "$c_dd8")
            if [[ $kind == z ]]; then
                SUMMARY+=("| e | transport alone: zerofs (zero replies, the mount's names and sizes, direct_io, max-read $MAX_READ_KIB KiB), $readers reader$(plural "$readers") | [$c_z] + [$dd_ref] | $T_BYTES | $med s | $(minmax "${times[@]}") s | **${MED_GBPS[transport-z-$readers]}** | $rss MiB (zerofs) | $(median "${cpus[@]}") s | $(median "${busys[@]}")% | |")
            else
                SUMMARY+=("| e | mount bf16 beside it (paired rounds, --max-read-kib $MAX_READ_KIB), $readers reader$(plural "$readers") | [$c_tm] + [$dd_ref] | $T_BYTES | $med s | $(minmax "${times[@]}") s | **${MED_GBPS[transport-m-$readers]}** | $rss MiB | $(median "${cpus[@]}") s | $(median "${busys[@]}")% | |")
            fi
        done
        ratios=() rounds=() cpu_ratios=()
        for (( r = 1; r <= REPEAT; r++ )); do
            z=${TS[z,$readers,$r]} m=${TS[m,$readers,$r]}
            ratios+=("$(awk -v z="$z" -v m="$m" 'BEGIN { printf "%.3f", z / m }')")
            cpu_ratios+=("$(awk -v z="${TCPU[z,$readers,$r]}" -v m="${TCPU[m,$readers,$r]}" 'BEGIN { if (z > 0) printf "%.3f", m / z; else print 0 }')")
            rounds+=("round $r: $(gbps "$T_BYTES" "$m") / $(gbps "$T_BYTES" "$z") GB/s = $(awk -v x="${ratios[-1]}" 'BEGIN { printf "%.2fx", x }') ($( ((r % 2)) && echo "zerofs first" || echo "mount first"))")
        done
        medr=$(awk -v x="$(median "${ratios[@]}")" 'BEGIN { printf "%.2fx", x }')
        SUMMARY+=("| e | mount / transport, $readers reader$(plural "$readers"): GB/s of the mount / of zerofs in each round | [$c_tm] / [$c_z] | - | - | $(IFS=';'; echo "${rounds[*]}" | sed 's/;/; /g') | **$medr** (median of the rounds' ratios) | - | $(awk -v x="$(median "${cpu_ratios[@]}")" 'BEGIN { printf "%.1fx", x }') zerofs's CPU (median of the rounds' ratios) | - | |")
        bench_summary mount "mount Llama-3-8B TP=32 bf16 warm, $readers reader$(plural "$readers"), vs the FUSE transport alone (zerofs), median of $REPEAT paired round$(plural "$REPEAT")" "$medr (${MED_GBPS[transport-m-$readers]} of ${MED_GBPS[transport-z-$readers]} GB/s)" "" ""
    done
fi

# ---------------------------------------------------------------- report
unmount
zerofs_stop
REPORT="$RESULTS/mount-$STAMP.md"
{
    echo "### ShardFS mount benchmark ($STAMP)"
    echo
    echo "binary: \`$SHARDFS_BIN\` ($(stat -c %y "$SHARDFS_BIN" | cut -d. -f1)); sources: sparse checkpoints (\`bench/make_sparse_checkpoint.py\`), warm in page cache  "
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), kernel $(uname -r), pipe-max-size $(cat /proc/sys/fs/pipe-max-size); CPU busy before the run (others' load): ${base_busy}%  "
    echo "runs: a: $MOUNT_REPEAT, b: $REPEAT, d: $VARIANT_REPEAT, e: $REPEAT paired rounds (the ratio row: each round's, and their median); seconds are medians; GB = 10^9 bytes; daemon RSS = max VmHWM over the runs; CPU = median per run (machine busy % of all $(nproc) CPUs)"
    echo
    echo "| | measurement | commands | bytes | median | runs | GB/s | daemon peak RSS | daemon CPU | machine busy | target |"
    echo "|---|---|---|---:|---:|---|---:|---:|---:|---:|---|"
    printf '%s\n' "${SUMMARY[@]}"
    echo
    echo "Commands (MNT is a fresh mount point; \`shardfs unmount MNT\` after each measurement, so the FUSE page cache starts cold):"
    echo
    for (( i = 0; i < ${#COMMANDS[@]}; i++ )); do echo "$(( i + 1 )). \`${COMMANDS[$i]}\`"; done
    if (( ${#NOTES[@]} )); then
        echo
        printf -- '- %s\n' "${NOTES[@]}"
    fi
    for k in "${!RA_SEEN[@]}"; do echo "- the mount's bdi read_ahead_kb was $k during: ${RA_SEEN[$k]}"; done
    if (( ${#HASH0[@]} )); then echo "- content check: sha256 of tp 0 / tp 31 pp 0 files equal across all mounts of the same dtype: $(for k in "${!HASH0[@]}"; do printf '%s %s/%s ' "$k" "${HASH0[$k]}" "${HASH31[$k]}"; done)"; fi
} | tee "$REPORT"
echo
echo "report: $REPORT; logs: $LOGS" >&2
exit $FAIL
