"""The Python API (packaging/python/shardfs, as the wheel ships it) against
the real binary: every public function, path arguments as `pathlib.Path`,
refusals as `ShardFSError`, the binary's notes and warnings in `logging`,
`verify` passing and failing, the `Mount` object (path, status(), log_path,
unmount, a context manager, left busy or by an exception), `foreground=True`,
and the handshake's timeout firing on a binary that never says it serves
(nothing left running or mounted after it). `mypy --strict` judges a user's
script and the README's example against the package's types."""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from conftest import REPO
from daemon_log import default_log_path
from mounting import daemon_pids, force_unmount, is_mounted, require_fuse, wait_for, zero_crcs
from tiny_example import EXAMPLE, LAYOUT, RANK_FILES

API = REPO / "packaging/python"
sys.path.insert(0, str(API))
import shardfs as api  # noqa: E402

TP2PP2 = dict(tp_size=2, pp_size=2)


@pytest.fixture(autouse=True)
def binary(shardfs, monkeypatch) -> Path:
    """The API runs the binary under test (SHARDFS_BIN, as conftest finds it)."""
    exe = shardfs.require()
    monkeypatch.setenv("SHARDFS_BIN", str(exe))
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    return exe


class Guard:
    """Mount points a test uses: whatever the API left there is removed after
    the test, and then reported as a failure."""

    def __init__(self, base: Path):
        self.base = base
        self.points: list[Path] = []

    def mnt(self, name: str = "mnt") -> Path:
        p = self.base / name
        p.mkdir()
        self.points.append(p)
        return p

    def leftovers(self) -> list[str]:
        left = []
        for p in self.points:
            if is_mounted(p) or daemon_pids(p):
                left.append(f"{p}: mounted={is_mounted(p)} daemons={daemon_pids(p)}")
            force_unmount(p)
        return left


@pytest.fixture
def guard(shardfs, tmp_path):
    require_fuse(shardfs)
    g = Guard(tmp_path)
    try:
        yield g
    finally:
        left = g.leftovers()
    assert not left, f"the API left mounts or daemons: {left}"


@pytest.fixture(scope="module")
def converted(tmp_path_factory, shardfs) -> Path:
    """examples/tiny-llama at TP 2 PP 2, written by the command line."""
    out = tmp_path_factory.mktemp("api-converted") / "tag"
    r = shardfs.run("convert", EXAMPLE, out, *LAYOUT)
    assert r.returncode == 0, r.describe()
    return out


def records(caplog, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "shardfs" and r.levelno == level]


# ---------------------------------------------------------------------------
# binary, version, plan, convert, verify


def test_binary_and_version(binary, monkeypatch):
    assert api.binary() == str(binary)
    assert re.match(r"^shardfs \d+\.\d+\.\d+ \(commit ", api.version()), api.version()
    monkeypatch.setenv("SHARDFS_BIN", "/nonexistent/shardfs")
    with pytest.raises(FileNotFoundError):
        api.version()


def test_plan_takes_paths_and_logs_warnings(shardfs, caplog):
    caplog.set_level(logging.DEBUG, logger="shardfs")
    by_path = api.plan(Path(EXAMPLE), **TP2PP2)
    r = shardfs.run("plan", EXAMPLE, *LAYOUT, "--json")
    assert r.returncode == 0, r.describe()
    assert by_path == json.loads(r.stdout) == api.plan(str(EXAMPLE), **TP2PP2)
    assert sorted(Path(f["path"]).name for f in by_path["files"]) == sorted(RANK_FILES)
    assert not records(caplog, logging.WARNING)
    # The planner's warning (a multiplier without --qkv-linear), on a run that succeeds.
    caplog.clear()
    api.plan(EXAMPLE, tp_size=2, kv_size_multiplier=2)
    warned = records(caplog, logging.WARNING)
    assert len(warned) == 1 and warned[0].startswith("--kv-size-multiplier 2 has no effect without --qkv-linear"), caplog.text


