"""`pip install shardfs`: the cluster binary as a Python wheel
(scripts/wheel.sh), judged by pip and by real wheel tools, and used as a user
would, from a fresh venv with the Swift toolchain out of reach: the command
on the venv's PATH, the Python API mounting with a context manager (left by
an exception too; the Mount's status and log), torch.load through the mount, and `pip uninstall`
leaving no file behind."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import REPO
from isolated import describe, kill_daemons, run_isolated
from tiny_example import EXAMPLE, RANK_FILES

VERSION = (REPO / "VERSION").read_text().strip()
TAG = f"py3-none-manylinux_2_34_{os.uname().machine}"


@pytest.fixture(scope="module")
def wheel() -> Path:
    """The wheel SHARDFS_WHEEL names, else the one scripts/wheel.sh made."""
    path = Path(os.environ.get("SHARDFS_WHEEL") or REPO / f"dist/shardfs-{VERSION}-{TAG}.whl")
    if not path.exists():
        pytest.fail(f"no wheel {path}: run scripts/wheel.sh (or set SHARDFS_WHEEL)", pytrace=False)
    return path


def test_wheel_contents_and_metadata(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        info = {i.filename: i for i in z.infolist()}
        meta = z.read(f"shardfs-{VERSION}.dist-info/METADATA").decode()
        wheel_file = z.read(f"shardfs-{VERSION}.dist-info/WHEEL").decode()
        record = z.read(f"shardfs-{VERSION}.dist-info/RECORD").decode()
        data = {n: z.read(n) for n in names}
    assert wheel.name == f"shardfs-{VERSION}-{TAG}.whl"
    script = f"shardfs-{VERSION}.data/scripts/shardfs"
    assert script in names and (info[script].external_attr >> 16) & 0o111, "the binary is not an executable script"
    for n in ["shardfs/__init__.py", "shardfs/py.typed", f"shardfs-{VERSION}.data/data/share/man/man1/shardfs.mount.1",
              f"shardfs-{VERSION}.data/data/share/bash-completion/completions/shardfs",
              f"shardfs-{VERSION}.dist-info/licenses/LICENSE", f"shardfs-{VERSION}.dist-info/licenses/LGPL-2.1.txt"]:
        assert n in names, f"the wheel has no {n}"
    assert f'__version__ = "{VERSION}"' in data["shardfs/__init__.py"].decode()
    assert f"Tag: {TAG}\n" in wheel_file and "Root-Is-Purelib: false\n" in wheel_file
    for field in ["Metadata-Version: 2.4", "Name: shardfs", f"Version: {VERSION}", "License-Expression: Apache-2.0",
                  "License-File: LICENSE", "Requires-Python: >=3.9", "Summary: "]:
        assert field in meta, f"METADATA has no {field!r}"
    # RECORD: every file once, with its real hash and size (RECORD itself without).
    import base64
    import hashlib
    rows = [line.split(",") for line in record.splitlines()]
    assert sorted(r[0] for r in rows) == sorted(names)
    for path, digest, size in rows:
        if path.endswith("RECORD"):
            assert (digest, size) == ("", "")
            continue
        want = "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data[path]).digest()).rstrip(b"=").decode()
        assert (digest, int(size)) == (want, len(data[path])), path


def test_real_wheel_tools(wheel):
    """auditwheel (the manylinux policy: the tag's glibc against the binary's
    symbols) and check-wheel-contents (the wheel's structure)."""
    bin_dir = Path(sys.executable).parent
    show = subprocess.run([str(bin_dir / "auditwheel"), "show", str(wheel)], capture_output=True, text=True)
    assert show.returncode == 0, show.stdout + show.stderr
    text = " ".join(show.stdout.split())
    assert f'is consistent with the following platform tag: "manylinux_2_34_{os.uname().machine}"' in text, show.stdout
    # W002 (files with equal contents) is left out: the Apache-2.0 texts of
    # ShardFS, swift-log and swift-argument-parser are the same licence,
    # shipped once per project that grants it, as the tarball ships them.
    contents = subprocess.run([str(bin_dir / "check-wheel-contents"), "--ignore", "W002", str(wheel)],
                              capture_output=True, text=True)
    assert contents.returncode == 0 and "OK" in contents.stdout, contents.stdout + contents.stderr


def snapshot(root: Path) -> set:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


@pytest.mark.mount
def test_pip_install_use_and_uninstall(wheel, tmp_path):
    base = Path(f"/tmp/shardfs-wheel-{uuid.uuid4().hex[:8]}")
    base.mkdir()
    venv = base / "venv"
    mnt, mnt2, out = base / "mnt", base / "mnt2", base / "out"
    mnt.mkdir()
    mnt2.mkdir()
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
        before = snapshot(venv)
        script = f"""
import json, os, subprocess, sys
import shardfs
print("version", shardfs.version())
plan = shardfs.plan({str(EXAMPLE)!r}, tp_size=2, pp_size=2)
print("plan", len(plan["files"]))
with shardfs.mount({str(EXAMPLE)!r}, {str(mnt)!r}, tp_size=2, pp_size=2) as m:
    keys = subprocess.run([{sys.executable!r}, "-c",
        "import sys, torch; print(len(torch.load(sys.argv[1], weights_only=True, mmap=True)))",
        str(m.path / "model" / {RANK_FILES[0]!r})], check=True, capture_output=True, text=True).stdout.strip()
    print("loaded", keys)
    print("status", m.status()["files"], m.log_path is not None and m.log_path.exists())
print("mounted after", " " + {str(mnt)!r} + " " in open("/proc/self/mounts").read())
try:
    with shardfs.mount({str(EXAMPLE)!r}, {str(mnt2)!r}, tp_size=2):
        raise RuntimeError("boom")
except RuntimeError as e:
    print("raised", e)
print("mounted after raise", " " + {str(mnt2)!r} + " " in open("/proc/self/mounts").read())
try:
    shardfs.convert({str(EXAMPLE)!r}, {str(out)!r}, tp_size=3)
except shardfs.ShardFSError as e:
    print("refused", e.returncode, "--tp-size" in e.message)
"""
        (base / "use.py").write_text(script)
        r = run_isolated(f"""
hide_toolchain
unset SHARDFS_BIN   # the module must find the binary the wheel installed
export PATH={venv}/bin:/usr/bin:/bin
pip install --no-index --quiet {wheel}
command -v shardfs
shardfs --version
shardfs convert {EXAMPLE} {base}/converted --tp-size 2 --pp-size 2 >/dev/null 2>&1
ls {base}/converted/model
ls {venv}/share/man/man1
python {base}/use.py
""", timeout=300)
        assert r.returncode == 0, describe(r)
        lines = r.stdout
        assert f"{venv}/bin/shardfs\n" in lines, describe(r)
        assert re.search(rf"^shardfs {re.escape(VERSION)} \(commit ", lines, re.M), describe(r)
        assert all(name in lines for name in RANK_FILES), describe(r)
        assert "shardfs.mount.1" in lines, "man pages not installed under the venv's share/\n" + describe(r)
        assert "plan 4\n" in lines and "loaded " in lines and "status 4 True\n" in lines, describe(r)
        assert "mounted after False\n" in lines, describe(r)
        assert "raised boom\n" in lines and "mounted after raise False\n" in lines, describe(r)
        assert "refused 1 True\n" in lines, describe(r)
        assert not (out / "model").exists()
        for m in (mnt, mnt2):
            assert f" {m} " not in Path("/proc/self/mounts").read_text()

        u = subprocess.run([str(venv / "bin/python"), "-m", "pip", "uninstall", "-y", "shardfs"], capture_output=True, text=True)
        assert u.returncode == 0, u.stdout + u.stderr
        left = snapshot(venv) - before
        assert not left, f"pip uninstall left files behind: {sorted(left)[:10]}"
    finally:
        kill_daemons(mnt)
        kill_daemons(mnt2)
        subprocess.run(["rm", "-rf", str(base)])
