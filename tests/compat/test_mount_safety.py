"""`shardfs mount`: a read-only file system, and every refusal (a bad mount
point, a layout `convert` would refuse) said before anything is mounted."""

from __future__ import annotations

import errno
import mmap
import os
import subprocess

import pytest

import checkpoints
from reference import LayoutError, expected_files, validate
from mounting import (  # the fixtures (mounts, ...) come from conftest.py
    assert_file_equals, daemon_pids, _errno_of, expected_for, FUSE_TYPE, GQA_TP2_PP2, is_mounted, L,
    log_tail, mount_types, new_mnt, QL,
)

pytestmark = pytest.mark.mount


# ---------------------------------------------------------------------------
# 6: read-only


def test_read_only(conversions, ckpts, mounts, tmp_path):
    """Every modification fails with EROFS; nothing changes."""
    c = GQA_TP2_PP2
    exp = expected_for(conversions, c)
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args)
    f = m.model / exp.names[0]
    g = m.model / exp.names[1]
    outside = tmp_path / "outside"
    outside.write_bytes(b"x")
    ops = {
        "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
        "open O_RDWR": lambda: os.open(f, os.O_RDWR),
        "open O_RDONLY|O_TRUNC": lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
        "open O_WRONLY|O_APPEND": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
        "create new file": lambda: os.open(m.model / "new.pt", os.O_CREAT | os.O_WRONLY, 0o644),
        "create new file (O_EXCL)": lambda: os.open(m.model / "new.pt", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644),
        "create at top": lambda: os.open(m.mnt / "new", os.O_CREAT | os.O_WRONLY, 0o644),
        "rename file": lambda: os.rename(f, m.model / "renamed.pt"),
        "rename over file": lambda: os.rename(f, g),
        "rename dir": lambda: os.rename(m.model, m.mnt / "model2"),
        "unlink": lambda: os.unlink(f),
        "rmdir": lambda: os.rmdir(m.model),
        "mkdir": lambda: os.mkdir(m.model / "sub"),
        "mkdir top": lambda: os.mkdir(m.mnt / "sub"),
        "chmod file": lambda: os.chmod(f, 0o644),
        "chmod dir": lambda: os.chmod(m.model, 0o755),
        "chown": lambda: os.chown(f, 1, 1),
        "truncate": lambda: os.truncate(f, 0),
        "truncate grow": lambda: os.truncate(f, 1 << 20),
        "utime": lambda: os.utime(f, (1, 1)),
        "symlink": lambda: os.symlink("x", m.model / "link"),
        "hard link": lambda: os.link(f, m.model / "hard"),
        "mknod fifo": lambda: os.mkfifo(m.model / "fifo"),
        "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    }
    problems = []
    for what, fn in ops.items():
        e = _errno_of(fn)
        if e != errno.EROFS:
            problems.append(f"{what}: {'succeeded' if e is None else errno.errorcode.get(e, e)}, expected EROFS")
    # into the mount from outside: the kernel answers EXDEV before EROFS
    e = _errno_of(lambda: os.rename(outside, m.model / "moved"))
    if e not in (errno.EXDEV, errno.EROFS):
        problems.append(f"rename into the mount: {e}, expected EXDEV or EROFS")
    # a read-only fd cannot write or be truncated
    fd = os.open(f, os.O_RDONLY)
    try:
        e = _errno_of(lambda: os.write(fd, b"x"))
        if e != errno.EBADF:
            problems.append(f"write on an O_RDONLY fd: {e}, expected EBADF")
        e = _errno_of(lambda: os.ftruncate(fd, 0))
        if e not in (errno.EINVAL, errno.EBADF, errno.EROFS):
            problems.append(f"ftruncate on an O_RDONLY fd: {e}, expected EINVAL/EBADF/EROFS")
        e = _errno_of(lambda: mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ | mmap.PROT_WRITE).close())
        if e not in (errno.EACCES, errno.EPERM):
            problems.append(f"writable MAP_SHARED of an O_RDONLY fd: {e}, expected EACCES")
    finally:
        os.close(fd)
    assert not problems, "\n".join(problems) + "\n" + log_tail(m.log)
    assert sorted(os.listdir(m.model)) == sorted(exp.names)
    assert os.listdir(m.mnt) == ["model"]
    for n in exp.names[:2]:
        assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    assert is_mounted(m.mnt) and m.pids(), "daemon gone after the write attempts\n" + log_tail(m.log)


# ---------------------------------------------------------------------------
# 7: bad mount points, bad sources


def _assert_refused(r, mnt_name: str, what: str) -> None:
    assert r.returncode == 1, f"{what}: expected exit status 1\n{r.describe()}"
    assert mnt_name in r.stderr, f"{what}: stderr does not name {mnt_name!r}\n{r.describe()}"