def test_refusal_raises_with_command_status_and_stderr(caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="shardfs")
    with pytest.raises(api.ShardFSError) as e:
        api.plan(EXAMPLE, tp_size=3)
    err = e.value
    assert isinstance(err, RuntimeError)
    assert err.returncode == 1 and err.command[1:3] == ["plan", str(EXAMPLE)], err.command
    assert "--tp-size" in err.message and not err.message.startswith("shardfs: error:"), err.message
    assert f"shardfs: error: {err.message}" in err.stderr
    assert str(err).startswith("shardfs plan exited 1: ")
    # The error is the exception's, not a log record above DEBUG.
    assert not [r for r in caplog.records if r.name == "shardfs" and r.levelno >= logging.WARNING], caplog.text
    # A flag the binary does not know is refused by name (exit 64, usage).
    with pytest.raises(api.ShardFSError) as e:
        api.plan(EXAMPLE, tp_sise=2)
    assert e.value.returncode == 64 and "tp-sise" in e.value.message, e.value.stderr


def test_convert_takes_paths_and_logs_each_file(converted, caplog, tmp_path):
    caplog.set_level(logging.DEBUG, logger="shardfs")
    out = tmp_path / "out"
    assert api.convert(Path(EXAMPLE), out, jobs=1, **TP2PP2) is None
    for name in RANK_FILES:
        assert (out / "model" / name).read_bytes() == (converted / "model" / name).read_bytes(), name
    wrote = records(caplog, logging.DEBUG)
    assert sorted(Path(line.split()[1]).name for line in wrote if line.startswith("wrote ")) == sorted(RANK_FILES), wrote
    assert any(line.startswith("done: wrote 4 files") for line in records(caplog, logging.INFO)), caplog.text
    # Refused: nothing written, the exception says why.
    with pytest.raises(api.ShardFSError) as e:
        api.convert(EXAMPLE, tmp_path / "refused", tp_size=3)
    assert e.value.returncode == 1 and "--tp-size" in e.value.message
    assert not (tmp_path / "refused" / "model").exists()


def test_verify_passing_failing_and_refused(converted, tmp_path):
    report = api.verify(EXAMPLE, converted, **TP2PP2)
    assert report["ok"] is True and report["summary"]["ok"] == 4 and report["summary"]["files"] == 4, report["summary"]
    # Another layout than the tag holds: a report of what is wrong, not an exception.
    other = api.verify(Path(EXAMPLE), Path(converted), tp_size=2)
    assert other["ok"] is False and other["summary"]["ok"] == 0, other["summary"]
    # One byte of one tensor changed: that file is named wrong.
    tag = tmp_path / "tag"
    shutil.copytree(converted, tag)
    victim = tag / "model" / RANK_FILES[1]
    data = bytearray(victim.read_bytes())
    state = torch.load(converted / "model" / RANK_FILES[1], weights_only=True)
    needle = next(t for t in state.values() if t.numel() >= 16).contiguous().view(torch.uint8).numpy().tobytes()
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 3] ^= 0x40
    victim.write_bytes(bytes(data))
    bad = api.verify(EXAMPLE, tag, **TP2PP2)
    assert bad["ok"] is False and bad["summary"]["wrong"] == 1, bad["summary"]
    assert [f["path"] for f in bad["files"] if f["status"] == "wrong"] == [f"model/{RANK_FILES[1]}"], bad["files"]
    # Refusals raise.
    with pytest.raises(api.ShardFSError) as e:
        api.verify(EXAMPLE, tmp_path / "no-such-tag", **TP2PP2)
    assert e.value.returncode == 1 and "no-such-tag" in e.value.message, e.value.stderr
    with pytest.raises(api.ShardFSError) as e:
        api.verify(EXAMPLE, converted, format="hf")
    assert "--format hf" in e.value.message


# ---------------------------------------------------------------------------
# mount, Mount, status, unmount


