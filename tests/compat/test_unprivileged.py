"""Mounting as the job's user, as Slurm runs jobs on HyperPod (user `ubuntu`,
not root): a user made by the test mounts through fusermount3, reads through
the mount, sees `shardfs status` and unmounts, with the daemon running as
that user and logging to a file of theirs.

/dev/fuse is root's only on these machines, so the scenario runs in a private
mount namespace with a 0666 copy of the device node bound over /dev/fuse, as
a node that lets users mount has it; nothing changes outside the namespace.
Both binaries are judged: the development build and the package's."""
from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from daemon_log import default_log_path
from isolated import describe, kill_daemons, run_isolated
from tiny_example import EXAMPLE, LAYOUT, assert_read_as_converted


@dataclass
class User:
    name: str
    uid: int
    gid: int


@pytest.fixture(scope="module")
def user():
    """A system user of its own, removed afterwards."""
    if os.geteuid() != 0:
        pytest.fail("making a user for this test needs root", pytrace=False)
    name = f"sfci{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                    "--shell", "/usr/sbin/nologin", name], check=True, capture_output=True)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], capture_output=True)


@pytest.fixture
def world(tmp_path, user):
    """A folder every user can reach (pytest's own is root's only): the
    source, the binary, an empty mount point and a home of the user's."""
    base = Path(tempfile.mkdtemp(prefix="shardfs-unprivileged-", dir="/tmp"))
    base.chmod(0o755)
    try:
        shutil.copytree(EXAMPLE, base / "src")
        for d in ("mnt", "home", "read"):
            (base / d).mkdir()
            os.chown(base / d, user.uid, user.gid)
        yield base
    finally:
        kill_daemons(base / "mnt")
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.mount
@pytest.mark.parametrize("build", ["swift-build", "package"])
def test_mount_read_unmount_as_a_user(build, user, world, shardfs, request, tmp_path):
    if build == "package":
        binary = request.getfixturevalue("package").binary
    else:
        binary = shardfs.require()
    shutil.copy2(binary, world / "shardfs")
    mnt, home, read = world / "mnt", world / "home", world / "read"
    layout = " ".join(LAYOUT)
    script = f"""
open_fuse_to_all {world}
as_user() {{ setpriv --reuid={user.uid} --regid={user.gid} --init-groups \\
    env -i HOME={home} PATH=/usr/local/bin:/usr/bin:/bin "$@"; }}
as_user {world}/shardfs mount {world}/src {mnt} {layout}
trap 'as_user {world}/shardfs unmount {mnt} --lazy >/dev/null 2>&1 || true' EXIT
echo "== mounts"; grep " {mnt} " /proc/self/mounts
echo "== status"; as_user {world}/shardfs status {mnt} | tee {world}/status
pid=$(sed -n 's/^daemon pid \\([0-9]*\\):.*/\\1/p' {world}/status)
echo "daemon uid $(awk '/^Uid:/ {{ print $2 }}' /proc/$pid/status)"
as_user cp -r {mnt}/model/. {read}/
echo "== unmount"; as_user {world}/shardfs unmount {mnt}
trap - EXIT
if grep -q " {mnt} " /proc/self/mounts; then echo "still mounted" >&2; exit 1; fi
"""
    r = run_isolated(script, timeout=180)
    log = default_log_path(mnt, uid=user.uid, home=str(home))
    log_text = log.read_text() if log.exists() else "(no log)"
    assert r.returncode == 0, describe(r) + f"\n--- daemon log {log} ---\n{log_text}"

    assert re.search(rf"fuse\.shardfs \S*\buser_id={user.uid}\b", r.stdout), f"not a user mount:\n{r.stdout}"
    assert f"daemon uid {user.uid}\n" in r.stdout, f"the daemon does not run as {user.name}:\n{r.stdout}"
    assert f"log: {log}" in r.stdout, f"status does not name the log {log}:\n{r.stdout}"

    # The daemon's log: the user's own, private, named after the whole mount path.
    assert log.exists(), f"no log at {log}:\n{describe(r)}"
    info = log.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (user.uid, 0o600), f"{log}: uid {info.st_uid}, mode {oct(info.st_mode)}"
    assert log.parent.stat().st_mode & 0o777 == 0o700
    assert f"mounted {mnt}:" in log_text, log_text
    readahead = [line for line in log_text.splitlines() if "readahead" in line]
    assert len(readahead) == 1 and "left at the kernel's default" in readahead[0], (
        f"readahead tuning, which needs root, should be skipped with one log line:\n{log_text}")

    # What the user read through the mount is what convert writes (CRC fields aside).
    expected = tmp_path / "expected"
    e = shardfs.run("convert", EXAMPLE, expected, *LAYOUT)
    assert e.returncode == 0, e.describe()
    assert_read_as_converted(read, expected)


@pytest.mark.mount
def test_a_user_without_a_home_still_mounts(user, world, shardfs):
    """A service account, or a node whose home is not mounted yet: the usual
    log directory cannot be made, so the daemon logs to a private one it can
    make, says where, and mounts."""
    shutil.copy2(shardfs.require(), world / "shardfs")
    mnt = world / "mnt"
    layout = " ".join(LAYOUT)
    script = f"""
open_fuse_to_all {world}
as_user() {{ setpriv --reuid={user.uid} --regid={user.gid} --init-groups \\
    env -i HOME=/nonexistent PATH=/usr/local/bin:/usr/bin:/bin "$@"; }}
as_user {world}/shardfs mount {world}/src {mnt} {layout}
trap 'as_user {world}/shardfs unmount {mnt} --lazy >/dev/null 2>&1 || true' EXIT
grep " {mnt} " /proc/self/mounts
as_user {world}/shardfs status {mnt}
as_user {world}/shardfs unmount {mnt}
trap - EXIT
"""
    r = run_isolated(script, timeout=180)
    assert r.returncode == 0, describe(r)
    assert "/nonexistent/.local/state/shardfs" in r.stderr and "logging to /tmp/shardfs-" in r.stderr, describe(r)
    log = Path(re.search(r"logging to (\S+) instead", r.stderr).group(1))
    assert f"log: {log}" in r.stdout, describe(r)
    info = log.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (user.uid, 0o600), f"{log}: uid {info.st_uid}, mode {oct(info.st_mode)}"
    assert log.parent.stat().st_mode & 0o777 == 0o700 and log.parent.stat().st_uid == user.uid
    assert f"mounted {mnt}:" in log.read_text()
    shutil.rmtree(log.parent, ignore_errors=True)


def test_convert_into_a_directory_the_user_cannot_write(user, world, shardfs):
    """The error says what the system said ("Permission denied"), naming the
    directory, and nothing is written (it once read "Unknown error 513")."""
    shutil.copy2(shardfs.require(), world / "shardfs")
    locked = world / "locked"
    locked.mkdir()
    locked.chmod(0o755)  # root's, not the user's
    r = subprocess.run(["setpriv", f"--reuid={user.uid}", f"--regid={user.gid}", "--init-groups",
                        "env", "-i", "HOME=/nonexistent", "PATH=/usr/bin:/bin",
                        str(world / "shardfs"), "convert", str(world / "src"), str(locked / "out"), "--tp-size", "2"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert f"{locked}/out: mkdir failed: Permission denied (errno 13)" in r.stderr, r.stderr
    assert not (locked / "out").exists()