def test_mount_point_errors(ckpts, mounts, tmp_path):
    """Missing dir, non-empty dir, a file, an existing mount: exit 1, the
    mount point named in stderr, nothing (more) mounted, no daemon left."""
    src = ckpts.get("gqa").path
    args = GQA_TP2_PP2.args

    missing = tmp_path / "missing-mnt"
    r = mounts.try_mount(src, missing, *args).run
    _assert_refused(r, str(missing), "missing mount point")
    assert not missing.exists() and not is_mounted(missing) and not daemon_pids(missing)

    full = new_mnt(tmp_path, "full-mnt")
    (full / "keep.txt").write_text("hello")
    r = mounts.try_mount(src, full, *args).run
    _assert_refused(r, str(full), "non-empty mount point")
    assert not is_mounted(full) and not daemon_pids(full)
    assert os.listdir(full) == ["keep.txt"] and (full / "keep.txt").read_text() == "hello"

    hidden = new_mnt(tmp_path, "hidden-mnt")
    (hidden / ".hidden").write_text("")
    r = mounts.try_mount(src, hidden, *args).run
    _assert_refused(r, str(hidden), "mount point holding a dot file")
    assert not is_mounted(hidden)

    afile = tmp_path / "file-mnt"
    afile.write_text("")
    r = mounts.try_mount(src, afile, *args).run
    _assert_refused(r, str(afile), "mount point that is a regular file")
    assert not is_mounted(afile)

    busy = new_mnt(tmp_path, "busy-mnt")
    m = mounts.mount(src, busy, *args)
    pids = m.pids()
    r = mounts.try_mount(src, busy, *args).run
    _assert_refused(r, str(busy), "already-mounted mount point")
    assert mount_types(busy) == [FUSE_TYPE], f"stacked mounts at {busy}: {mount_types(busy)}"
    assert m.pids() == pids, f"daemons before {pids}, after {m.pids()}"
    assert sorted(os.listdir(m.model)) == [n.removeprefix("model/") for n in expected_files(GQA_TP2_PP2.layout)]
    # also the relative spelling of the same mount point
    r = subprocess.run([str(mounts.shardfs.require()), "mount", str(src), busy.name, *args],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, f"relative path to a mounted dir: exit {r.returncode}\n{r.stderr}"
    assert mount_types(busy) == [FUSE_TYPE]

    # unmount of something that is not mounted
    plain = new_mnt(tmp_path, "plain")
    r = mounts.unmount(plain)
    assert r.returncode == 1 and "plain" in r.stderr, f"unmount of a plain dir:\n{r.describe()}"


def test_mount_refuses_what_convert_refuses(shardfs, ckpts, mounts, tmp_path):
    """A bad layout or source: exit 1 with convert's error, nothing mounted,
    mount point left empty."""
    gqa = ckpts.get("gqa").path
    cases = [
        ("tp3", gqa, ["--tp-size", "3"]),
        ("fuse-without-qkv-linear", gqa, ["--tp-size", "2", "--fuse-qkv"]),
        ("qkv-linear-tp4-m1-trn1", gqa, ["--tp-size", "4", "--qkv-linear"]),  # trn1 needs Hkv*m == T
        ("missing-source", tmp_path / "no-such-model", ["--tp-size", "2"]),
    ]
    bad_src = tmp_path / "bad-src"
    ckpts.get("mha").copy_to(bad_src)
    st = bad_src / "model.safetensors"
    st.write_bytes(st.read_bytes()[:-100])  # truncated
    cases.append(("truncated-source", bad_src, []))
    # the layouts are ones the spec refuses (a wrong case is a test bug)
    for name, lay in (("tp3", L(tp=3)), ("fuse-without-qkv-linear", L(tp=2, fuse_qkv=True)),
                      ("qkv-linear-tp4-m1-trn1", L(tp=4, **QL))):
        with pytest.raises(LayoutError):
            validate(checkpoints.dims("gqa"), lay)
    problems = []
    for name, src, args in cases:
        out = tmp_path / f"out-{name}"
        conv = shardfs.run("convert", src, out, *args)
        assert conv.returncode == 1, f"{name}: convert did not refuse:\n{conv.describe()}"
        mnt = new_mnt(tmp_path, f"mnt-{name}")
        r = mounts.try_mount(src, mnt, *args).run
        if r.returncode != 1:
            problems.append(f"{name}: mount exit {r.returncode}, convert 1\n{r.describe()}")
        conv_msg = [ln for ln in conv.stderr.splitlines() if "error" in ln.lower()]
        if conv_msg and conv_msg[0].strip() not in r.stderr:
            problems.append(f"{name}: mount's error differs from convert's\n  convert: {conv_msg[0]!r}\n"
                            f"  mount:   {r.stderr.strip()[:500]!r}")
        if is_mounted(mnt) or daemon_pids(mnt) or os.listdir(mnt):
            problems.append(f"{name}: something left at {mnt}: {mount_types(mnt)}, daemons {daemon_pids(mnt)}")
    assert not problems, "\n".join(problems)