@pytest.mark.mount
def test_mount_object_status_log_and_unmount(guard, converted, caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="shardfs")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # the mount command's note
    mnt = guard.mnt()
    m = api.mount(Path(EXAMPLE), Path(mnt), **TP2PP2)
    assert isinstance(m, api.Mount) and m.path == mnt and isinstance(m.path, Path) and m.source == EXAMPLE
    assert os.fspath(m) == str(m) == str(mnt) and m / "model" == mnt / "model"
    assert m.mounted and is_mounted(mnt)
    notes = records(caplog, logging.INFO)
    assert any(n.startswith("in Slurm job 4242 this background daemon ends with the job step") for n in notes), notes

    st = m.status()
    assert st == {**api.status(mnt), "readsServed": st["readsServed"], "bytesServed": st["bytesServed"]}
    assert st["mountpoint"] == str(mnt) and st["source"] == str(EXAMPLE) and st["files"] == 4, st
    assert daemon_pids(mnt) == [st["pid"]] == [m.pid]
    assert "persist" not in st
    # The TypedDict names every key the daemon writes.
    assert api.MountStatus.__required_keys__ <= set(st) <= api.MountStatus.__required_keys__ | api.MountStatus.__optional_keys__

    # The daemon logs where the command line says, and the Mount knows it.
    assert m.log_path == default_log_path(mnt) == Path(st["log"]), (m.log_path, st)
    assert f"mounted {mnt}" in m.log_path.read_text()

    read = (m / "model" / RANK_FILES[0]).read_bytes()
    assert read == zero_crcs((converted / "model" / RANK_FILES[0]).read_bytes(), RANK_FILES[0])
    assert m.status()["readsServed"] > st["readsServed"]

    pid = m.pid
    m.unmount()
    assert not m.mounted and not is_mounted(mnt)
    assert wait_for(lambda: not daemon_pids(mnt), 10), f"daemon {pid} outlived its unmount"
    m.unmount()  # again: nothing
    with pytest.raises(api.ShardFSError) as e:
        api.status(mnt)
    assert "not a ShardFS mount" in e.value.message
    with pytest.raises(api.ShardFSError):
        api.unmount(mnt)


@pytest.mark.mount
def test_mount_context_manager_exception_busy_and_persist(guard, converted, tmp_path):
    mnt = guard.mnt()
    log = tmp_path / "daemon.log"
    with pytest.raises(RuntimeError, match="boom"):
        with api.mount(EXAMPLE, mnt, tp_size=2, log_file=log) as m:
            assert m.log_path == log and m.status()["log"] == str(log)
            raise RuntimeError("boom")
    assert not is_mounted(mnt) and wait_for(lambda: not daemon_pids(mnt), 10)

    # Left with a file open: detached lazily; the daemon ends when the file closes.
    with api.mount(EXAMPLE, mnt, **TP2PP2, log_file=log) as m:
        held = open(m.path / "model" / RANK_FILES[0], "rb")
    try:
        assert not is_mounted(mnt)
        assert held.read(4) == b"PK\x03\x04"
    finally:
        held.close()
    assert wait_for(lambda: not daemon_pids(mnt), 10), "the lazily detached daemon did not end"

    # persist_to as a Path; its progress in status()["persist"].
    persist = tmp_path / "persisted"
    with api.mount(EXAMPLE, mnt, **TP2PP2, persist_to=persist, timeout=60.5) as m:
        assert wait_for(lambda: m.status()["persist"]["state"] == "done", 60), m.status()
        p = m.status()["persist"]
        assert p["directory"] == str(persist) and p["filesDone"] == p["filesTotal"] == 4, p
        assert api.PersistStatus.__required_keys__ <= set(p) <= api.PersistStatus.__required_keys__ | api.PersistStatus.__optional_keys__
    for name in RANK_FILES:
        assert (persist / "model" / name).read_bytes() == (converted / "model" / name).read_bytes(), name


@pytest.mark.mount
def test_mount_refused(guard, tmp_path):
    mnt = guard.mnt()
    (mnt / "x").write_text("not empty")
    with pytest.raises(api.ShardFSError) as e:
        api.mount(EXAMPLE, mnt, **TP2PP2)
    assert e.value.returncode == 1 and e.value.command[1] == "mount" and str(mnt) in e.value.message, e.value.stderr
    empty = guard.mnt("empty")
    with pytest.raises(api.ShardFSError) as e:
        api.mount(EXAMPLE, empty, tp_size=3, timeout=30)
    assert "--tp-size" in e.value.message
    assert not is_mounted(mnt) and not is_mounted(empty)
    with pytest.raises(ValueError):
        api.mount(EXAMPLE, empty, timeout=0)


