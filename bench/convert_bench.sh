#!/usr/bin/env bash
# Side-by-side conversion benchmark: cp -r vs shardfs convert vs the tutorial's
# Python pipeline (bench/python_pipeline.py), on one Llama checkpoint, in one run.
#
# Every run is timed with GNU time (/usr/bin/time -v) around `sh -c 'CMD && sync'`
# so that flushing the written data to disk is part of the measurement. Before
# each run the source is warmed in the page cache (cat > /dev/null), the output
# directory is removed and the disk synced; neither is timed.
#
# Usage: bench/convert_bench.sh [options]
#   --src DIR            HF checkpoint (default WORK/llama-3.2-1b; created with
#                        bench/make_checkpoint.py if missing)
#   --work DIR           scratch + results directory (default REPO/bench-out)
#   --tp N --pp N --kv-mult N   layout (default 8 2 1; qkv_linear + fuse_qkv always)
#   --jobs N             pass --jobs N to shardfs convert
#   --repeat N           run everything N times, report the median seconds (default 1)
#   --skip-python        skip both Python pipeline runs (slow)
#   --skip-python-fp32   skip only the float32 Python run
#   --check              verify each converter's output with bench/check_layout.py
#                        (untimed; loads every rank file, takes a while)
#   -h, --help
# Environment:
#   SHARDFS_BIN   shardfs binary (default REPO/.build/release/shardfs)
#   PYTHON        python with torch/transformers/safetensors (default REPO/.venv/bin/python,
#                 made by scripts/setup.sh; else python3)
#
# Output: a markdown table on stdout, also saved to WORK/results/bench-<time>.md;
# per-run logs in WORK/results/logs-<time>/.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
WORK="$REPO/bench-out"
SRC=""
TP=8 PP=2 KVM=1
JOBS=""
REPEAT=1
SKIP_PY=0 SKIP_PY32=0 CHECK=0
SHARDFS_BIN="${SHARDFS_BIN:-$REPO/.build/release/shardfs}"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python3; fi
fi

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() { echo "convert_bench: $*" >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --src) SRC="$2"; shift 2 ;;
        --work) WORK="$2"; shift 2 ;;
        --tp) TP="$2"; shift 2 ;;
        --pp) PP="$2"; shift 2 ;;
        --kv-mult) KVM="$2"; shift 2 ;;
        --jobs) JOBS="$2"; shift 2 ;;
        --repeat) REPEAT="$2"; shift 2 ;;
        --skip-python) SKIP_PY=1; shift ;;
        --skip-python-fp32) SKIP_PY32=1; shift ;;
        --check) CHECK=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[[ "$REPEAT" =~ ^[1-9][0-9]*$ ]] || die "--repeat takes a positive integer"

[[ -x /usr/bin/time ]] || die "/usr/bin/time (GNU time) is missing: apt-get install -y time"
[[ "$(/usr/bin/time -v true 2>&1)" == *"Maximum resident set size"* ]] \
    || die "/usr/bin/time is not GNU time (no -v): apt-get install -y time"
"$PYTHON" -c "import torch, safetensors" 2>/dev/null || die "$PYTHON lacks torch/safetensors (set PYTHON)"

mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
SRC="${SRC:-$WORK/llama-3.2-1b}"

# ---------------------------------------------------------------- source
if [[ ! -f "$SRC/config.json" || ! -f "$SRC/model.safetensors.index.json" && ! -f "$SRC/model.safetensors" ]]; then
    [[ -e "$SRC" ]] && die "$SRC exists but is not a complete checkpoint; remove it or pass --src"
    echo "== creating $SRC with bench/make_checkpoint.py (Llama-3.2-1B shapes, random bf16)"
    "$PYTHON" "$HERE/make_checkpoint.py" --out "$SRC"
fi
SRC="$(cd "$SRC" && pwd)"

# ---------------------------------------------------------------- shardfs
HAVE_SHARDFS=1
if [[ ! -x "$SHARDFS_BIN" ]]; then
    HAVE_SHARDFS=0
    cat >&2 <<EOF

