#!/usr/bin/env bash
# The demo: set up, build, convert the bundled tiny Llama checkpoint
# (examples/tiny-llama) into NxD rank files, load one with torch, then mount
# the same layout with FUSE and load the same file through the mount, while
# the daemon persists the files to a directory (--persist-to).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
swift build -c release 2>&1 | tail -n 3
shardfs=.build/release/shardfs
out=${1:-/tmp/shardfs-demo}
rm -rf "$out"

layout=(--tp-size 2 --pp-size 2 --kv-size-multiplier 1 --qkv-linear --fuse-qkv --dtype float32)
echo
echo "\$ shardfs plan examples/tiny-llama ${layout[*]}   (first lines)"
"$shardfs" plan examples/tiny-llama "${layout[@]}" | head -n 12
echo
echo "\$ shardfs convert examples/tiny-llama $out ${layout[*]}"
"$shardfs" convert examples/tiny-llama "$out" "${layout[@]}"
echo
echo "\$ ls $out/model"
ls -l "$out/model"
echo
echo "Loading $out/model/dp_rank_00_tp_rank_01_pp_rank_01.pt with torch.load(weights_only=True):"
.venv/bin/python - "$out/model/dp_rank_00_tp_rank_01_pp_rank_01.pt" <<'PY'
import sys, torch
state = torch.load(sys.argv[1], weights_only=True)
for key, tensor in state.items():
    print(f"  {key:55s} {str(tensor.dtype):15s} {list(tensor.shape)}")
PY

mnt="$out-mount"
mkdir -p "$mnt"
cleanup() { "$shardfs" unmount "$mnt" 2>/dev/null || true; }
trap cleanup EXIT
echo
persisted="$out-persisted"
rm -rf "$persisted"
echo "\$ shardfs mount examples/tiny-llama $mnt ${layout[*]} --persist-to $persisted"
"$shardfs" mount examples/tiny-llama "$mnt" "${layout[@]}" --persist-to "$persisted"
echo "\$ ls $mnt/model"
ls -l "$mnt/model"
echo
echo "Loading $mnt/model/dp_rank_00_tp_rank_01_pp_rank_01.pt through the mount (mmap=True) and comparing with the converted file:"
.venv/bin/python - "$mnt/model/dp_rank_00_tp_rank_01_pp_rank_01.pt" "$out/model/dp_rank_00_tp_rank_01_pp_rank_01.pt" <<'PY'
import sys, torch
mounted = torch.load(sys.argv[1], weights_only=True, mmap=True)
converted = torch.load(sys.argv[2], weights_only=True)
assert list(mounted) == list(converted)
assert all(torch.equal(mounted[k], converted[k]) for k in mounted)
print(f"  {len(mounted)} tensors, identical to the converted file")
PY
echo
echo "Meanwhile the daemon wrote the same files to $persisted (as convert would):"
for i in $(seq 50); do
    "$shardfs" status "$mnt" --json | grep -q '"state" : "done"' && break
    sleep 0.2
done
echo "\$ shardfs status $mnt"
"$shardfs" status "$mnt"
for f in "$out"/model/*.pt; do
    cmp "$f" "$persisted/model/$(basename "$f")" || { echo "demo: $persisted differs from $out" >&2; exit 1; }
done
echo "  every persisted file is byte-identical to convert's"
echo "\$ shardfs unmount $mnt"
"$shardfs" unmount "$mnt"