@pytest.mark.mount
def test_mount_foreground(guard, caplog, tmp_path):
    """The daemon as a child of this process: it returns once it serves (the
    command line's --foreground would block), the daemon's log lines in
    `logging`, or in log_file."""
    caplog.set_level(logging.INFO, logger="shardfs")
    mnt = guard.mnt()
    started = time.monotonic()
    m = api.mount(EXAMPLE, mnt, **TP2PP2, foreground=True, timeout=60)
    try:
        assert time.monotonic() - started < 60 and is_mounted(mnt)
        with open(f"/proc/{m.pid}/stat") as f:
            assert int(f.read().rpartition(")")[2].split()[1]) == os.getpid(), "the daemon is not this process's child"
        assert m.log_path is None and "log" not in m.status()
        assert wait_for(lambda: any(r.startswith(f"mounted {mnt}") for r in records(caplog, logging.INFO)), 10), caplog.text
        assert len((m / "model" / RANK_FILES[0]).read_bytes()) > 0
    finally:
        m.unmount()
    assert not is_mounted(mnt) and not os.path.exists(f"/proc/{m.pid}"), "the foreground daemon was not reaped"

    log = tmp_path / "fg.log"
    with api.mount(EXAMPLE, mnt, **TP2PP2, foreground=True, log_file=log) as m:
        assert m.log_path == log
    assert f"mounted {mnt}" in log.read_text() and f"unmounted {mnt}" in log.read_text()

    # A refusal of the daemon in the foreground raises too.
    with pytest.raises(api.ShardFSError) as e:
        api.mount(EXAMPLE, mnt, tp_size=3, foreground=True, timeout=30)
    assert "--tp-size" in e.value.message


