"""ShardFS from Python: NxD rank files made on demand from a Hugging Face model.

A layer over the ``shardfs`` binary this package installs (the same
self-contained binary as the cluster tarball). Every function runs it through
one runner:

- a refusal or failure raises :class:`ShardFSError` (a ``RuntimeError``) with
  the command, its exit status, its message and its whole stderr;
- what the binary tells on the way (``note:``, ``warning:``, ``source:``,
  progress) goes to ``logging.getLogger("shardfs")`` as it comes: warnings
  at ``WARNING``, notes at ``INFO``, one line per file written at ``DEBUG``;
- paths are ``str`` or any ``os.PathLike[str]`` (``pathlib.Path``), also as
  option values (``persist_to=Path(...)``).

Keywords follow the command line's flags, ``--tp-size`` being ``tp_size``;
a flag without a value (``--qkv-linear``) takes ``True``; ``False`` and
``None`` leave a flag out; a name the binary does not know is refused by it,
by name. :class:`Layout` types the layout and source keywords, for a layout
kept in a variable.

The HyperPod tutorial's flow: a Hugging Face Llama-3-8B mounted as NxD rank
files for a training job::

    import logging, shardfs

    logging.basicConfig(level=logging.INFO)      # the binary's notes and warnings
    layout = shardfs.Layout(tp_size=32, kv_size_multiplier=4, qkv_linear=True, fuse_qkv=True, dtype="float32")
    with shardfs.mount("Llama-3-8B", "/mnt/ranks", **layout, timeout=120) as mnt:
        print(mnt.status()["files"], "rank files under", mnt.path / "model", "log:", mnt.log_path)
        ...  # the trainer reads /mnt/ranks/model/dp_rank_00_tp_rank_YY_pp_rank_00.pt

or written once, looked at first, and checked::

    shardfs.convert("Llama-3-8B", "llama3_8B/pretrained_weight", **layout)
    plan = shardfs.plan("Llama-3-8B", **layout)
    report = shardfs.verify("Llama-3-8B", "llama3_8B/pretrained_weight", **layout)
    assert report["ok"], report["summary"]
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
import warnings
from pathlib import Path
from types import TracebackType
from collections import deque
from typing import IO, Any, Callable, Deque, Dict, List, Mapping, NamedTuple, Optional, Sequence, Type, TypedDict, Union

__all__ = [
    "DEFAULT_TIMEOUT", "Layout", "Mount", "MountStatus", "PersistStatus", "SourceServing", "ShardFSError", "ShardFSTimeout", "StrPath", "Option",
    "binary", "version", "plan", "convert", "mount", "unmount", "status", "verify", "logger",
]

__version__ = "0.0.0"  # written by scripts/wheel.sh from the repository's VERSION

#: A path argument: ``str`` or any ``os.PathLike[str]`` (``pathlib.Path``).
StrPath = Union[str, "os.PathLike[str]"]
#: A flag's value: ``True`` for a flag without a value, ``False``/``None`` to leave it out.
Option = Union[str, int, float, bool, "os.PathLike[str]", None]

#: Seconds :func:`mount` waits for the daemon to serve, unless told otherwise.
DEFAULT_TIMEOUT = 120.0

#: Where the binary's notes, warnings and progress go (``logging.getLogger("shardfs")``).
logger = logging.getLogger("shardfs")
logger.addHandler(logging.NullHandler())


class ShardFSError(RuntimeError):
    """The ``shardfs`` binary refused or failed.

    ``message`` is what it said of the failure (the ``shardfs: error:`` line,
    naming the file, tensor, field or flag at fault), ``returncode`` its exit
    status (negative: killed by that signal), ``command`` the whole command
    line, ``stderr`` and ``stdout`` all it printed, ``log_path`` a mount
    daemon's log when one is known."""

    def __init__(self, command: Sequence[str], returncode: int, message: str, *, stderr: str = "",
                 stdout: str = "", log_path: Optional[Path] = None) -> None:
        self.command: List[str] = list(command)
        self.returncode = returncode
        self.message = message.strip()
        self.stderr = stderr
        self.stdout = stdout
        self.log_path = log_path
        name = " ".join(["shardfs", *self.command[1:2]])
        super().__init__(f"{name} exited {returncode}: {self.message}")


