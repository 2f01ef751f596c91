#!/usr/bin/env bash
# Makes dist/shardfs-VERSION-linux-ARCH.tar.gz: a `shardfs` for training nodes
# that have neither a Swift toolchain nor a recent libfuse3.
#
#   scripts/package.sh            # prints the tarball's path, size and sha256
#
# The binary has the Swift standard library, Foundation, libstdc++, libgcc and
# libfuse3 (Debian's libfuse3.a) linked in; at run time it needs only glibc
# (GLIBC_FLOOR below, which INSTALL.md states), zlib, /dev/fuse and, to mount
# as a user other than root, fusermount3. The tarball also holds bash, zsh and
# fish completions, man pages, the licenses and INSTALL.md. A plain
# `swift build` stays the development path; both builds compile the same code.
set -euo pipefail
cd "$(dirname "$0")/.."

GLIBC_FLOOR=2.34   # Amazon Linux 2023; Ubuntu 22.04 has 2.35
version=$(tr -d ' \n' < VERSION)
arch=$(uname -m)
name=shardfs-$version-linux-$arch
scratch=.build-dist
work=$scratch/package
stage=$work/stage/$name

fail() { echo "package: $*" >&2; exit 1; }

for tool in gcc pkg-config objdump strip tar; do
    command -v "$tool" >/dev/null || fail "needs $tool (scripts/setup.sh installs what is missing)"
done
libfuse_a=$(pkg-config --variable=libdir fuse3)/libfuse3.a
[ -f "$libfuse_a" ] || fail "no $libfuse_a: install libfuse3-dev"
libstdcxx_a=$(gcc -print-file-name=libstdc++.a)
[ -f "$libstdcxx_a" ] || fail "no static libstdc++ (gcc -print-file-name=libstdc++.a): install libstdc++-dev"

# Static archives, found ahead of the shared libraries of the same name: a
# directory holding only them comes first on the linker's path through a
# fuse3.pc of our own (SwiftPM puts pkg-config's -L before the system's).
rm -rf "$work/static-libs" "$work/pkgconfig"
mkdir -p "$work/static-libs" "$work/pkgconfig"
ln -s "$libfuse_a" "$work/static-libs/libfuse3.a"
ln -s "$libstdcxx_a" "$work/static-libs/libstdc++.a"
cat > "$work/pkgconfig/fuse3.pc" <<EOF
Name: fuse3
Description: libfuse3, linked statically into the ShardFS package
Version: $(pkg-config --modversion fuse3)
Libs: -L$PWD/$work/static-libs -lfuse3 -lpthread -ldl
Cflags: $(pkg-config --cflags fuse3)
EOF
gcc -O2 -fPIC -Wall -Wextra -Werror -c packaging/glibc-compat.c -o "$work/glibc-compat.o"

echo "package: building shardfs $version (release, static Swift runtime and libfuse3)" >&2
PKG_CONFIG_PATH=$PWD/$work/pkgconfig swift build -c release --scratch-path "$scratch" --product shardfs \
    --static-swift-stdlib --disable-local-rpath -Xswiftc -Xclang-linker -Xswiftc -static-libgcc \
    -Xlinker "$PWD/$work/glibc-compat.o" 2>&1 | grep -v "warning: the use of \`mktemp' is dangerous" | tail -n 3
binary=$scratch/release/shardfs

# What the binary may need from the node: glibc's libraries and zlib, nothing
# newer than GLIBC_FLOOR. tests/compat/test_package.py checks the same.
needed=$(objdump -p "$binary" | awk '$1 == "NEEDED" { print $2 }')
for library in $needed; do
    case $library in
        libc.so.6|libm.so.6|libdl.so.2|libpthread.so.0|librt.so.1|ld-linux-x86-64.so.2|libz.so.1) ;;
        *) fail "$binary needs $library, which is neither glibc nor zlib" ;;
    esac
done
# No $ORIGIN search path: a library dropped next to the binary on shared
# storage must never be loaded in place of the node's own.
if objdump -p "$binary" | grep -qE '^\s*(RPATH|RUNPATH)'; then
    fail "$binary carries a library search path: $(objdump -p "$binary" | grep -E 'RPATH|RUNPATH')"
fi
highest=$(objdump -T "$binary" | grep -o 'GLIBC_[0-9][0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -n 1)
if [ "$(printf '%s\n%s\n' "$highest" "$GLIBC_FLOOR" | sort -V | tail -n 1)" != "$GLIBC_FLOOR" ]; then
    fail "$binary needs GLIBC_$highest, above the floor GLIBC_$GLIBC_FLOOR: $(objdump -T "$binary" | grep "GLIBC_$highest" | awk '{ print $NF }' | tr '\n' ' ')"
fi
grep -q "glibc $GLIBC_FLOOR" packaging/INSTALL.md || fail "packaging/INSTALL.md does not state glibc $GLIBC_FLOOR"

rm -rf "$work/stage"
mkdir -p "$stage/bin" "$stage/share/man/man1" "$stage/share/bash-completion/completions" \
    "$stage/share/zsh/site-functions" "$stage/share/fish/vendor_completions.d" "$stage/licenses"
strip -o "$stage/bin/shardfs" "$binary"
shardfs=$stage/bin/shardfs
"$shardfs" --generate-completion-script bash > "$stage/share/bash-completion/completions/shardfs"
"$shardfs" --generate-completion-script zsh > "$stage/share/zsh/site-functions/_shardfs"
"$shardfs" --generate-completion-script fish > "$stage/share/fish/vendor_completions.d/shardfs.fish"

# Man pages from the same help text as --help (swift-argument-parser's generator).
swift build -c release --scratch-path .build-tools --product generate-manual 2>&1 | tail -n 1
commit_date=$(git log -1 --format=%cs 2>/dev/null || date -u +%F)
.build-tools/release/generate-manual "$shardfs" --multi-page --date "$commit_date" \
    --output-directory "$stage/share/man/man1"
rm -f "$stage/share/man/man1/shardfs.help.1"

cp LICENSE "$stage/LICENSE"
cp packaging/INSTALL.md "$stage/INSTALL.md"
cp packaging/THIRD-PARTY-NOTICES.md packaging/licenses/* "$stage/licenses/"
for package in swift-argument-parser swift-log swift-system; do
    cp "$scratch/checkouts/$package/LICENSE.txt" "$stage/licenses/$package-LICENSE.txt"
done

mkdir -p dist
tarball=dist/$name.tar.gz
mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" -C "$work/stage" -cf - "$name" \
    | gzip -9n > "$tarball.partial"
mv "$tarball.partial" "$tarball"
echo "package: $tarball"
echo "package: $(stat -c %s "$tarball") bytes packed, binary $(stat -c %s "$shardfs") bytes; needs glibc >= $GLIBC_FLOOR (highest symbol GLIBC_$highest), $(echo $needed | tr ' ' ',')"
echo "package: sha256 $(sha256sum "$tarball" | cut -d' ' -f1)"
echo "package: $("$shardfs" --version)"
