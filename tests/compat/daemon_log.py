"""Where a background daemon logs by default, as README and `mount --help`
state it, written out here independently of the Swift code."""
from __future__ import annotations

import os
import socket
from pathlib import Path

_KEPT = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


def _encode(raw: bytes) -> str:
    return "".join(chr(b) if b in _KEPT else f"%{b:02X}" for b in raw)


def default_log_name(mountpoint: str | Path, host: str | None = None) -> str:
    """The whole mount path without its leading '/', then '@' and the host,
    every byte but letters, digits, '-', '.' and '_' percent-encoded."""
    path = str(mountpoint).lstrip("/").encode()
    return f"{_encode(path)}@{_encode((host or socket.gethostname()).encode())}.log"


def default_log_dir(uid: int | None = None, home: str | None = None, xdg_state_home: str | None = None) -> Path:
    uid = os.geteuid() if uid is None else uid
    if uid == 0:
        return Path("/var/log/shardfs")
    if xdg_state_home:
        return Path(xdg_state_home) / "shardfs"
    return Path(home) / ".local/state/shardfs"


def default_log_path(mountpoint: str | Path, **where) -> Path:
    return default_log_dir(**where) / default_log_name(mountpoint)
