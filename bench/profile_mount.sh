#!/usr/bin/env bash
# Where the shardfs daemon spends a read: a CPU profile of the daemon during
# warm reads of its mount, grouped (the kernel's /dev/fuse work, our copy of
# the sources, locks, other system calls, the Swift runtime, our own code),
# and the system calls it makes per read request.
#
# The reads are mount_bench.sh's section b: Llama-3-8B shapes, TP=32 PP=4
# (--kv-size-multiplier 4 --qkv-linear --fuse-qkv), the 32 files of pp rank 0
# read with `dd bs=1M` by 8 readers (8 parallel dd loops, 4 files each) and by
# 1 reader (the 32 files in a row), sources warm in the page cache, after one
# untimed pass through the mount. On one mount:
#  1. perf: `perf record --call-graph dwarf -p DAEMON` during --passes reads
#     of the 32 files, per reader count; `perf script` of it goes through
#     bench/profile_report.py, which puts every sample in a group by its whole
#     call chain (a kernel copy under pread64 is ours; under the writev to
#     /dev/fuse it is the transport's), and lists the top symbols by self time
#     and our functions by inclusive time, with CPU µs per read request.
#  2. strace: `strace -f -p DAEMON` during a short read (1 reader: 4 files;
#     8 readers: 8 files, one each): every system call per read request, for
#     the FUSE worker threads and for the others (prefetcher, watcher).
#  3. locks: a uprobe on libc's pthread_mutex_lock (`perf probe`, removed on
#     exit), recorded with call chains during the same short reads: every
#     lock taken per read request, by the ShardFS function that took it.
#  4. the same perf profile of bench/zerofs.c (the transport alone: zero
#     replies, set up as the daemon is, the mount's names and sizes), for
#     comparison: what the kernel and libfuse cost per request by themselves.
# Requests counted: the daemon's readsServed (MNT/.shardfs-status), zerofs's
# own count. The machine's other load changes times, not the shape: compare
# shares and µs per request, not GB/s (perf itself slows the reads).
#
# Usage: bench/profile_mount.sh [options]
#   --work DIR          scratch + results directory (default REPO/bench-out)
#   --src8 DIR          sparse Llama-3-8B checkpoint (default WORK/sparse-llama-3-8b,
#                       made on first use by bench/make_sparse_checkpoint.py)
#   --dtype DTYPE       output dtype (default bfloat16)
#   --max-read-kib N    the mount's (and zerofs's) request size (default: the
#                       daemon's default, from `shardfs mount --help`)
#   --readers LIST      reader counts, in order (default "8 1")
#   --passes N          reads of the 32 files per perf recording (default 2)
#   --freq HZ           perf sampling frequency (default 999)
#   --call-graph MODE   perf's --call-graph (default dwarf,16384; `fp` loses the
#                       caller of every libc function, libfuse is stripped)
#   --skip-strace --skip-locks --skip-zerofs
#   --keep              keep the perf.data files (hundreds of MB; deleted by default)
#   -h, --help
# Environment:
#   SHARDFS_BIN     shardfs binary (default REPO/.build/release/shardfs)
#   SWIFT_DEMANGLE  swift-demangle (default: from PATH; names stay mangled without it)
# Needs root (perf and strace attach to the daemon), perf, strace, python3, cc
# and libfuse3-dev (zerofs).
#
# Output: markdown on stdout, also saved to WORK/results/profile-<time>.md;
# perf scripts, strace logs and daemon logs in WORK/results/profile-logs-<time>/.
# Every mount made here is unmounted on exit, also on error or Ctrl-C, and
# every perf and strace started here is stopped.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
SRC8="" DTYPE=bfloat16 MAX_READ_KIB="" READERS="8 1" PASSES=2 FREQ=999 CALLGRAPH="dwarf,16384"
SKIP_STRACE=0 SKIP_LOCKS=0 SKIP_ZEROFS=0 KEEP=0 PROBE_ADDED=0
LOCK_EVENT=probe_libc:pthread_mutex_lock

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "profile_mount: $*" >&2; exit 2; }
posint() { [[ "$2" =~ ^[1-9][0-9]*$ ]] || die "$1 takes a positive integer"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --work) WORK="$2"; shift 2 ;;
        --src8) SRC8="$2"; shift 2 ;;
        --dtype) DTYPE="$2"; shift 2 ;;
        --max-read-kib) posint "$1" "$2"; MAX_READ_KIB="$2"; shift 2 ;;
        --readers) READERS="$2"; shift 2 ;;
        --passes) posint "$1" "$2"; PASSES="$2"; shift 2 ;;
        --freq) posint "$1" "$2"; FREQ="$2"; shift 2 ;;
        --call-graph) CALLGRAPH="$2"; shift 2 ;;
        --skip-strace) SKIP_STRACE=1; shift ;;
        --skip-locks) SKIP_LOCKS=1; shift ;;
        --skip-zerofs) SKIP_ZEROFS=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