!! shardfs binary not found at $SHARDFS_BIN
!! build it with 'swift build -c release' in $REPO, or set SHARDFS_BIN.
!! The shardfs rows are SKIPPED in this run.

EOF
fi

# ---------------------------------------------------------------- scratch
STAMP="$(date +%Y%m%d-%H%M%S)"
RESULTS="$WORK/results"
LOGS="$RESULTS/logs-$STAMP"
SCRATCH="$WORK/run-$STAMP"
mkdir -p "$LOGS" "$SCRATCH"
cleanup() {
    rm -rf -- "$SCRATCH"
}
trap cleanup EXIT
trap 'echo "interrupted" >&2; exit 130' INT TERM

need_kb=$(( $(du -sk "$SRC" | cut -f1) * 4 ))
free_kb=$(df -Pk "$WORK" | awk 'NR==2 {print $4}')
if (( free_kb < need_kb )); then
    echo "warning: $WORK has $((free_kb/1024/1024)) GiB free; the float32 runs need about $((need_kb/1024/1024)) GiB" >&2
fi

warm() { find "$SRC" -type f -exec cat {} + > /dev/null; }

# run NAME OUTDIR [--check PY_DTYPE] -- CMD...
# Times `CMD && sync`, records seconds, peak RSS (kB) and du -sb OUTDIR.
declare -A SECS RSS BYTES STATUS NOTE
ORDER=()
run() {
    local name="$1" out="$2"; shift 2
    local check_dtype=""
    if [[ "$1" == "--check" ]]; then check_dtype="$2"; shift 2; fi
    [[ "$1" == "--" ]] && shift
    ORDER+=("$name")
    local times=() rss_max=0 bytes=0 st=ok i
    for (( i = 1; i <= REPEAT; i++ )); do
        rm -rf -- "$out" "$SCRATCH/full"; mkdir -p "$SCRATCH/full"; sync
        warm
        local tf="$LOGS/$name.$i.time" lf="$LOGS/$name.$i.log"
        printf '== %-22s run %d/%d ... ' "$name" "$i" "$REPEAT" >&2
        if /usr/bin/time -v -o "$tf" sh -c '"$@" && sync' sh "$@" > "$lf" 2>&1; then
            local el kb
            el=$(sed -n 's/^[[:space:]]*Elapsed (wall clock) time.*: //p' "$tf")
            kb=$(sed -n 's/^[[:space:]]*Maximum resident set size (kbytes): //p' "$tf")
            local s
            s=$(awk -v t="$el" 'BEGIN { n = split(t, a, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + a[i]; printf "%.2f", s }')
            times+=("$s")
            (( kb > rss_max )) && rss_max=$kb
            bytes=$(du -sb "$out" | cut -f1)
            echo "${s} s, $(( bytes / 1000000 )) MB, peak RSS $(( kb / 1024 )) MiB" >&2
            if (( CHECK )) && [[ -n "$check_dtype" && $i -eq 1 ]]; then
                echo "   checking $out against the spec ..." >&2
                if "$PYTHON" "$HERE/check_layout.py" --src "$SRC" --out "$out" --tp_size "$TP" --pp_size "$PP" \
                        --kv_size_multiplier "$KVM" --qkv_linear --fuse_qkv --dtype "$check_dtype" \
                        > "$LOGS/$name.check" 2>&1; then
                    NOTE[$name]="${NOTE[$name]:-}check OK; "
                else
                    NOTE[$name]="${NOTE[$name]:-}CHECK FAILED (see $LOGS/$name.check); "
                    st=checkfail
                fi
                tail -n 3 "$LOGS/$name.check" | sed 's/^/   /' >&2
            fi
        else
            echo "FAILED (log: $lf)" >&2
            tail -n 15 "$lf" | sed 's/^/   | /' >&2
            st=failed
            rm -rf -- "$out" "$SCRATCH/full"
            break
        fi
        if [[ "$name" == python* ]]; then
            local steps
            steps=$(awk '/^step 1 /{ for (i = 1; i <= NF; i++) if ($i == "s,") a = $(i-1) }
                         /^step 2 /{ for (i = 1; i <= NF; i++) if ($i == "s,") b = $(i-1) }
                         END { if (a != "") printf "save full state %s s + convert %s s", a, b }' "$lf")
            [[ $i -eq 1 && -n "$steps" ]] && NOTE[$name]="${NOTE[$name]:-}$steps; "
            local full
            full=$(du -sb "$SCRATCH/full" | cut -f1)
            [[ $i -eq 1 ]] && NOTE[$name]="${NOTE[$name]:-}+ $(( full / 1000000 )) MB full_state.pt; "
        fi
        rm -rf -- "$out" "$SCRATCH/full"; sync
    done
    STATUS[$name]=$st
    RSS[$name]=$rss_max
    BYTES[$name]=$bytes
    if (( ${#times[@]} )); then
        SECS[$name]=$(printf '%s\n' "${times[@]}" | sort -g | awk '{a[NR] = $1} END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.2f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }')
    fi
}

LAYOUT=(--tp-size "$TP" --pp-size "$PP" --kv-size-multiplier "$KVM" --qkv-linear --fuse-qkv)
PYLAYOUT=(--tp_size "$TP" --pp_size "$PP" --kv_size_multiplier "$KVM" --qkv_linear --fuse_qkv --quiet --keep_full)
JOBARGS=()
[[ -n "$JOBS" ]] && JOBARGS=(--jobs "$JOBS")

SRC_BYTES=$(du -sb "$SRC" | cut -f1)
echo "== source $SRC ($(( SRC_BYTES / 1000000 )) MB), layout tp=$TP pp=$PP kv_mult=$KVM qkv_linear fuse_qkv, repeat=$REPEAT" >&2

run "cp -r" "$SCRATCH/cp" -- cp -r "$SRC" "$SCRATCH/cp"
if (( HAVE_SHARDFS )); then
    run "shardfs bf16" "$SCRATCH/shardfs-bf16" --check bfloat16 -- \
        "$SHARDFS_BIN" convert "$SRC" "$SCRATCH/shardfs-bf16" "${LAYOUT[@]}" --dtype bfloat16 "${JOBARGS[@]}"
    run "shardfs fp32" "$SCRATCH/shardfs-fp32" --check float32 -- \
        "$SHARDFS_BIN" convert "$SRC" "$SCRATCH/shardfs-fp32" "${LAYOUT[@]}" --dtype float32 "${JOBARGS[@]}"
fi
if (( ! SKIP_PY )); then
    run "python bf16" "$SCRATCH/python-bf16" --check bfloat16 -- \
        "$PYTHON" "$HERE/python_pipeline.py" --src "$SRC" --out "$SCRATCH/python-bf16" --work "$SCRATCH/full" \
        "${PYLAYOUT[@]}" --dtype bfloat16
    if (( ! SKIP_PY32 )); then
        run "python fp32" "$SCRATCH/python-fp32" --check float32 -- \
            "$PYTHON" "$HERE/python_pipeline.py" --src "$SRC" --out "$SCRATCH/python-fp32" --work "$SCRATCH/full" \
            "${PYLAYOUT[@]}" --dtype float32
    fi
fi

# ---------------------------------------------------------------- report
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { if (s > 0) printf "%.0f", b / s / 1e6; else print "-" }'; }
CP_MBPS=""
[[ "${STATUS[cp -r]}" == ok ]] && CP_MBPS=$(awk -v b="${BYTES[cp -r]}" -v s="${SECS[cp -r]}" 'BEGIN { if (s > 0) print b / s / 1e6 }')

REPORT="$RESULTS/bench-$STAMP.md"
{
    echo "### ShardFS conversion benchmark ($STAMP)"
    echo
    echo "source: \`$SRC\` ($(( SRC_BYTES / 1000000 )) MB, $("$PYTHON" -c 'import json,sys; c=json.load(open(sys.argv[1])); print("L=%s h=%s Hq=%s Hkv=%s I=%s V=%s tied=%s" % tuple(c.get(k) for k in ("num_hidden_layers","hidden_size","num_attention_heads","num_key_value_heads","intermediate_size","vocab_size","tie_word_embeddings")))' "$SRC/config.json"))  "
    echo "layout: tp=$TP pp=$PP kv_size_multiplier=$KVM qkv_linear fuse_qkv${JOBS:+, shardfs --jobs $JOBS}; seconds include \`sync\`; source warm in page cache; median of $REPEAT  "
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB RAM", $2/1048576}' /proc/meminfo), $(df -PT "$WORK" | awk 'NR==2 {print $2}') on $(df -P "$WORK" | awk 'NR==2 {print $1}'), kernel $(uname -r)"
    echo
    echo "| run | bytes written | seconds | MB/s | vs cp MB/s | peak RSS MB | notes |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for name in "${ORDER[@]}"; do
        if [[ "${STATUS[$name]}" == failed ]]; then
            echo "| $name | - | - | - | - | - | FAILED, see $LOGS |"
            continue
        fi
        s="${SECS[$name]}"; b="${BYTES[$name]}"
        rate=$(mbps "$b" "$s")
        ratio=$( [[ -n "$CP_MBPS" ]] && awk -v r="$rate" -v c="$CP_MBPS" 'BEGIN { printf "%.2f", r / c }' || echo "-")
        rss=$(awk -v k="${RSS[$name]}" 'BEGIN { printf "%.0f", k * 1024 / 1e6 }')
        note="${NOTE[$name]:-}"
        echo "| $name | $b | $s | $rate | $ratio | $rss | ${note%; } |"
    done
    (( HAVE_SHARDFS )) || echo "| shardfs | - | - | - | - | - | binary not found at $SHARDFS_BIN: not run |"
    echo
    for d in bf16 fp32; do
        sh="shardfs $d" py="python $d"
        if [[ "${STATUS[$sh]:-}" != "" && "${STATUS[$sh]}" != failed && "${STATUS[$py]:-}" != "" && "${STATUS[$py]}" != failed ]]; then
            awk -v a="${SECS[$py]}" -v b="${SECS[$sh]}" -v d="$d" \
                'BEGIN { printf "- speedup shardfs vs python pipeline, %s: %.1fx (%.1f s vs %.1f s)\n", d, a / b, b, a }'
        fi
    done
    echo "- MB = 10^6 bytes; bytes written = \`du -sb\` of the output directory (the Python pipeline also writes the full state dict, noted, not counted)"
} | tee "$REPORT"
echo
echo "report: $REPORT; logs: $LOGS" >&2

# Headline figures for bench/report.sh.
for d in bf16 fp32; do
    sh="shardfs $d"
    if [[ "${STATUS[$sh]:-}" == ok && -n "$CP_MBPS" ]]; then
        r=$(awk -v b="${BYTES[$sh]}" -v s="${SECS[$sh]}" -v c="$CP_MBPS" 'BEGIN { printf "%.2f", b / s / 1e6 / c }')
        bench_summary convert "convert 1B TP=$TP PP=$PP $d, bytes/s vs \`cp -r\`" "${r}x" ">= 0.7x" "$(ratio_status "$r" ">=" 0.7)"
        bench_summary convert "convert 1B $d, peak RSS" "$(( RSS[$sh] * 1024 / 1000000 )) MB" "< 256 MB" "$(ratio_status "${RSS[$sh]}" "<=" 250000)"
    fi
    py="python $d"
    if [[ "${STATUS[$sh]:-}" == ok && "${STATUS[$py]:-}" == ok ]]; then
        x=$(awk -v a="${SECS[$py]}" -v b="${SECS[$sh]}" 'BEGIN { printf "%.1f", a / b }')
        bench_summary convert "convert 1B $d vs the tutorial's Python pipeline" "${x}x faster" ">= 10x" "$(ratio_status "$x" ">=" 10)"
    fi
done

for name in "${ORDER[@]}"; do
    [[ "${STATUS[$name]}" == ok ]] || exit 1
done
