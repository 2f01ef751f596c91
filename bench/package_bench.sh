#!/usr/bin/env bash
# The cluster package against the `swift build -c release` binary it is made
# from: its size, the glibc it needs, and that it runs the same code at the
# same speed (BENCHMARKS.md, "The cluster package").
#
#   a. scripts/package.sh from an empty scratch path: seconds and peak RSS
#      (skipped with --skip-build when dist/ already holds the tarball)
#   b. the tarball's and the binary's size; the highest GLIBC_ symbol version
#      the binary needs (objdump -T), against the floor INSTALL.md states
#   c. `plan examples/tiny-llama --tp-size 2 --pp-size 2`: median of --repeat
#      runs (default 30), the two binaries alternating; peak RSS
#   d. `convert` of the 1B model (bench-out/llama-3.2-1b, made on first use)
#      at TP=8 PP=2 qkv_linear fuse_qkv to /dev/shm, 3 alternating runs each
#
# Usage: bench/package_bench.sh [--skip-build] [--repeat N] [--quick]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/summary.sh"
REPO="$(cd "$HERE/.." && pwd)"
cd "$REPO"
SKIP_BUILD=0 REPEAT=30 CONVERTS=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --skip-build) SKIP_BUILD=1 ;;
        --repeat) REPEAT=$2; shift ;;
        --quick) REPEAT=10 CONVERTS=2; [[ -f "dist/shardfs-$(tr -d ' \n' < VERSION)-linux-$(uname -m).tar.gz" ]] && SKIP_BUILD=1 ;;
        -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
    shift
done
VERSION=$(tr -d ' \n' < VERSION)
TARBALL="dist/shardfs-$VERSION-linux-$(uname -m).tar.gz"
PYTHON="${PYTHON:-$REPO/.venv/bin/python}"
WORK="$REPO/bench-out"
mkdir -p "$WORK"

build_line="(not rebuilt: --skip-build)"
if (( ! SKIP_BUILD )); then
    rm -rf .build-package
    /usr/bin/time -f "%e %M" -o "$WORK/.package-time" scripts/package.sh > "$WORK/package.log" 2>&1
    read -r secs rss < "$WORK/.package-time"
    build_line="$secs s, $(( rss / 1024 )) MB peak RSS"
fi
[[ -f "$TARBALL" ]] || { echo "no $TARBALL: run without --skip-build" >&2; exit 1; }
swift build -c release 2>&1 | tail -n 1 >&2
DEV="$REPO/.build/release/shardfs"
UNPACK=$(mktemp -d)
trap 'rm -rf "$UNPACK" /dev/shm/shardfs-package-bench' EXIT
tar -xzf "$TARBALL" -C "$UNPACK"
PKG=$(ls -d "$UNPACK"/*/bin/shardfs)

tar_mb=$(awk -v b="$(stat -c %s "$TARBALL")" 'BEGIN { printf "%.1f", b / 1e6 }')
bin_mb=$(awk -v b="$(stat -c %s "$PKG")" 'BEGIN { printf "%.1f", b / 1e6 }')
glibc=$(objdump -T "$PKG" | grep -o 'GLIBC_[0-9.]*' | sort -t. -k2,2n -k3,3n -u | tail -n 1)
floor=$(grep -o "glibc [0-9.]* or newer" packaging/INSTALL.md | head -n 1 | grep -o "[0-9][0-9.]*[0-9]")

# c: plan, alternating.
plan_times() {
    local bin=$1 out=$2
    /usr/bin/time -f "%e %M" -o "$out" "$bin" plan examples/tiny-llama --tp-size 2 --pp-size 2 > /dev/null
}
P=() D=() PR=() DR=()
for (( i = 0; i < REPEAT; i++ )); do
    plan_times "$PKG" "$WORK/.t1"; plan_times "$DEV" "$WORK/.t2"
    read -r s r < "$WORK/.t1"; P+=("$s"); PR+=("$r")
    read -r s r < "$WORK/.t2"; D+=("$s"); DR+=("$r")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }
maxof() { printf '%s\n' "$@" | sort -n | tail -n 1; }

# d: convert 1B to tmpfs, alternating.
SRC="$WORK/llama-3.2-1b"
[[ -f "$SRC/config.json" ]] || "$PYTHON" "$HERE/make_checkpoint.py" --out "$SRC" >&2
LAYOUT=(--tp-size 8 --pp-size 2 --qkv-linear --fuse-qkv)
cat "$SRC"/*.safetensors > /dev/null  # warm: neither binary pays for the first read
CP=() CD=()
for (( i = 0; i < CONVERTS; i++ )); do
    for which in pkg dev; do
        bin=$([[ $which == pkg ]] && echo "$PKG" || echo "$DEV")
        rm -rf /dev/shm/shardfs-package-bench; sync
        /usr/bin/time -f "%e" -o "$WORK/.t3" "$bin" convert "$SRC" /dev/shm/shardfs-package-bench "${LAYOUT[@]}" > /dev/null 2>&1
        [[ $which == pkg ]] && CP+=("$(cat "$WORK/.t3")") || CD+=("$(cat "$WORK/.t3")")
    done
done

echo "### The cluster package ($(date '+%Y-%m-%d %H:%M'), $(git rev-parse --short HEAD))"
echo
echo "| what | package | \`swift build\` |"
echo "|---|---|---|"
echo "| \`$TARBALL\` | $tar_mb MB | |"
echo "| the binary | $bin_mb MB | |"
echo "| highest GLIBC symbol version it needs (INSTALL.md: $floor) | $glibc | |"
echo "| \`scripts/package.sh\` from an empty scratch path | $build_line | |"
echo "| \`plan examples/tiny-llama --tp-size 2 --pp-size 2\`, median of $REPEAT alternating | $(median "${P[@]}") s, $(( $(maxof "${PR[@]}") / 1024 )) MB | $(median "${D[@]}") s, $(( $(maxof "${DR[@]}") / 1024 )) MB |"
echo "| \`convert\` of the 1B model, ${LAYOUT[*]}, to /dev/shm ($CONVERTS alternating) | $(median "${CP[@]}") s | $(median "${CD[@]}") s |"

bench_summary package "the cluster package: tarball, highest glibc symbol" "$tar_mb MB, $glibc" "glibc <= $floor" \
    "$([[ "$(printf '%s\n%s\n' "${glibc#GLIBC_}" "$floor" | sort -V | tail -n 1)" == "$floor" ]] && echo met || echo "not met")"
r=$(awk -v a="$(median "${CD[@]}")" -v b="$(median "${CP[@]}")" 'BEGIN { printf "%.2f", a / b }')
bench_summary package "the packaged binary's convert speed vs the \`swift build\` binary's" "${r}x" ">= 0.9x" "$(ratio_status "$r" ">=" 0.9)"
