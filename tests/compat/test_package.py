"""The self-contained package (scripts/package.sh) that training nodes run:
what the tarball holds, what the binary needs from a node (glibc no newer
than INSTALL.md states, zlib, nothing of the Swift toolchain), and the
binary at work with the toolchain out of reach: copied alone into an empty
folder, run with an empty environment, with /opt/swift hidden under an
empty tmpfs: --version, plan, convert and a mount read with torch.load."""
from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from pathlib import Path

from conftest import REPO
from isolated import describe, kill_daemons, run_isolated
from tiny_example import EXAMPLE, LAYOUT, RANK_FILES, assert_read_as_converted

SUBCOMMANDS = ["convert", "plan", "mount", "unmount", "status", "verify"]

# What a node provides: glibc's libraries and zlib.
ALLOWED_LIBRARIES = {"libc.so.6", "libm.so.6", "libdl.so.2", "libpthread.so.0", "librt.so.1",
                     "ld-linux-x86-64.so.2", "libz.so.1"}


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def stated_glibc(package) -> str:
    text = (package.root / "INSTALL.md").read_text()
    m = re.search(r"glibc (\d+\.\d+) or newer", text)
    assert m, "INSTALL.md does not state the oldest glibc it needs ('glibc X.Y or newer')"
    return m.group(1)


def test_tarball_name_and_contents(package):
    version = (REPO / "VERSION").read_text().strip()
    assert package.tarball.name == f"shardfs-{version}-linux-x86_64.tar.gz"
    assert package.root.name == f"shardfs-{version}-linux-x86_64"
    binary = package.binary
    assert binary.is_file() and binary.stat().st_mode & 0o111, f"{binary} missing or not executable"
    for f in ["LICENSE", "INSTALL.md", "licenses/THIRD-PARTY-NOTICES.md", "licenses/LGPL-2.1.txt", "licenses/ICU.txt",
              "licenses/GCC-Runtime-Library-Exception-3.1.txt"]:
        assert (package.root / f).is_file(), f"the package has no {f}"
    assert "Apache License" in (package.root / "LICENSE").read_text()

    bash = (package.root / "share/bash-completion/completions/shardfs").read_text()
    zsh = (package.root / "share/zsh/site-functions/_shardfs").read_text()
    assert zsh.startswith("#compdef shardfs")
    for sub in SUBCOMMANDS:
        assert re.search(rf"\b{sub}\b", bash), f"bash completion knows no '{sub}'"
        assert re.search(rf"\b{sub}\b", zsh), f"zsh completion knows no '{sub}'"
    assert "--tp-size" in bash and "--persist-to" in bash

    man = package.root / "share/man/man1"
    assert sorted(p.name for p in man.iterdir()) == sorted(["shardfs.1"] + [f"shardfs.{s}.1" for s in SUBCOMMANDS])
    mount_page = (man / "shardfs.mount.1").read_text()
    assert ".Dt SHARDFS.MOUNT 1" in mount_page and "Fl -persist-to" in mount_page and "Fl -log-file" in mount_page
    # The man pages render (groff, where installed, is the judge).
    if shutil.which("groff"):
        r = subprocess.run(["groff", "-mandoc", "-Tutf8", str(man / "shardfs.mount.1")], capture_output=True, text=True)
        assert r.returncode == 0 and "persist" in r.stdout, r.stderr


def test_needs_only_glibc_and_zlib(package):
    dynamic = subprocess.run(["objdump", "-p", str(package.binary)], capture_output=True, text=True, check=True).stdout
    needed = set(re.findall(r"^\s*NEEDED\s+(\S+)", dynamic, re.M))
    assert needed, "no NEEDED entries: is this a dynamic ELF binary?"
    assert needed <= ALLOWED_LIBRARIES, f"the binary needs {sorted(needed - ALLOWED_LIBRARIES)} beyond glibc and zlib"
    assert "RPATH" not in dynamic and "RUNPATH" not in dynamic, "the binary carries a library search path"

    ldd = subprocess.run(["ldd", str(package.binary)], capture_output=True, text=True, check=True).stdout
    listed = {line.split()[0] for line in ldd.splitlines() if line.strip()}
    listed = {Path(name).name for name in listed} - {"linux-vdso.so.1"}
    assert listed <= ALLOWED_LIBRARIES, f"ldd lists {sorted(listed - ALLOWED_LIBRARIES)}:\n{ldd}"
    assert "/opt/swift" not in ldd and "not found" not in ldd, ldd


