"""Running a scenario in a private mount namespace (`unshare -m`): what it
mounts there, a tmpfs over the Swift toolchain or a 0666 /dev/fuse, is gone
for everyone else, and is gone for good once its last process ends."""
from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

# A scenario script starts with these: `hide_toolchain` puts an empty tmpfs
# over /opt/swift, so a binary that still needed a toolchain library fails;
# `open_fuse_to_all` binds a 0666 copy of /dev/fuse's node over it, as a
# cluster node that lets users mount has it (here /dev/fuse is root's only).
PRELUDE = r"""
set -euo pipefail
hide_toolchain() { if [ -d /opt/swift ]; then mount -t tmpfs -o size=1m,mode=0755 shardfs-test-empty /opt/swift; fi; }
open_fuse_to_all() { mknod -m 0666 "$1/fuse" c 10 229 && mount --bind "$1/fuse" /dev/fuse; }
"""


def run_isolated(script: str, timeout: float = 180) -> subprocess.CompletedProcess:
    """Runs `script` under bash as root in a new private mount namespace."""
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", PRELUDE + script],
        capture_output=True, text=True, timeout=timeout, errors="replace",
    )


def describe(p: subprocess.CompletedProcess) -> str:
    return f"exit status {p.returncode}\n--- stderr ---\n{p.stderr[-6000:]}\n--- stdout ---\n{p.stdout[-3000:]}"


def kill_daemons(mountpoint: Path) -> list[int]:
    """Kills any shardfs daemon still serving `mountpoint` (a scenario that
    failed half-way); its namespace, and the mount, end with it."""
    killed = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mountpoint).encode() in argv and any(a.endswith(b"shardfs") for a in argv[:1]):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed.append(int(entry.name))
            except ProcessLookupError:
                pass
    if killed:
        time.sleep(0.5)
    return killed
