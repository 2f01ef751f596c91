"""`shardfs mount`: the daemon's life (killed, SIGTERM, --foreground and
SIGINT, `status --wait`, a Slurm job), its logs, and the options it mounts with."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from daemon_log import default_log_path
from mounting import (  # the fixtures (mounts, ...) come from conftest.py
    _alive, assert_file_equals, _errno_of, expected_for, FUSE_TYPE, GQA_TP2_PP2, is_mounted, log_tail,
    new_mnt, _unescape, wait_for,
)

pytestmark = pytest.mark.mount


# ---------------------------------------------------------------------------
# 8, 9: daemon death, SIGTERM


def test_daemon_killed(conversions, ckpts, mounts, tmp_path):
    """SIGKILL of the daemon: reads fail with ENOTCONN; `shardfs unmount`
    removes the dead mount (exit 0); a new mount on MNT works."""
    c = GQA_TP2_PP2
    exp = expected_for(conversions, c)
    src = ckpts.get(c.ckpt).path
    mnt = new_mnt(tmp_path)
    m = mounts.mount(src, mnt, *c.args)
    assert_file_equals(m.model / exp.names[0], exp.zeroed(exp.names[0]), tmp_path / "diff", m.log)
    pids = m.pids()
    assert len(pids) == 1, f"expected one daemon for {mnt}, found {pids}"
    os.kill(pids[0], signal.SIGKILL)
    assert wait_for(lambda: not _alive(pids[0]), 10), f"daemon {pids[0]} survived SIGKILL"

    dead = (errno.ENOTCONN, errno.ECONNABORTED)
    for what, fn in (
        ("open+read of an unread file", lambda: open(m.model / exp.names[1], "rb").read()),
        ("statvfs of MNT", lambda: os.statvfs(mnt)),
        ("listdir MNT", lambda: os.listdir(mnt)),
    ):
        e = _errno_of(fn)
        assert e in dead, f"{what} on a dead mount: {errno.errorcode.get(e, e) if e else 'succeeded'}, expected ENOTCONN"
    assert is_mounted(mnt), "the dead mount vanished by itself (expected it to stay until unmounted)"

    r = mounts.unmount(mnt)
    assert r.returncode == 0, f"unmount of a dead mount:\n{r.describe()}"
    assert not is_mounted(mnt), f"{mnt} still in /proc/mounts after `shardfs unmount`"
    assert os.listdir(mnt) == []

    m2 = mounts.mount(src, mnt, *c.args)
    for n in exp.names:
        assert_file_equals(m2.model / n, exp.zeroed(n), tmp_path / "diff", m2.log)


def test_daemon_sigterm(conversions, ckpts, mounts, tmp_path):
    """SIGTERM: the daemon unmounts and exits. Also: root's default log is
    /var/log/shardfs/<whole mount path, percent-encoded>@<host>.log, and
    `shardfs status` names it."""
    c = GQA_TP2_PP2
    exp = expected_for(conversions, c)
    mnt = new_mnt(tmp_path, f"mnt-sigterm-{uuid.uuid4().hex[:12]}")
    log = default_log_path(mnt)
    try:
        m = mounts.mount(ckpts.get(c.ckpt).path, mnt, *c.args, default_log=True)
        assert str(log) in m.run.stdout + m.run.stderr, f"mount does not tell where it logs:\n{m.run.describe()}"
        assert wait_for(log.exists, 5), f"no default log {log}"
        assert log.stat().st_mode & 0o777 == 0o600, oct(log.stat().st_mode)
        status = mounts.shardfs.run("status", mnt)
        assert f"log: {log}" in status.stdout, status.describe()
        assert_file_equals(m.model / exp.names[0], exp.zeroed(exp.names[0]), tmp_path / "diff", log)
        pids = m.pids()
        assert len(pids) == 1, f"daemon processes for {mnt}: {pids}"
        os.kill(pids[0], signal.SIGTERM)
        gone = wait_for(lambda: not is_mounted(mnt), 10, 0.1)
        assert gone, f"{mnt} still mounted 10 s after SIGTERM to {pids[0]}\n{log_tail(log)}"
        assert wait_for(lambda: not _alive(pids[0]), 10), f"daemon {pids[0]} still running after SIGTERM\n{log_tail(log)}"
        assert os.listdir(mnt) == []
        assert "mounted" in log.read_text(), log_tail(log)
    finally:
        if not is_mounted(mnt):
            log.unlink(missing_ok=True)


def test_default_logs_of_mounts_named_alike(conversions, ckpts, mounts, tmp_path):
    """Two mounts whose last path component is the same (every node's
    /mnt/.../model) log to different files, each named after its whole path."""
    c = GQA_TP2_PP2
    exp = expected_for(conversions, c)
    tag = uuid.uuid4().hex[:12]
    for side in ("a", "b"):
        (tmp_path / f"{side}-{tag}").mkdir()
    mnts = [new_mnt(tmp_path / f"{side}-{tag}", "model") for side in ("a", "b")]
    logs = [default_log_path(mnt) for mnt in mnts]
    assert logs[0] != logs[1]
    try:
        for mnt, log in zip(mnts, logs):
            m = mounts.mount(ckpts.get(c.ckpt).path, mnt, *c.args, default_log=True)
            assert f"(log: {log})" in m.run.stdout, m.run.describe()
            assert_file_equals(m.model / exp.names[0], exp.zeroed(exp.names[0]), tmp_path / "diff", log)
        for mnt, log in zip(mnts, logs):
            assert f"mounted {mnt}:" in log.read_text(), log_tail(log)
    finally:
        for mnt, log in zip(mnts, logs):
            mounts.unmount(mnt)
            log.unlink(missing_ok=True)


def test_default_log_symlink_refused(ckpts, mounts, tmp_path):
    """A symlink planted where the default log goes is never followed: the
    mount is refused, naming the link, and the link's target is untouched."""
    c = GQA_TP2_PP2
    mnt = new_mnt(tmp_path, f"mnt-loglink-{uuid.uuid4().hex[:12]}")
    log = default_log_path(mnt)
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    log.parent.mkdir(parents=True, exist_ok=True)
    log.unlink(missing_ok=True)
    log.symlink_to(victim)
    try:
        m = mounts.try_mount(ckpts.get(c.ckpt).path, mnt, *c.args, default_log=True)
        assert m.run.returncode != 0, m.run.describe()
        assert str(log) in m.run.stderr and "symbolic link" in m.run.stderr, m.run.describe()
        assert not is_mounted(mnt)
        assert victim.read_bytes() == b"precious\n"
    finally:
        log.unlink(missing_ok=True)