def fake_binary(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "shardfs"
    exe.write_text("#!/bin/bash\n" + textwrap.dedent(body))
    exe.chmod(0o755)
    return exe


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.mount
def test_mount_timeout_stops_a_daemon_that_never_serves(guard, tmp_path, monkeypatch, caplog):
    """A `shardfs mount` whose daemon (in a session of its own, as the real
    one) never says it serves: the timeout fires on time, a float not cut to
    whole seconds, and nothing it started is left."""
    caplog.set_level(logging.INFO, logger="shardfs")
    pids = tmp_path / "pids"
    monkeypatch.setenv("SHARDFS_BIN", str(fake_binary(tmp_path, f"""
        echo $$ > {pids}
        setsid bash -c 'echo $$ >> {pids}; exec sleep 300' &
        echo "shardfs: note: opening the source" >&2
        wait
    """)))
    mnt = guard.mnt()
    started = time.monotonic()
    with pytest.raises(api.ShardFSTimeout) as e:
        api.mount(EXAMPLE, mnt, **TP2PP2, timeout=0.7)
    took = time.monotonic() - started
    assert isinstance(e.value, TimeoutError) and isinstance(e.value, api.ShardFSError)
    assert 0.7 <= took < 4, f"timeout=0.7 fired after {took:.2f} s"
    assert "did not serve" in e.value.message and "0.7 s" in e.value.message, e.value.message
    assert "opening the source" in records(caplog, logging.INFO)
    started_pids = [int(p) for p in pids.read_text().split()]
    assert len(started_pids) == 2, started_pids
    assert wait_for(lambda: all(gone(p) for p in started_pids), 5), f"left running: {[p for p in started_pids if not gone(p)]}"

    # The older `wait=` is the same bound (deprecated).
    pids.unlink()
    with pytest.warns(DeprecationWarning), pytest.raises(api.ShardFSTimeout):
        api.mount(EXAMPLE, mnt, **TP2PP2, wait=0.5)
    started_pids = [int(p) for p in pids.read_text().split()]
    assert wait_for(lambda: all(gone(p) for p in started_pids), 5)


@pytest.mark.mount
def test_mount_timeout_removes_a_mount_never_announced(guard, binary, tmp_path, monkeypatch):
    """A real daemon that mounts but never tells `mount` it serves (the real
    binary in the foreground, standing in for the background command): the
    timeout stops it and no mount is left."""
    monkeypatch.setenv("SHARDFS_BIN", str(fake_binary(tmp_path, f"""
        if [ "$1" = mount ]; then exec {binary} "$@" --foreground; fi
        exec {binary} "$@"
    """)))
    mnt = guard.mnt()
    with pytest.raises(api.ShardFSTimeout):
        api.mount(EXAMPLE, mnt, **TP2PP2, timeout=3)
    assert not is_mounted(mnt)
    assert wait_for(lambda: not daemon_pids(mnt), 5), daemon_pids(mnt)


def test_layout_names_every_layout_and_source_flag(shardfs):
    """`Layout` against `plan --help`: its keys are the layout and source
    flags, all of them and no others."""
    r = shardfs.run("plan", "--help")
    assert r.returncode == 0, r.describe()
    flags = set(re.findall(r"^  --([a-z][a-z0-9-]*)(?: <| |$)", r.stdout, re.M)) - {"json", "help", "version"}
    assert {f.replace("-", "_") for f in flags} == set(api.Layout.__optional_keys__), r.stdout


# ---------------------------------------------------------------------------
# types: a user's script and the README's example under mypy --strict

USER_SCRIPT = '''
import logging
from pathlib import Path
from typing import Any, Dict, Optional

import shardfs

logging.basicConfig(level=logging.INFO)
model = Path("Llama-3-8B")
layout = shardfs.Layout(tp_size=32, kv_size_multiplier=4, qkv_linear=True, config=Path("Llama-3-8B"))
plan: Dict[str, Any] = shardfs.plan(model, **layout)
shardfs.convert(model, Path("out"), jobs=4, dtype="float32", **layout)
report = shardfs.verify(model, Path("out"), **layout)
ok: bool = report["ok"]
with shardfs.mount(model, Path("/mnt/ranks"), persist_to=Path("/fsx/ranks"), timeout=90.5, **layout) as mnt:
    where: Path = mnt.path / "model"
    log: Optional[Path] = mnt.log_path
    st: shardfs.MountStatus = mnt.status()
    files: int = st["files"]
    if "persist" in st:
        done: int = st["persist"]["filesDone"]
    pid: int = shardfs.status(mnt)["pid"]
    opened = open(mnt / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt", "rb")
try:
    shardfs.unmount("/mnt/ranks", lazy=True)
except shardfs.ShardFSError as e:
    code: int = e.returncode
    message: str = e.message + e.stderr
'''


def mypy(tmp_path: Path, name: str, text: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy", reason="mypy is not installed in this venv (scripts/setup.sh installs it)")
    script = tmp_path / name
    script.write_text(text)
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir", str(tmp_path / ".mypy"),
                           str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "MYPYPATH": str(API)}, timeout=300)


def test_mypy_strict_on_a_users_script(tmp_path):
    r = mypy(tmp_path, "user.py", USER_SCRIPT)
    assert r.returncode == 0, r.stdout + r.stderr
    # ... and it does judge: a misuse is caught.
    bad = USER_SCRIPT + 'typo: int = mnt.status()["filez"]\nshardfs.plan(3)\n'
    r = mypy(tmp_path, "bad.py", bad)
    assert r.returncode == 1 and '"filez"' in r.stdout and 'Argument 1 to "plan"' in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("readme", ["packaging/python/README.md", "README.md"])
def test_readme_example_type_checks(tmp_path, readme):
    """The Python examples of the wheel's README and the repository's, as a user copies them."""
    blocks = re.findall(r"```python\n(.*?)```", (REPO / readme).read_text(), re.S)
    assert blocks, f"{readme} has no python example"
    r = mypy(tmp_path, "readme.py", "\n".join(blocks))
    assert r.returncode == 0, r.stdout + r.stderr