class ShardFSTimeout(ShardFSError, TimeoutError):
    """:func:`mount` gave up waiting for the daemon to serve (``timeout``).
    What it had started is gone by then: no mount, no daemon."""

    def __init__(self, command: Sequence[str], returncode: int, message: str, *, stderr: str = "",
                 stdout: str = "", log_path: Optional[Path] = None) -> None:
        ShardFSError.__init__(self, command, returncode, message, stderr=stderr, stdout=stdout, log_path=log_path)


class Layout(TypedDict, total=False):
    """The layout and source keywords, as the command line's flags
    (``shardfs plan --help``): a layout to keep and pass to every function,
    checked by a type checker name by name::

        layout = shardfs.Layout(tp_size=32, kv_size_multiplier=4, qkv_linear=True, dtype="float32")
        shardfs.convert("Llama-3-8B", "out", **layout)
    """
    tp_size: int
    pp_size: int
    virtual_pp_size: int
    kv_size_multiplier: int
    qkv_linear: bool
    fuse_qkv: bool
    hw_backend: str  # trn1, trn2
    dtype: str  # float32, bfloat16, ...
    format: str  # pt, xser, hf, dcp
    dp_size: int
    dcp_shards: int
    max_shard_size: Union[str, int]  # "5GB", or bytes
    config: StrPath  # an NxD tag's or a DCP folder's model: its config.json, or a directory holding it
    source_hw_backend: str
    weights_only: bool
    optimizer_groups: str


class _PersistKeys(TypedDict):
    state: str  # writing, verifying, done, failed, stopped
    directory: str
    part: str
    filesTotal: int
    filesDone: int
    filesResumed: int
    bytesTotal: int
    bytesDone: int
    bytesPerSecond: float
    backingOff: bool
    filesServedFromDirectory: int


class PersistStatus(_PersistKeys, total=False):
    """``status()["persist"]``: how far ``persist_to`` has come; ``etaSeconds``
    while writing, ``lastError`` after one."""
    etaSeconds: float
    lastError: str


class SourceServing(TypedDict):
    """``status()["sources"]``: how source bytes are served. ``splicing`` is
    the ``splice_sources`` option (always, leased, never); ``leased`` sources
    are read under a read lease (spliced), ``unleased`` ones (a network or
    FUSE file system, a file open for writing) as ``splicing`` says, with
    the reasons for a few in ``unleasedExamples``; ``leasesBroken`` counts
    sources another process opened for writing."""
    splicing: str
    leased: int
    unleased: int
    unleasedExamples: List[str]
    leasesBroken: int


class _MountStatusKeys(TypedDict):
    mountpoint: str
    source: str
    layout: str
    pid: int
    files: int
    bytes: int
    readsServed: int
    bytesServed: int


class MountStatus(_MountStatusKeys, total=False):
    """What a mount serves: ``shardfs status MNT --json``, parsed. ``persist``
    is there with ``persist_to``, ``log`` for a daemon in the background,
    ``sources`` from every daemon of this version."""
    persist: PersistStatus
    log: str
    sources: SourceServing


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


def _flags(options: Mapping[str, Option]) -> List[str]:
    """``tp_size=32`` -> ``--tp-size 32``; ``qkv_linear=True`` -> ``--qkv-linear``;
    ``persist_to=Path(d)`` -> ``--persist-to d``; False and None leave a flag
    out. Unknown names reach the binary, which refuses them by name."""
    args: List[str] = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            args.append(flag)
        elif isinstance(value, os.PathLike):
            args += [flag, os.fspath(value)]
        else:
            args += [flag, str(value)]
    return args


# ---------------------------------------------------------------------------
# The runner: every call of the binary goes through _start and _finish.

_LEVELS = {"error": logging.ERROR, "warning": logging.WARNING, "note": logging.INFO, "hint": logging.INFO}
# swift-log's stream format, as a daemon in the foreground logs:
# "2025-01-01T00:00:00+0000 info shardfs : [ShardFS] mounted ..."
_SWIFT_LOG = re.compile(r"^\S+ (trace|debug|info|notice|warning|error|critical) shardfs ?:(?: \[[^\]]*\])? ?(.*)$")
_SWIFT_LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "notice": logging.INFO,
                 "warning": logging.WARNING, "error": logging.ERROR, "critical": logging.CRITICAL}
# One line per file written or checked: convert's, and a progress bar's.
_PER_FILE = re.compile(r"^(wrote .* \[\d+/\d+\]|\[[#.]+\] )")