def test_glibc_no_newer_than_install_states(package):
    floor = stated_glibc(package)
    symbols = subprocess.run(["objdump", "-T", str(package.binary)], capture_output=True, text=True, check=True).stdout
    versions = set(re.findall(r"\bGLIBC_(\d+(?:\.\d+)+)\b", symbols))
    assert versions, "no GLIBC symbol versions found"
    highest = max(versions, key=version_tuple)
    newer = [line.split()[-1] + "@GLIBC_" + v for v in versions if version_tuple(v) > version_tuple(floor)
             for line in symbols.splitlines() if f"GLIBC_{v} " in line or line.endswith(f"GLIBC_{v}")]
    assert version_tuple(highest) <= version_tuple(floor), (
        f"the binary needs GLIBC_{highest}; INSTALL.md says glibc {floor} is enough: {sorted(set(newer))}")
    # Ubuntu 22.04 (2.35) and Amazon Linux 2023 (2.34) are the training images.
    assert version_tuple(floor) <= (2, 34), f"INSTALL.md's floor glibc {floor} excludes Amazon Linux 2023 (2.34)"


def test_packaged_binary_without_the_toolchain(package, shardfs, tmp_path):
    """The binary alone in an empty folder, an empty environment, /opt/swift
    hidden: --version, plan, convert, and a mount that torch.load reads."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy2(package.binary, alone / "shardfs")
    out = tmp_path / "converted"
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:8]}"
    mnt.mkdir()
    copied = tmp_path / "read-through-mount"
    layout = " ".join(LAYOUT)
    script = f"""
hide_toolchain
[ -z "$(ls -A /opt/swift 2>/dev/null)" ] || {{ echo "/opt/swift is not hidden" >&2; exit 1; }}
cd {alone}
run() {{ env -i ./shardfs "$@"; }}
echo "== version"; run --version
echo "== plan"; run plan {EXAMPLE} {layout}
echo "== convert"; run convert {EXAMPLE} {out} {layout}
echo "== mount"; run mount {EXAMPLE} {mnt} {layout} --log-file {tmp_path}/daemon.log
trap 'env -i ./shardfs unmount {mnt} --lazy >/dev/null 2>&1 || true' EXIT
cp -r {mnt}/model {copied}
{REPO}/.venv/bin/python - <<'PY'
import torch
for name in {RANK_FILES!r}:
    sd = torch.load("{mnt}/model/" + name, weights_only=True, mmap=True)
    assert len(sd) > 0, name
    print("torch.load through the mount:", name, len(sd), "tensors")
PY
echo "== unmount"; run unmount {mnt}
trap - EXIT
"""
    try:
        r = run_isolated(script, timeout=300)
    finally:
        kill_daemons(mnt)
    log = tmp_path / "daemon.log"
    assert r.returncode == 0, describe(r) + (f"\n--- daemon log ---\n{log.read_text()}" if log.exists() else "")

    version = (REPO / "VERSION").read_text().strip()
    m = re.search(rf"^shardfs {re.escape(version)} \(commit ([0-9a-f]{{12}}|unknown)(-dirty)?, [^;]+; libfuse (3\.\d+\.\d+)\)$",
                  r.stdout, re.M)
    assert m, f"--version does not say 'shardfs {version} (commit ..., DATE; libfuse 3.x.y)':\n{r.stdout}"
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert m.group(1) == head.stdout.strip(), f"the package is of commit {m.group(1)}, the tree is at {head.stdout.strip()}: rebuild it"
    assert "4 files" in r.stdout, f"plan did not show the 4 rank files:\n{r.stdout}"

    # The packaged binary writes what the development build writes, byte for byte.
    expected = tmp_path / "expected"
    e = shardfs.run("convert", EXAMPLE, expected, *LAYOUT)
    assert e.returncode == 0, e.describe()
    assert sorted(p.name for p in (out / "model").iterdir()) == sorted(RANK_FILES)
    for name in RANK_FILES:
        assert (out / "model" / name).read_bytes() == (expected / "model" / name).read_bytes(), (
            f"{name}: the packaged convert differs from the built one")
    assert_read_as_converted(copied, out)
