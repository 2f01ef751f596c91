#!/usr/bin/env bash
# Makes dist/shardfs-VERSION-py3-none-manylinux_2_34_x86_64.whl: the cluster
# package's binary (scripts/package.sh) as a Python wheel, so that
# `pip install shardfs-...whl` puts `shardfs` on a venv's PATH, its man pages
# and completions under the venv's share/, and the `shardfs` Python module
# (packaging/python/shardfs) beside torch.
#
#   scripts/wheel.sh              # builds the package first
#   scripts/wheel.sh --no-build   # reuses the package scripts/package.sh just made
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(tr -d ' \n' < VERSION)
stage=.build-dist/package/stage/shardfs-$version-linux-$(uname -m)
if [[ "${1:-}" != --no-build || ! -x "$stage/bin/shardfs" ]]; then
    scripts/package.sh
fi
floor=$(sed -n 's/^GLIBC_FLOOR=\([0-9.]*\).*/\1/p' scripts/package.sh)
python3 packaging/python/build_wheel.py --stage "$stage" --glibc "$floor" --out dist