def _log_line(line: str) -> None:
    """One stderr line of the binary, to ``logger`` at its level. A line of
    ``shardfs: error:`` goes to DEBUG: it is the message of the exception
    raised for it."""
    text = line.strip()
    if not text:
        return
    swift = _SWIFT_LOG.match(text)
    if swift:
        logger.log(_SWIFT_LEVELS[swift.group(1)], "%s", swift.group(2))
        return
    if text.startswith("shardfs: "):
        text = text[len("shardfs: "):]
    word, colon, rest = text.partition(": ")
    if colon and word in _LEVELS:
        logger.log(logging.DEBUG if word == "error" else _LEVELS[word], "%s", rest)
    elif _PER_FILE.match(text):
        logger.debug("%s", text)
    else:
        logger.info("%s", text)


class _Result(NamedTuple):
    command: List[str]
    returncode: int
    stdout: str
    stderr: str


class _Running:
    """A started command: its stdout collected, each stderr line logged as it
    comes and kept, by threads of their own (neither pipe can fill and block it)."""

    def __init__(self, args: Sequence[str], *, stdout: bool = True, stderr: bool = True,
                 stderr_to: Optional[IO[bytes]] = None) -> None:
        self.command = [binary(), *args]
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE if stdout else stderr_to,
            stderr=subprocess.PIPE if stderr else (subprocess.STDOUT if stderr_to is not None else None))
        self.stdout_chunks: List[bytes] = []
        # The last lines only: a daemon in the foreground logs for as long as it serves.
        self.stderr_lines: Deque[str] = deque(maxlen=5000)
        self.threads: List[threading.Thread] = []
        if self.process.stdout is not None:
            self._thread(self._read_stdout, self.process.stdout)
        if self.process.stderr is not None:
            self._thread(self._read_stderr, self.process.stderr)

    def _thread(self, target: Callable[[IO[bytes]], None], pipe: IO[bytes]) -> None:
        thread = threading.Thread(target=target, args=(pipe,), name=f"shardfs-{self.process.pid}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _read_stdout(self, pipe: IO[bytes]) -> None:
        with pipe:
            for chunk in iter(lambda: pipe.read(1 << 16), b""):
                self.stdout_chunks.append(chunk)

    def _read_stderr(self, pipe: IO[bytes]) -> None:
        with pipe:
            for raw in pipe:
                line = raw.decode(errors="replace").rstrip("\r\n")
                self.stderr_lines.append(line)
                _log_line(line.rpartition("\r")[2])  # a terminal bar's last redraw

    def join(self, grace: float = 10.0) -> None:
        """Waits for the output after the process ended; a descendant still
        holding a pipe (what a daemon should not do) is not waited for longer
        than ``grace``."""
        end = time.monotonic() + grace
        for thread in self.threads:
            thread.join(max(0.0, end - time.monotonic()))

    def result(self) -> _Result:
        returncode = self.process.returncode
        return _Result(self.command, -1 if returncode is None else returncode,
                       b"".join(self.stdout_chunks).decode(errors="replace"), "\n".join(self.stderr_lines))


def _error(result: _Result, *, log_path: Optional[Path] = None, kind: Type[ShardFSError] = ShardFSError,
           message: Optional[str] = None) -> ShardFSError:
    if message is None:
        said = [line for line in result.stderr.splitlines() if line.startswith("shardfs: error: ")]
        message = said[-1][len("shardfs: error: "):] if said else (result.stderr.strip() or result.stdout.strip()
                                                                    or "(no message; see its output above)")
    return kind(result.command, result.returncode, message, stderr=result.stderr, stdout=result.stdout, log_path=log_path)


def _run(args: Sequence[str], *, check: bool = True, passthrough_stderr: bool = False,
         timeout: Optional[float] = None) -> _Result:
    """Runs the binary to its end; raises :class:`ShardFSError` unless it
    exits 0 (with ``check``), :class:`ShardFSTimeout` once it has run
    ``timeout`` seconds (then stopped, with all it started).
    ``passthrough_stderr`` leaves its stderr on this process's (a progress
    bar on a terminal) instead of logging it."""
    running = _Running(args, stderr=not passthrough_stderr)
    try:
        running.process.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop_tree(running.process)
        running.join(2.0)
        raise _error(running.result(), kind=ShardFSTimeout,
                     message=f"did not finish within {timeout:g} s; stopped it") from None
    except BaseException:
        _stop_tree(running.process)
        raise
    running.join()
    result = running.result()
    if check and result.returncode != 0:
        raise _error(result)
    return result


# ---------------------------------------------------------------------------
# Processes: a timed-out handshake leaves none behind.

def _stat(pid: int) -> Optional[List[str]]:
    """/proc/PID/stat's fields after the command name (state, ppid, ...)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().decode(errors="replace").rpartition(")")[2].split()
    except OSError:
        return None


def _descendants(root: int) -> Dict[int, str]:
    """Every live process below ``root``, with its start time (so that a
    reused pid is never signalled)."""
    children: Dict[int, List[int]] = {}
    started: Dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat(int(entry))
        if fields is None or len(fields) < 20:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
        started[int(entry)] = fields[19]
    found: Dict[int, str] = {}
    queue = list(children.get(root, []))
    while queue:
        pid = queue.pop()
        if pid in found or pid not in started:
            continue
        found[pid] = started[pid]
        queue += children.get(pid, [])
    return found


def _alive(pid: int, started: str) -> bool:
    fields = _stat(pid)
    return fields is not None and len(fields) >= 20 and fields[19] == started and fields[0] not in ("Z", "X")


def _signal(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _stop_tree(process: "subprocess.Popen[bytes]", grace: float = 5.0) -> None:
    """Ends ``process`` and everything it started (a daemon in a session of
    its own included): frozen first so that it starts nothing more, its
    descendants asked to stop (a daemon that mounted unmounts on SIGTERM),
    killed after ``grace`` seconds."""
    if process.poll() is None:
        _signal(process.pid, signal.SIGSTOP)
    family = _descendants(process.pid)
    for pid in family:
        _signal(pid, signal.SIGTERM)
    if process.poll() is None:
        _signal(process.pid, signal.SIGTERM)
        _signal(process.pid, signal.SIGCONT)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    end = time.monotonic() + grace
    while any(_alive(pid, started) for pid, started in family.items()) and time.monotonic() < end:
        time.sleep(0.05)
    for pid, started in family.items():
        if _alive(pid, started):
            _signal(pid, signal.SIGKILL)


def _is_mounted(path: str) -> bool:
    """Whether a ShardFS mount is at ``path`` (an absolute path), as /proc/mounts says."""
    escaped = path.replace("\\", "\\134").replace(" ", "\\040").replace("\t", "\\011").replace("\n", "\\012")
    try:
        with open("/proc/mounts") as f:
            return any(fields[1] == escaped and fields[2] == "fuse.shardfs"
                       for fields in (line.split() for line in f) if len(fields) >= 3)
    except OSError:
        return False


def _clear_mount(path: str) -> None:
    """Unmounts what is left at ``path`` (a daemon killed after mounting leaves a dead mount)."""
    for lazy in (False, True):
        if not _is_mounted(path):
            return
        try:
            _run(["unmount", path, *_flags({"lazy": lazy})])
        except ShardFSError:
            pass


# ---------------------------------------------------------------------------
# The API

def version() -> str:
    """``shardfs 0.1.0 (commit ..., DATE; libfuse 3.14.0)``."""
    return _run(["--version"]).stdout.strip()


def plan(src: StrPath, **layout: Option) -> Dict[str, Any]:
    """Every file of a layout of ``src`` (a Hugging Face model directory, or an
    NxD training tag with ``config=...``), its size and tensors, and where each
    comes from: ``shardfs plan SRC --json``, parsed. Reads headers only.

    >>> p = shardfs.plan("Llama-3-8B", tp_size=32, kv_size_multiplier=4, qkv_linear=True)  # doctest: +SKIP
    >>> len(p["files"])  # doctest: +SKIP
    32
    """
    parsed: Dict[str, Any] = json.loads(_run(["plan", os.fspath(src), *_flags(layout), "--json"]).stdout)
    return parsed


def convert(src: StrPath, out: StrPath, *, progress: bool = False, **options: Option) -> None:
    """Writes the layout's files under ``out`` (``OUT/model/``, or a Hugging Face
    checkpoint with ``format="hf"``): ``shardfs convert SRC OUT``. Options are
    the layout flags and ``jobs``, ``part`` ("3/16"), ``force``.

    The binary's notes, warnings and one line per file written go to the
    ``shardfs`` logger; with ``progress=True`` its stderr is this process's
    instead (a progress bar on a terminal), and nothing is logged.
    """
    _run(["convert", os.fspath(src), os.fspath(out), *_flags(options)], passthrough_stderr=progress)


def verify(src: StrPath, tag: StrPath, **layout: Option) -> Dict[str, Any]:
    """Checks that ``tag``'s files hold exactly the layout of ``src``:
    ``shardfs verify SRC TAG --json``, parsed. A tag that is wrong is a report
    (``report["ok"]`` False, its ``files`` naming each problem), not an
    exception; a refusal (no such directory, a bad layout) raises
    :class:`ShardFSError`."""
    result = _run(["verify", os.fspath(src), os.fspath(tag), *_flags(layout), "--json"], check=False)
    report: Optional[Dict[str, Any]] = None
    if result.returncode in (0, 1) and result.stdout.strip():
        try:
            report = json.loads(result.stdout)
        except json.JSONDecodeError:
            report = None
    if report is None or not isinstance(report.get("ok"), bool) or report["ok"] != (result.returncode == 0):
        raise _error(result)
    return report


def status(mnt: StrPath) -> MountStatus:
    """What a mount serves and how far ``persist_to`` has come:
    ``shardfs status MNT --json``, parsed."""
    parsed: MountStatus = json.loads(_run(["status", os.fspath(mnt), "--json"]).stdout)
    return parsed


def unmount(mnt: StrPath, lazy: bool = False) -> None:
    """Unmounts ``mnt`` (also after its daemon died); ``lazy`` detaches it
    even while files are open."""
    _run(["unmount", os.fspath(mnt), *_flags({"lazy": lazy})])


class Mount:
    """A mount made by :func:`mount`, serving until :meth:`unmount` (or the
    end of a ``with`` block).

    ``path`` is the mount point (absolute), ``source`` what it serves from,
    ``log_path`` the daemon's log (``None`` for ``foreground=True`` without
    ``log_file``: its lines go to the ``shardfs`` logger), ``pid`` the
    daemon's. ``os.fspath(mount)`` and ``str(mount)`` are the mount point,
    and ``mount / "model"`` is ``mount.path / "model"``."""

    def __init__(self, path: Path, source: Path, log_path: Optional[Path], pid: int,
                 process: Optional[_Running] = None) -> None:
        self.path = path
        self.source = source
        self.log_path = log_path
        self.pid = pid
        self._process = process
        self._mounted = True

    def __repr__(self) -> str:
        state = "mounted" if self._mounted else "unmounted"
        return f"<shardfs.Mount {str(self.path)!r} of {str(self.source)!r}, daemon {self.pid}, {state}>"

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __truediv__(self, other: StrPath) -> Path:
        return self.path / other

    @property
    def mounted(self) -> bool:
        """Whether this mount is still there (as /proc/mounts says)."""
        return self._mounted and _is_mounted(str(self.path))

    def status(self) -> MountStatus:
        """What this mount serves: ``shardfs status MNT --json``, parsed."""
        return status(self.path)

    def unmount(self, lazy: bool = False) -> None:
        """Unmounts (again: nothing); ``lazy`` detaches it even while files are
        open. A daemon in the foreground is waited for."""
        if self._mounted and _is_mounted(str(self.path)):
            unmount(self.path, lazy=lazy)
        self._mounted = False
        process, self._process = self._process, None
        if process is None:
            return
        if lazy:
            # It serves the files still open, and ends when they close.
            threading.Thread(target=_reap, args=(process, None), name=f"shardfs-{process.process.pid}", daemon=True).start()
        else:
            _reap(process, 30.0)

    def __enter__(self) -> "Mount":
        return self

    def __exit__(self, kind: Optional[Type[BaseException]], value: Optional[BaseException],
                 traceback: Optional[TracebackType]) -> None:
        try:
            self.unmount()
        except ShardFSError:
            # Still busy (a file left open): detach now; it goes when the file closes.
            self.unmount(lazy=True)


def _reap(process: _Running, timeout: Optional[float]) -> None:
    """Waits for a daemon in the foreground to end after its unmount; one still
    there after ``timeout`` seconds is stopped."""
    try:
        process.process.wait(timeout)
    except subprocess.TimeoutExpired:
        _stop_tree(process.process)
    process.join()


def mount(src: StrPath, mnt: StrPath, *, timeout: Optional[float] = DEFAULT_TIMEOUT, foreground: bool = False,
          wait: Optional[float] = None, **options: Option) -> Mount:
    """Mounts the layout of ``src`` on ``mnt`` (an empty directory) and returns
    once it serves, as a :class:`Mount` (a context manager that unmounts on
    leaving the block, also when it is left by an exception). Options are the
    layout flags and the mount's (``persist_to``, ``part``, ``page_cache``,
    ``log_file``, ``allow_other``, ...).

    ``timeout`` bounds the wait, in seconds (float; ``None``: no bound): a
    daemon that has not said it serves by then is stopped, and any mount it
    made removed, before :class:`ShardFSTimeout` is raised. ``wait`` is the
    older name of ``timeout``.

    By default the daemon serves in the background, logging to ``log_path``.
    With ``foreground=True`` it is a child of this process (the command
    line's ``--foreground``) whose log lines go to the ``shardfs`` logger,
    or to ``log_file`` when given; it still returns once the mount serves.

    >>> with shardfs.mount("Llama-3-8B", "/mnt/ranks", tp_size=32, kv_size_multiplier=4,
    ...                    qkv_linear=True, fuse_qkv=True, dtype="float32") as mnt:
    ...     state = torch.load(mnt / "model/dp_rank_00_tp_rank_00_pp_rank_00.pt", mmap=True)  # doctest: +SKIP
    """
    if wait is not None:
        warnings.warn("shardfs.mount(wait=) is now timeout=", DeprecationWarning, stacklevel=2)
        if timeout == DEFAULT_TIMEOUT:
            timeout = wait
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout must be a positive number of seconds or None, not {timeout!r}")
    source, point = Path(os.path.abspath(src)), Path(os.path.abspath(mnt))
    deadline = None if timeout is None else time.monotonic() + timeout
    if foreground:
        return _mount_foreground(source, point, timeout, deadline, options)
    running = _Running(["mount", str(source), str(point), *_flags(options)])
    log_given = options.get("log_file")
    log_path = Path(os.path.abspath(log_given)) if isinstance(log_given, (str, os.PathLike)) else None
    try:
        running.process.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        _stop_tree(running.process)
        _clear_mount(str(point))
        running.join(2.0)
        raise _error(running.result(), kind=ShardFSTimeout, log_path=log_path,
                     message=f"the daemon did not serve {point} within {timeout:g} s; stopped it, nothing is mounted"
                             + (f" (log: {log_path})" if log_path else "")) from None
    except BaseException:
        _stop_tree(running.process)
        _clear_mount(str(point))
        raise
    running.join()
    result = running.result()
    said = re.search(r"\(log: (.*)\)\s*$", result.stdout)
    if said:
        log_path = Path(said.group(1))
    if result.returncode != 0:
        raise _error(result, log_path=log_path)
    return _served(source, point, log_path, deadline, None)


def _served(source: Path, point: Path, log_path: Optional[Path], deadline: Optional[float],
            process: Optional[_Running]) -> Mount:
    """The mount's status read once (within what is left of the deadline) for
    its daemon and log; unmounted again should that fail."""
    left = 60.0 if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        result = _run(["status", str(point), "--json", "--wait", f"{min(left, 86_400.0):.3f}"], timeout=left + 10.0)
        state: MountStatus = json.loads(result.stdout)
    except BaseException:
        if process is not None:
            _stop_tree(process.process)
        _clear_mount(str(point))
        raise
    log = state.get("log")
    return Mount(point, source, Path(log) if log else log_path, state["pid"], process)


def _mount_foreground(source: Path, point: Path, timeout: Optional[float], deadline: Optional[float],
                      options: Dict[str, Option]) -> Mount:
    """``shardfs mount ... --foreground`` as a child of this process: ready
    once /proc/mounts shows the mount; stopped should it end or time out first."""
    log_given = options.pop("log_file", None)
    log_path = Path(os.path.abspath(log_given)) if isinstance(log_given, (str, os.PathLike)) else None
    log: Optional[IO[bytes]] = None
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        log = os.fdopen(fd, "ab")
    try:
        running = _Running(["mount", str(source), str(point), *_flags(options), "--foreground"],
                           stdout=log is None, stderr=log is None, stderr_to=log)
    finally:
        if log is not None:
            log.close()
    try:
        while not _is_mounted(str(point)):
            if running.process.poll() is not None:
                running.join()
                raise _error(running.result(), log_path=log_path)
            if deadline is not None and time.monotonic() >= deadline:
                _stop_tree(running.process)
                _clear_mount(str(point))
                running.join(2.0)
                raise _error(running.result(), kind=ShardFSTimeout, log_path=log_path,
                             message=f"the daemon did not serve {point} within {timeout:g} s; stopped it, nothing is mounted")
            time.sleep(0.05)
    except ShardFSError:
        raise
    except BaseException:
        _stop_tree(running.process)
        _clear_mount(str(point))
        raise
    return _served(source, point, log_path, deadline, running)