# ---------------------------------------------------------------------------
# 10: --foreground


def test_foreground_sigint(conversions, ckpts, mounts, tmp_path):
    """--foreground stays attached; SIGINT ends it with status 0, unmounted."""
    c = GQA_TP2_PP2
    exp = expected_for(conversions, c)
    mnt = new_mnt(tmp_path)
    err = tmp_path / "foreground.stderr"
    p = mounts.foreground(ckpts.get(c.ckpt).path, mnt, *c.args, stderr_path=err)
    ok = wait_for(lambda: is_mounted(mnt) or p.poll() is not None, 20)
    assert ok and p.poll() is None and is_mounted(mnt), (
        f"--foreground: not mounted (exit {p.poll()})\n{err.read_text(errors='replace')[-3000:]}"
    )
    for n in exp.names:
        assert_file_equals(mnt / "model" / n, exp.zeroed(n), tmp_path / "diff", err)
    assert p.poll() is None, "--foreground process exited while serving"
    p.send_signal(signal.SIGINT)
    try:
        rc = p.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"--foreground did not exit within 15 s of SIGINT\n{err.read_text(errors='replace')[-3000:]}")
    assert rc == 0, f"--foreground exit status {rc} after SIGINT\n{err.read_text(errors='replace')[-3000:]}"
    assert not is_mounted(mnt), f"{mnt} still mounted after the foreground process exited"
    assert os.listdir(mnt) == []


def test_status_wait_for_a_foreground_mount(ckpts, mounts, shardfs, tmp_path):
    """The Slurm pattern (README): a --foreground mount started in the
    background, and `status --wait` in the next step returns once it serves;
    on a directory that never becomes a mount, it fails after the wait."""
    c = GQA_TP2_PP2
    never = new_mnt(tmp_path, "never")
    start = time.monotonic()
    r = shardfs.run("status", never, "--wait", "1")
    assert r.returncode == 1 and time.monotonic() - start >= 1.0, r.describe()
    assert f"{never} is not a ShardFS mount" in r.stderr and "after waiting 1 s" in r.stderr, r.describe()

    mnt = new_mnt(tmp_path)
    err = tmp_path / "foreground.stderr"
    p = mounts.foreground(ckpts.get(c.ckpt).path, mnt, *c.args, stderr_path=err)
    try:
        r = shardfs.run("status", mnt, "--wait", "30")
        assert r.returncode == 0, r.describe() + "\n" + err.read_text(errors="replace")[-3000:]
        assert f"daemon pid {p.pid}:" in r.stdout, r.stdout
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=15)
    assert not is_mounted(mnt)


def test_background_mount_in_a_slurm_job_says_how(ckpts, mounts, shardfs, tmp_path):
    """Slurm kills a step's background daemon with the step: inside a job,
    a mount without --foreground says what to do instead."""
    c = GQA_TP2_PP2
    mnt = new_mnt(tmp_path)
    log = tmp_path / "daemon.log"
    exe = shardfs.require()
    mounts._track(mnt)
    env = dict(os.environ, SLURM_JOB_ID="4242")
    r = subprocess.run([str(exe), "mount", str(ckpts.get(c.ckpt).path), str(mnt), *c.args, "--log-file", str(log)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0 and is_mounted(mnt), r.stderr
    assert "in Slurm job 4242" in r.stderr and "--foreground" in r.stderr and "--overlap" in r.stderr, r.stderr
    assert mounts.unmount(mnt).returncode == 0


def _mount_options(mnt: Path) -> list[str]:
    """The options column of mnt's fuse.shardfs line in /proc/mounts."""
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 4 and _unescape(parts[1]) == str(mnt) and parts[2] == FUSE_TYPE:
                return parts[3].split(",")
    raise AssertionError(f"{mnt} is not in /proc/mounts")


@pytest.mark.parametrize("allow_other", [False, True])
def test_mount_options_in_proc_mounts(ckpts, mounts, tmp_path, allow_other):
    """The kernel sees a read-only mount that checks permissions itself
    (default_permissions, always), visible to other users only when asked
    (--allow-other)."""
    c = GQA_TP2_PP2
    args = list(c.args) + (["--allow-other"] if allow_other else [])
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *args)
    options = _mount_options(m.mnt)
    assert "ro" in options, options
    assert "default_permissions" in options, options
    assert ("allow_other" in options) == allow_other, options
