"""ShardFS from Python: NxD rank files made on demand from a Hugging Face model.

A thin layer over the ``shardfs`` binary this package installs (the same
self-contained binary as the cluster tarball): every call runs it, and every
refusal it makes raises :class:`ShardFSError` with its message and exit
status. Layout keywords follow the command line's flags, ``--tp-size`` being
``tp_size``; a flag without a value (``--qkv-linear``) takes ``True``.

The HyperPod tutorial's Llama-3-70B layout, mounted for a training job::

    import shardfs

    layout = dict(tp_size=32, pp_size=8, kv_size_multiplier=4, qkv_linear=True, fuse_qkv=True, dtype="float32")
    with shardfs.mount("/fsx/ubuntu/Meta-Llama-3-70B", "/mnt/llama3-70b-tp32pp8", **layout) as mnt:
        ...  # MNT/model/dp_rank_00_tp_rank_YY_pp_rank_ZZ.pt, read by the trainer

or written once, or looked at first::

    shardfs.convert("/fsx/ubuntu/Meta-Llama-3-70B", "/fsx/ubuntu/llama3_70B/pretrained_weight", **layout)
    plan = shardfs.plan("/fsx/ubuntu/Meta-Llama-3-70B", **layout)
    print(len(plan["files"]), "rank files")
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from typing import Any, Dict, Iterator, List, Optional, Union

__all__ = ["ShardFSError", "binary", "version", "plan", "convert", "mount", "unmount", "status", "verify"]

__version__ = "0.0.0"  # written by scripts/wheel.sh from the repository's VERSION

Path = Union[str, "os.PathLike[str]"]
Flag = Union[str, int, bool, None]


class ShardFSError(RuntimeError):
    """The ``shardfs`` binary refused or failed: its message (what it printed,
    naming the file, tensor, field or flag at fault) and its exit status."""

    def __init__(self, command: List[str], returncode: int, message: str) -> None:
        self.command = command
        self.returncode = returncode
        self.message = message.strip()
        super().__init__(f"shardfs {' '.join(command[1:3])}... exited {returncode}: {self.message}")


def binary() -> str:
    """The ``shardfs`` binary: ``$SHARDFS_BIN`` when set, else the one this
    package installed into the environment's scripts folder, else the first
    on ``PATH``."""
    given = os.environ.get("SHARDFS_BIN")
    if given:
        return given
    name = "shardfs"
    candidates = [sysconfig.get_path("scripts")]
    user_scheme = f"{os.name}_user"
    if user_scheme in sysconfig.get_scheme_names():
        candidates.append(sysconfig.get_path("scripts", scheme=user_scheme))
    candidates.append(os.path.dirname(sys.executable))
    for folder in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    found = shutil.which(name)
    if found:
        return found
    raise FileNotFoundError("no shardfs binary: reinstall the shardfs package, or set SHARDFS_BIN")


def _flags(options: Dict[str, Flag]) -> List[str]:
    """``tp_size=32`` -> ``--tp-size 32``; ``qkv_linear=True`` -> ``--qkv-linear``;
    False and None leave a flag out. Unknown names reach the binary, which
    refuses them by name."""
    args: List[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        else:
            args += [flag, os.fspath(value) if isinstance(value, os.PathLike) else str(value)]
    return args


def _run(args: List[str], *, stream_stderr: bool = False) -> subprocess.CompletedProcess:
    """Runs the binary; stderr goes to this process's when ``stream_stderr``
    (a progress display), else it is kept for the error."""
    command = [binary()] + args
    process = subprocess.run(command, stdout=subprocess.PIPE, stderr=None if stream_stderr else subprocess.PIPE,
                             text=True, errors="replace")
    if process.returncode != 0:
        message = process.stderr if process.stderr else process.stdout
        raise ShardFSError(command, process.returncode, message or "(see its output above)")
    return process


def version() -> str:
    """``shardfs 0.1.0 (commit ..., DATE; libfuse 3.14.0)``."""
    return _run(["--version"]).stdout.strip()


def plan(src: Path, **layout: Flag) -> Dict[str, Any]:
    """Every file of a layout of ``src`` (a Hugging Face model directory, or an
    NxD training tag with ``config=...``), its size and tensors, and where each
    comes from: ``shardfs plan SRC --json``, parsed. Reads headers only.

    >>> p = shardfs.plan("/fsx/ubuntu/Meta-Llama-3-70B", tp_size=32, pp_size=8, kv_size_multiplier=4,
    ...                  qkv_linear=True, fuse_qkv=True)  # doctest: +SKIP
    >>> len(p["files"])  # doctest: +SKIP
    256
    """
    return json.loads(_run(["plan", os.fspath(src), *_flags(layout), "--json"]).stdout)


def convert(src: Path, out: Path, **options: Flag) -> None:
    """Writes the layout's files under ``out`` (``OUT/model/``, or a Hugging Face
    checkpoint with ``format="hf"``): ``shardfs convert SRC OUT``. Options are
    the layout flags and ``jobs``, ``part`` ("3/16"), ``force``. When this
    process's stderr is a terminal, the binary's progress shows there.

    >>> shardfs.convert("/fsx/ubuntu/Meta-Llama-3-70B", "/fsx/ubuntu/llama3_70B/pretrained_weight",
    ...                 tp_size=32, pp_size=8, kv_size_multiplier=4, qkv_linear=True, fuse_qkv=True,
    ...                 dtype="float32")  # doctest: +SKIP
    """
    interactive = sys.stderr is not None and sys.stderr.isatty()
    _run(["convert", os.fspath(src), os.fspath(out), *_flags(options)], stream_stderr=interactive)


def status(mnt: Path) -> Dict[str, Any]:
    """What a mount serves and how far ``persist_to`` has come: ``shardfs status MNT --json``."""
    return json.loads(_run(["status", os.fspath(mnt), "--json"]).stdout)


def unmount(mnt: Path, lazy: bool = False) -> None:
    """Unmounts ``mnt`` (also after its daemon died); ``lazy`` detaches it
    even while files are open."""
    _run(["unmount", os.fspath(mnt), *_flags({"lazy": lazy})])


@contextlib.contextmanager
def mount(src: Path, mnt: Path, *, wait: float = 120, **options: Flag) -> Iterator[str]:
    """Mounts the layout of ``src`` on ``mnt`` (an empty directory), waits until
    it serves (``shardfs status MNT --wait``), yields the mount point, and
    unmounts on leaving the block, also when it is left by an exception.
    Options are the layout flags and the mount's (``persist_to``,
    ``page_cache``, ``log_file``, ...).

    >>> with shardfs.mount("/fsx/ubuntu/Meta-Llama-3-70B", "/mnt/llama3-70b-tp32pp8", tp_size=32, pp_size=8,
    ...                    kv_size_multiplier=4, qkv_linear=True, fuse_qkv=True, dtype="float32") as mnt:
    ...     state = torch.load(f"{mnt}/model/dp_rank_00_tp_rank_00_pp_rank_00.pt", mmap=True)  # doctest: +SKIP
    """
    point = os.fspath(mnt)
    _run(["mount", os.fspath(src), point, *_flags(options)])
    try:
        _run(["status", point, "--wait", str(int(wait))])
        yield point
    finally:
        try:
            unmount(point)
        except ShardFSError:
            # Still busy (a file left open): detach now; it goes when the file closes.
            unmount(point, lazy=True)


def verify(src: Path, tag: Path, **layout: Flag) -> Dict[str, Any]:
    """Checks that ``tag``'s rank files hold exactly the layout of ``src``:
    ``shardfs verify SRC TAG --json``, parsed. A tag that is wrong is a
    report (its ``files`` name each problem), not an exception; a refusal
    (no such directory, a bad layout) raises :class:`ShardFSError`."""
    command = [binary(), "verify", os.fspath(src), os.fspath(tag), *_flags(layout), "--json"]
    process = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace")
    if process.stdout.strip():
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(process.stdout)
    raise ShardFSError(command, process.returncode, process.stderr or process.stdout)
