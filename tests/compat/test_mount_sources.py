"""`shardfs mount`: a source changed while mounted (deleted, truncated,
replaced, touched) turns the files cut from it into EIO, never stale bytes."""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path

import pytest

from mounting import (  # the fixtures (mounts, ...) come from conftest.py
    _alive, assert_file_equals, _errno_of, GQA_TP2_PP2, is_mounted, log_tail, new_mnt, READ_MODES,
    converted_copy, wait_for,
)

pytestmark = pytest.mark.mount


CHANGES = [
    # same size, new bytes and a new mtime (rewritten in place)
    ("rewrite-in-place", "direct-io"),
    ("rewrite-in-place", "cached"),
    # only the mtime
    ("mtime-only", "cached"),
    # one byte appended (size changes)
    ("append", "direct-io"),
    ("append", "cached"),
    # a new file renamed over the old one (only the path poller can see it)
    ("replace", "cached"),
]


def _change(path: Path, how: str) -> None:
    st = path.stat()
    if how == "rewrite-in-place":
        raw = bytearray(path.read_bytes())
        raw[-1] ^= 0xFF
        with open(path, "r+b") as f:
            f.write(raw)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
        assert path.stat().st_size == st.st_size
    elif how == "mtime-only":
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 2_000_000_000))
    elif how == "append":
        with open(path, "ab") as f:
            f.write(b"\0")
    elif how == "replace":
        tmp = path.with_name(path.name + ".new")
        shutil.copyfile(path, tmp)
        os.replace(tmp, path)
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how,mode", CHANGES, ids=[f"{h}-{m}" for h, m in CHANGES])
def test_source_changed(shardfs, ckpts, mounts, tmp_path, how, mode):
    """A safetensors shard changed while mounted: within ~2 s every file
    that uses it fails with EIO (new opens, fresh ranges, and descriptors
    opened before the change), the log names the shard; files not using it
    still read correctly; the daemon stays up."""
    c = GQA_TP2_PP2
    src, exp, uses = converted_copy(shardfs, ckpts, tmp_path, c)
    assert set(uses) == set(exp.names)
    all_sources = sorted(p.name for p in src.glob("*.safetensors"))
    shard = next((s for s in all_sources if 0 < sum(s in u for u in uses.values()) < len(uses)), None)
    assert shard is not None, f"no shard used by only some files: {uses}"
    users = sorted(n for n in exp.names if shard in uses[n])
    others = sorted(n for n in exp.names if shard not in uses[n])

    m = mounts.mount(src, new_mnt(tmp_path), *c.args, *READ_MODES[mode])
    pids = m.pids()
    assert len(pids) == 1
    # read all of one user and the first half of everything else
    assert_file_equals(m.model / users[0], exp.zeroed(users[0]), tmp_path / "diff", m.log)
    for n in exp.names:
        with open(m.model / n, "rb") as f:
            assert f.read(len(exp.zeroed(n)) // 2) == exp.zeroed(n)[: len(exp.zeroed(n)) // 2], n
    old_fd = os.open(m.model / users[0], os.O_RDONLY)
    try:
        _change(src / shard, how)
        t0 = time.monotonic()

        # a new descriptor and a range not read before, until EIO
        attempts, last = 0, None
        size = len(exp.zeroed(users[0]))
        while True:
            attempts += 1
            off = size // 2 + (attempts * 997) % max(1, size // 2 - 64)
            try:
                fd = os.open(m.model / users[0], os.O_RDONLY)
                try:
                    os.pread(fd, 64, off)
                finally:
                    os.close(fd)
                last = "read succeeded"
            except OSError as e:
                last = e
                if e.errno == errno.EIO:
                    break
                pytest.fail(f"{users[0]} after {shard} changed: {e}, expected EIO\n{log_tail(m.log)}")
            if time.monotonic() - t0 > 2.5:
                pytest.fail(f"{users[0]} still served {time.monotonic() - t0:.1f} s after {shard} changed "
                            f"({how}, {mode}); last attempt: {last}\n{log_tail(m.log)}")
            time.sleep(0.05)
        detected = time.monotonic() - t0

        problems = []
        for n in users:
            for what, fn in (
                ("open+read", lambda: open(m.model / n, "rb").read()),
            ):
                e = _errno_of(fn)
                if e != errno.EIO:
                    problems.append(f"{n} uses {shard}: {what} gave {errno.errorcode.get(e, e) if e else 'data'}, expected EIO")
        # the descriptor opened (and page-cached) before the change must not keep serving old bytes
        def old_fd_fails() -> bool:
            try:
                os.pread(old_fd, 4096, 0)
                return False
            except OSError as e:
                return e.errno == errno.EIO
        if not wait_for(old_fd_fails, 2.0, 0.1):
            try:
                got = os.pread(old_fd, 4096, 0)
                res = f"returned {len(got)} bytes ({'the old bytes' if got == exp.zeroed(users[0])[:4096] else 'other bytes'})"
            except OSError as e:
                res = f"failed with {errno.errorcode.get(e.errno, e.errno)}"
            problems.append(f"{users[0]}: a descriptor opened before {shard} changed still reads 2 s after "
                            f"detection: pread(4096, 0) {res}, expected EIO")
        for n in others:
            try:
                assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
            except (AssertionError, OSError) as e:
                problems.append(f"{n} does not use {shard} but: {e}")
        if not wait_for(lambda: shard in m.log_text(), 2.0):
            problems.append(f"the daemon log does not name {shard}")
        if not (is_mounted(m.mnt) and all(_alive(p) for p in pids)):
            problems.append("the daemon died")
        assert not problems, (f"[{how}, {mode}; EIO detected after {detected:.2f} s]\n" + "\n".join(problems)
                              + "\n" + log_tail(m.log))
    finally:
        os.close(old_fd)