for r in $READERS; do posint "--readers" "$r"; (( 32 % r == 0 )) || die "--readers: $r does not divide the 32 files"; done

[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
(( EUID == 0 )) || die "needs root: perf and strace attach to the daemon"
for tool in perf python3 fusermount3; do command -v "$tool" > /dev/null || die "$tool is missing"; done
(( SKIP_STRACE )) || command -v strace > /dev/null || die "strace is missing (or --skip-strace)"
(( SKIP_ZEROFS )) || { command -v cc > /dev/null && pkg-config --exists fuse3; } || die "zerofs needs cc and libfuse3-dev (or --skip-zerofs)"

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC8="${SRC8:-$WORK/sparse-llama-3-8b}"
SHARDFS_BIN="${SHARDFS_BIN:-$REPO/.build/release/shardfs}"
[[ -x "$SHARDFS_BIN" ]] || die "no shardfs binary at $SHARDFS_BIN: run 'swift build -c release' in $REPO, or set SHARDFS_BIN"
if [[ ! -f "$SRC8/model.safetensors.index.json" ]]; then
    [[ -e "$SRC8" ]] && die "$SRC8 exists but is not a complete checkpoint; remove it or pass --src8"
    echo "== creating $SRC8 (sparse, Llama-3-8B shapes)" >&2
    python3 "$HERE/make_sparse_checkpoint.py" --model 8b --out "$SRC8" >&2
fi
SRC8="$(cd "$SRC8" && pwd)"
if [[ -z "$MAX_READ_KIB" ]]; then
    # "(default: N)" in the option's help (awk reads to the end: no SIGPIPE under pipefail)
    MAX_READ_KIB=$("$SHARDFS_BIN" mount --help 2>/dev/null | awk '/--max-read-kib/ { f = 1 }
        f && !done && match($0, /\(default: [0-9]+\)/) { print substr($0, RSTART + 10, RLENGTH - 11); done = 1 }')
    [[ "$MAX_READ_KIB" =~ ^[1-9][0-9]*$ ]] || die "could not read --max-read-kib's default from '$SHARDFS_BIN mount --help': pass --max-read-kib"
fi

# ---------------------------------------------------------------- scratch, cleanup
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$WORK/results"
LOGS="$RESULTS/profile-logs-$STAMP"
MNT="$WORK/mnt-profile-$STAMP-$$"
ZMNT="$WORK/mnt-profile-zerofs-$STAMP-$$"
mkdir -p "$LOGS" "$MNT"
READER_PIDS=() TOOL_PID="" STAT_PID="" ZPID="" DPID=""

is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }
daemon_pid() { pgrep -f "shardfs.*mount.*$MNT .*--foreground" | head -n 1 || true; }
unmount() {
    local pid i
    pid="$(daemon_pid)"
    if is_mounted "$MNT"; then
        "$SHARDFS_BIN" unmount "$MNT" 2>>"$LOGS/unmount.log" \
            || fusermount3 -u -z "$MNT" 2>>"$LOGS/unmount.log" || true
    fi
    if [[ -n "$pid" ]]; then
        for (( i = 0; i < 100; i++ )); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    fi
}
zerofs_stop() {
    local i
    if [[ -n "$ZPID" ]]; then
        kill -TERM "$ZPID" 2>/dev/null || true
        for (( i = 0; i < 100; i++ )); do kill -0 "$ZPID" 2>/dev/null || break; sleep 0.1; done
        wait "$ZPID" 2>/dev/null || true
        ZPID=""
    fi
    if is_mounted "$ZMNT"; then fusermount3 -u "$ZMNT" 2>>"$LOGS/unmount.log" || fusermount3 -u -z "$ZMNT" 2>>"$LOGS/unmount.log" || true; fi
}
# tool_stop: ends the perf or strace started here (SIGINT: both then write out).
tool_stop() {
    local pid
    for pid in "$TOOL_PID" "$STAT_PID"; do
        [[ -n "$pid" ]] || continue
        kill -INT "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    TOOL_PID="" STAT_PID=""
}
cleanup() {
    local pid
    trap '' INT TERM  # a second signal must not cut the unmount short
    for pid in "${READER_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    tool_stop
    unmount
    zerofs_stop
    for m in "$MNT" "$ZMNT"; do
        if is_mounted "$m"; then echo "!! $m is STILL MOUNTED; run: fusermount3 -u -z $m" >&2; else rmdir "$m" 2>/dev/null || true; fi
    done
    (( KEEP )) || rm -f "$LOGS"/*.data "$LOGS"/*.data.old
    if (( PROBE_ADDED )); then perf probe -d "$LOCK_EVENT" >> "$LOGS/probe.log" 2>&1 || echo "!! could not remove the uprobe: run perf probe -d $LOCK_EVENT" >&2; fi
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

# ---------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
size_of() { stat -c %s "$@" | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
reads_served() { awk -F: '/"readsServed"/ { gsub(/[ ,]/, "", $2); print $2 }' "$MNT/.shardfs-status"; }
LAYOUT8=(--tp-size 32 --pp-size 4 --kv-size-multiplier 4 --qkv-linear --fuse-qkv)
PP0_GLOB='dp_rank_00_tp_rank_*_pp_rank_00.pt'

# read_files READERS FILE...: dd each file (1 reader: in a row; R readers: R
# parallel dd loops over R contiguous groups).
read_files() {
    local readers="$1"; shift
    local files=("$@") n=$# k per st=0 pid
    per=$(( (n + readers - 1) / readers ))
    READER_PIDS=()
    for (( k = 0; k < readers; k++ )); do
        ( s=0; for f in "${files[@]:k*per:per}"; do dd if="$f" of=/dev/null bs=1M 2>/dev/null || s=1; done; exit $s ) &
        READER_PIDS+=("$!")
    done
    for pid in "${READER_PIDS[@]}"; do wait "$pid" || st=1; done
    READER_PIDS=()
    return $st
}

# perf_start PID DATA [PERF-RECORD-OPTIONS...]: recording PID's threads
# (default: sampling at --freq with --call-graph); waits until perf is attached.
perf_start() {
    local i pid="$1" data="$2"; shift 2
    (( $# )) || set -- -F "$FREQ" --call-graph "$CALLGRAPH"
    perf record "$@" -p "$pid" -o "$data" > "$data.log" 2>&1 &
    TOOL_PID=$!
    for (( i = 0; i < 50; i++ )); do [[ -s "$data" ]] && break; sleep 0.1; done
    sleep 0.3
    kill -0 "$TOOL_PID" 2>/dev/null || { cat "$data.log" >&2; die "perf record failed"; }
}

# ---------------------------------------------------------------- the mount
echo "== shardfs $SHARDFS_BIN; $SRC8 ${LAYOUT8[*]} --dtype $DTYPE --max-read-kib $MAX_READ_KIB; mount point $MNT" >&2
cat "$SRC8"/model-00001-of-*.safetensors > /dev/null  # pp rank 0's source shard, warm (holes: no disk I/O)
"$SHARDFS_BIN" mount "$SRC8" "$MNT" "${LAYOUT8[@]}" --dtype "$DTYPE" --max-read-kib "$MAX_READ_KIB" --log-file "$LOGS/daemon.log" \
    >> "$LOGS/mount.log" 2>&1 || { tail -n 5 "$LOGS/mount.log" >&2; die "shardfs mount failed"; }
DPID="$(daemon_pid)"
[[ -n "$DPID" ]] || die "mounted, but no daemon matches pgrep -f \"shardfs.*mount.*$MNT\""
mapfile -t FILES < <(ls "$MNT/model"/$PP0_GLOB | sort)
(( ${#FILES[@]} == 32 )) || die "${#FILES[@]} pp rank 0 files under $MNT/model, expected 32"
BYTES=$(size_of "${FILES[@]}")
echo "== warm-up: one untimed pass through the mount, 8 readers" >&2
read_files 8 "${FILES[@]}" || die "the warm-up reads failed"

OUT=()   # the report's sections
declare -A DAEMON_US ZEROFS_US
for readers in $READERS; do
    data="$LOGS/perf-daemon-$readers.data"
    echo "== perf: the daemon, $readers reader(s), $PASSES pass(es) of the 32 files" >&2
    r0=$(reads_served)
    perf_start "$DPID" "$data"
    t0=$(now)
    for (( p = 0; p < PASSES; p++ )); do read_files "$readers" "${FILES[@]}" || die "reads failed under perf"; done
    t1=$(now)
    tool_stop
    r1=$(reads_served)
    perf script -i "$data" -F comm,tid,period,ip,sym,dso > "$LOGS/perf-daemon-$readers.txt" 2> "$LOGS/perf-daemon-$readers.script.log"
    section=$(python3 "$HERE/profile_report.py" perf "$LOGS/perf-daemon-$readers.txt" --requests $(( r1 - r0 )) \
        --bytes $(( BYTES * PASSES )) --seconds "$(elapsed "$t0" "$t1")" --binary "$(basename "$SHARDFS_BIN")" \
        --label "the daemon, $readers reader$( (( readers > 1 )) && echo s), $DTYPE, max-read $MAX_READ_KIB KiB")
    OUT+=("$section")
    DAEMON_US[$readers]=$(grep -o '[0-9]* µs of CPU per request' <<< "$section" | head -n 1 | cut -d' ' -f1)
done

if (( ! SKIP_STRACE )); then
    for readers in $READERS; do
        count=$(( readers == 1 ? 4 : readers ))
        echo "== strace: the daemon, $readers reader(s), $count file(s)" >&2
        r0=$(reads_served)
        strace -f -o "$LOGS/strace-$readers.txt" -p "$DPID" 2> "$LOGS/strace-$readers.log" &
        TOOL_PID=$!
        for (( i = 0; i < 50; i++ )); do grep -q attached "$LOGS/strace-$readers.log" 2>/dev/null && break; sleep 0.1; done
        sleep 0.5
        read_files "$readers" "${FILES[@]:0:count}" || die "reads failed under strace"
        sleep 0.2
        tool_stop
        r1=$(reads_served)
        OUT+=("$(python3 "$HERE/profile_report.py" strace "$LOGS/strace-$readers.txt" --requests $(( r1 - r0 )) \
            --label "the daemon, $readers reader$( (( readers > 1 )) && echo s), $count file$( (( count > 1 )) && echo s)")")
    done
fi
if (( ! SKIP_LOCKS )); then
    libc=$(ldd "$SHARDFS_BIN" | awk '$1 ~ /^libc\.so/ { print $3 }')
    [[ -n "$libc" ]] || die "locks: libc not found in ldd $SHARDFS_BIN"
    if ! perf probe -l 2>/dev/null | grep -q "$LOCK_EVENT "; then
        perf probe -x "$libc" --add pthread_mutex_lock > "$LOGS/probe.log" 2>&1 \
            || { cat "$LOGS/probe.log" >&2; die "perf probe -x $libc --add pthread_mutex_lock failed (or --skip-locks)"; }
        PROBE_ADDED=1
    fi
    for readers in $READERS; do
        count=$(( readers == 1 ? 4 : readers ))
        echo "== locks: the daemon, $readers reader(s), $count file(s)" >&2
        data="$LOGS/locks-$readers.data"
        # The record (with call chains) may drop events when the machine is
        # busy; perf stat counts them all, and the callers' shares are scaled to it.
        perf stat -e "$LOCK_EVENT" -x, -o "$LOGS/locks-$readers.count" -p "$DPID" &
        STAT_PID=$!
        r0=$(reads_served)
        perf_start "$DPID" "$data" -e "$LOCK_EVENT" --call-graph dwarf,8192 -m 1024
        read_files "$readers" "${FILES[@]:0:count}" || die "reads failed under the lock probe"
        tool_stop
        r1=$(reads_served)
        total=$(awk -F, -v e="$LOCK_EVENT" '$3 == e { print $1 }' "$LOGS/locks-$readers.count")
        perf script -i "$data" -F tid,ip,sym,dso > "$LOGS/locks-$readers.txt" 2> "$LOGS/locks-$readers.script.log"
        OUT+=("$(python3 "$HERE/profile_report.py" locks "$LOGS/locks-$readers.txt" --requests $(( r1 - r0 )) --total "${total:-0}" \
            --binary "$(basename "$SHARDFS_BIN")" --top 25 \
            --label "the daemon, $readers reader$( (( readers > 1 )) && echo s), $count file$( (( count > 1 )) && echo s)")")
        rm -f "$data"
    done
fi
unmount

# ---------------------------------------------------------------- zerofs
if (( ! SKIP_ZEROFS )); then
    ZEROFS="$LOGS/zerofs"
    cc -O2 -o "$ZEROFS" "$HERE/zerofs.c" $(pkg-config --cflags --libs fuse3) 2> "$LOGS/zerofs-cc.log" \
        || { cat "$LOGS/zerofs-cc.log" >&2; die "compiling bench/zerofs.c failed"; }
    "$SHARDFS_BIN" plan "$SRC8" "${LAYOUT8[@]}" --dtype "$DTYPE" |
        awk '/^model\/[^ ]+  *[0-9]+ bytes/ { printf "%s\t%s\n", $1, $2 }' > "$LOGS/zerofs.manifest"
    mkdir -p "$ZMNT"
    for readers in $READERS; do
        echo "== perf: zerofs (the transport alone), $readers reader(s), $PASSES pass(es)" >&2
        "$ZEROFS" "$LOGS/zerofs.manifest" "$ZMNT" --max-read-kib "$MAX_READ_KIB" 2> "$LOGS/zerofs-$readers.log" &
        ZPID=$!
        for (( i = 0; i < 100; i++ )); do is_mounted "$ZMNT" && break; sleep 0.05; done
        mapfile -t ZFILES < <(ls "$ZMNT/model"/$PP0_GLOB | sort)
        (( ${#ZFILES[@]} == 32 )) || die "zerofs: ${#ZFILES[@]} pp rank 0 files, expected 32"
        data="$LOGS/perf-zerofs-$readers.data"
        perf_start "$ZPID" "$data"
        t0=$(now)
        for (( p = 0; p < PASSES; p++ )); do read_files "$readers" "${ZFILES[@]}" || die "zerofs reads failed under perf"; done
        t1=$(now)
        tool_stop
        zerofs_stop
        requests=$(grep -o 'unmounted .*: [0-9]* reads' "$LOGS/zerofs-$readers.log" | grep -o '[0-9]* reads' | cut -d' ' -f1)
        perf script -i "$data" -F comm,tid,period,ip,sym,dso > "$LOGS/perf-zerofs-$readers.txt" 2> "$LOGS/perf-zerofs-$readers.script.log"
        section=$(python3 "$HERE/profile_report.py" perf "$LOGS/perf-zerofs-$readers.txt" --requests "${requests:-0}" \
            --bytes $(( BYTES * PASSES )) --seconds "$(elapsed "$t0" "$t1")" --binary zerofs --top 12 --brief \
            --label "zerofs, the transport alone, $readers reader$( (( readers > 1 )) && echo s), max-read $MAX_READ_KIB KiB")
        OUT+=("$section")
        ZEROFS_US[$readers]=$(grep -o '[0-9]* µs of CPU per request' <<< "$section" | head -n 1 | cut -d' ' -f1)
    done
fi

# ---------------------------------------------------------------- report
REPORT="$RESULTS/profile-$STAMP.md"
{
    echo "### Where the shardfs daemon spends a read ($STAMP)"
    echo
    echo "binary: \`$SHARDFS_BIN\` ($(stat -c %y "$SHARDFS_BIN" | cut -d. -f1)); source \`$SRC8\` (sparse, warm); \`shardfs mount SRC MNT ${LAYOUT8[*]} --dtype $DTYPE --max-read-kib $MAX_READ_KIB\`  "
    echo "reads: the 32 pp rank 0 files ($BYTES bytes) with \`dd bs=1M\`, $PASSES pass(es) per recording, after one untimed pass; \`perf record -F $FREQ --call-graph $CALLGRAPH -p PID\`  "
    echo "machine: $(nproc) CPUs, kernel $(uname -r), $(perf --version); load average $(cut -d' ' -f1-3 /proc/loadavg) at the end (others' work included)"
    echo
    echo "| readers | daemon CPU per read request | zerofs CPU per read request (the transport alone) | ratio |"
    echo "|---:|---:|---:|---:|"
    for readers in $READERS; do
        d=${DAEMON_US[$readers]:-} z=${ZEROFS_US[$readers]:-}
        echo "| $readers | ${d:--} µs | ${z:--} µs | $(awk -v d="$d" -v z="$z" 'BEGIN { if (d > 0 && z > 0) printf "%.1fx", d / z; else print "-" }') |"
    done
    for s in "${OUT[@]}"; do echo; echo "$s"; done
} | tee "$REPORT"
echo
echo "report: $REPORT; logs: $LOGS" >&2
