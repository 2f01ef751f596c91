"""Mounting in the compatibility tests: /proc/mounts and daemon helpers, the
`mounts` fixture (always unmounts: `shardfs unmount`, then `fusermount3 -u
-z`, then SIGKILL of the daemon), the session check that no fuse.shardfs
mount outlives the tests, the zip helpers that zero a converted file's CRC
fields (a mounted file serves them as 0), and the cases the mount tests share.
conftest.py makes the fixtures available to every test module.
"""

from __future__ import annotations

import gc
import json
import os
import re
import signal
import struct
import subprocess
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

from checks import compare_state, files_under
from daemon_log import default_log_path
from ptfile import explain_difference, first_difference
from reference import Layout, expected_files, validate
import checkpoints
import zipdir

FUSE_TYPE = "fuse.shardfs"
L = Layout
QL = dict(qkv_linear=True)


# ---------------------------------------------------------------------------
# /proc/mounts, daemon processes


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def proc_mounts() -> list[tuple[str, str]]:
    """(mount point, type) of every mount, in /proc/mounts order."""
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 3:
                out.append((_unescape(parts[1]), parts[2]))
    return out


def mount_types(mnt: Path) -> list[str]:
    """Types of the mounts stacked at mnt (normally [] or ['fuse.shardfs'])."""
    m = str(mnt)
    return [t for p, t in proc_mounts() if p == m]


def is_mounted(mnt: Path) -> bool:
    return FUSE_TYPE in mount_types(mnt)


def _under(path: str, base: Path) -> bool:
    b = str(base).rstrip("/") + "/"
    return path == str(base) or path.startswith(b)


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    """Running (a zombie counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (OSError, IndexError):
        return False


def daemon_pids(mnt: Path) -> list[int]:
    """Live `shardfs mount ...` processes with mnt among their arguments:
    `pgrep -f` with the mount point, kept only when mnt is a whole argument
    (so /x/mnt does not match /x/mnt2)."""
    p = subprocess.run(["pgrep", "-f", re.escape(str(mnt))], capture_output=True, text=True)
    pids = []
    for tok in p.stdout.split():
        pid = int(tok)
        if pid == os.getpid():
            continue
        args = _cmdline(pid)
        if "mount" in args and str(mnt) in args and _alive(pid):
            pids.append(pid)
    return sorted(pids)


def wait_for(pred, timeout: float, step: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(step)


def log_tail(path: Optional[Path], n: int = 30) -> str:
    if path is None or not Path(path).exists():
        return f"(no daemon log at {path})"
    lines = Path(path).read_text(errors="replace").splitlines()
    return f"--- daemon log {path} (last {min(n, len(lines))} lines) ---\n" + "\n".join(lines[-n:])


def force_unmount(mnt: Path) -> None:
    """Last resort for a leftover mount: lazy fusermount3, kill the daemon,
    lazy umount."""
    if is_mounted(mnt):
        subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True, timeout=30)
    for pid in daemon_pids(mnt):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    if is_mounted(mnt):
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


@pytest.fixture(scope="session", autouse=True)
def no_shardfs_mount_left(tmp_path_factory):
    """Session finalizer: no fuse.shardfs mount may outlive the tests (a
    leftover is removed, then reported as an error)."""
    base = tmp_path_factory.getbasetemp()
    yield
    left = [p for p, t in proc_mounts() if t == FUSE_TYPE and _under(p, base)]
    for p in left:
        force_unmount(Path(p))
    assert not left, f"fuse.shardfs mounts left after the tests: {left}"


# ---------------------------------------------------------------------------
# mounting with guaranteed cleanup


@dataclass
class Mounted:
    mnt: Path
    log: Optional[Path]
    run: object  # conftest.Run

    @property
    def model(self) -> Path:
        return self.mnt / "model"

    def pids(self) -> list[int]:
        return daemon_pids(self.mnt)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""


class Mounts:
    """Mounts for one test; `cleanup` (always run by the fixture) unmounts
    each with `shardfs unmount`, falls back to `fusermount3 -u -z`, and
    kills any daemon left."""

    def __init__(self, shardfs, tmp_path: Path):
        self.shardfs = shardfs
        self.tmp = tmp_path
        self.points: list[Path] = []
        self.procs: list[subprocess.Popen] = []
        self.problems: list[str] = []

    def _track(self, mnt: Path) -> None:
        if mnt not in self.points:
            self.points.append(mnt)

    def mount(self, src, mnt: Path, *args, log: Optional[Path] = None, default_log: bool = False) -> Mounted:
        """Mounts and fails the test unless it worked (exit 0, in /proc/mounts)."""
        m = self.try_mount(src, mnt, *args, log=log, default_log=default_log)
        assert m.run.returncode == 0, f"mount failed:\n{m.run.describe()}\n{log_tail(m.log)}"
        assert is_mounted(mnt), (
            f"`shardfs mount` exited 0 but {mnt} is not a {FUSE_TYPE} mount "
            f"({mount_types(mnt)}):\n{m.run.describe()}\n{log_tail(m.log)}"
        )
        return m

    def try_mount(self, src, mnt: Path, *args, log: Optional[Path] = None, default_log: bool = False) -> Mounted:
        mnt = Path(mnt)
        self._track(mnt)
        extra = []
        if default_log:
            log = default_log_path(mnt)
        else:
            if log is None:
                log = self.tmp / f"daemon-{mnt.name}-{len(self.points)}.log"
            extra = ["--log-file", log]
        run = self.shardfs.run("mount", src, mnt, *args, *extra, timeout=120)
        return Mounted(mnt, log, run)

    def foreground(self, src, mnt: Path, *args, stderr_path: Path) -> subprocess.Popen:
        mnt = Path(mnt)
        self._track(mnt)
        exe = self.shardfs.require()
        with open(stderr_path, "wb") as err:
            p = subprocess.Popen([str(exe), "mount", str(src), str(mnt), *map(str, args), "--foreground"],
                                 stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.procs.append(p)
        return p

    def unmount(self, mnt: Path, *args):
        return self.shardfs.run("unmount", mnt, *args, timeout=60)

    def cleanup(self) -> None:
        gc.collect()  # drop mmaps (torch.load(mmap=True)) that would keep a mount busy
        for mnt in reversed(self.points):
            try:
                if is_mounted(mnt):
                    try:
                        r = self.unmount(mnt)
                        if r.returncode != 0 or is_mounted(mnt):
                            self.problems.append(f"teardown: `shardfs unmount {mnt}` failed:\n{r.describe()}")
                    except subprocess.TimeoutExpired:
                        self.problems.append(f"teardown: `shardfs unmount {mnt}` hung")
                    force_unmount(mnt)
                # a daemon outliving its mount: give it a moment, then kill it
                if not wait_for(lambda: not daemon_pids(mnt), 5):
                    self.problems.append(f"teardown: daemon {daemon_pids(mnt)} of {mnt} still running after unmount")
            finally:
                force_unmount(mnt)
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture
def mounts(shardfs, tmp_path):
    require_fuse(shardfs)
    m = Mounts(shardfs, tmp_path)
    try:
        yield m
    finally:
        m.cleanup()
    left = [p for p in m.points if is_mounted(p)]
    assert not left, f"still mounted after teardown: {left}"
    # `shardfs unmount` failing at teardown, or a daemon outliving its
    # mount, is a finding of its own (reported as a teardown error)
    assert not m.problems, "\n".join(m.problems)


_FUSE_CHECKED: dict = {}


def require_fuse(shardfs) -> None:
    """Fails (does not skip) when the binary has no `mount` (a stale build)
    or there is no /dev/fuse; deselect with -m 'not mount'."""
    exe = shardfs.require()
    if exe not in _FUSE_CHECKED:
        r = shardfs.run("mount", "--help", timeout=60)
        _FUSE_CHECKED[exe] = r
    r = _FUSE_CHECKED[exe]
    if r.returncode != 0 or "--page-cache" not in r.stdout:
        pytest.fail(f"{exe} has no usable `mount` subcommand (stale build? rebuild it, or set SHARDFS_BIN):\n"
                    f"{r.describe()}", pytrace=False)
    if not os.path.exists("/dev/fuse"):
        pytest.fail("no /dev/fuse: the mount tests need FUSE (deselect them with -m 'not mount')", pytrace=False)


def new_mnt(base: Path, name: str = "mnt") -> Path:
    p = base / name
    p.mkdir()
    return p


# ---------------------------------------------------------------------------
# zip CRC fields


def zero_crcs(converted: bytes, what: str = "") -> bytes:
    """The converted file with every CRC-32 field zeroed (data descriptor
    and central directory; the local header's when there is no descriptor).
    Checks first that each field holds the record's real CRC."""
    directory = zipdir.of_bytes(converted)
    assert directory.members, f"{what}: no zip records"
    for r in directory.members:
        real = zlib.crc32(converted[r.data_offset: r.data_offset + r.size])
        assert r.crc == real, f"{what}: {r.name}: central directory CRC {r.crc:#x}, record CRC {real:#x}"
        (local,) = struct.unpack("<I", converted[r.local_crc_offset: r.local_crc_offset + 4])
        assert local == real, f"{what}: {r.name}: data descriptor CRC {local:#x}, record CRC {real:#x}"
    out = bytearray(converted)
    zipdir.zero_crcs(out, directory)
    return bytes(out)


def boundaries(data: bytes) -> list[int]:
    """Offsets where a read is most likely to be cut wrongly (zipdir.boundaries)."""
    return zipdir.boundaries(zipdir.of_bytes(data))


# ---------------------------------------------------------------------------
# cases


@dataclass(frozen=True)
class Case:
    id: str
    ckpt: str
    layout: Layout

    @property
    def args(self) -> list:
        return self.layout.cli_args()


CASES = [
    Case("gqa-tp4-qkvlin-fuse-m2", "gqa", L(tp=4, kv_mult=2, fuse_qkv=True, **QL)),  # GQA, qkv-linear + fuse
    Case("mha-tp2-pp2", "mha", L(tp=2, pp=2)),
    Case("gqa-tp2-f32", "gqa", L(tp=2, dtype="float32")),  # bf16 source, float32 out
    Case("tied-tp2-pp2", "tied", L(tp=2, pp=2)),
    Case("gqa-tp4-qkvlin-m2-trn2", "gqa", L(tp=4, kv_mult=2, backend="trn2", **QL)),
    Case("uneven-tp2-pp3-bf16", "uneven", L(tp=2, pp=3, dtype="bfloat16")),  # f32 source, uneven stages
    Case("odd-pad0-pad63", "odd", L()),  # FB pads of 0 and 63
    # files of ~3 MiB with 1 MiB records (q_proj, o_proj)
    Case("r64x8-pp2-f32", "r64x8", L(pp=2, dtype="float32")),
]
CASE_BY_ID = {c.id: c for c in CASES}
BIG = CASE_BY_ID["r64x8-pp2-f32"]
# 16 files for the concurrency test
MANY = Case("r64x8-tp8-pp2-qkvlin-fuse-f32", "r64x8", L(tp=8, pp=2, fuse_qkv=True, dtype="float32", **QL))
GQA_TP2_PP2 = Case("gqa-tp2-pp2", "gqa", L(tp=2, pp=2))
GQA_TP4_M2 = Case("gqa-tp4-qkvlin-m2-f16", "gqa", L(tp=4, kv_mult=2, dtype="float16", **QL))


for _c in CASES + [MANY, GQA_TP2_PP2, GQA_TP4_M2]:
    validate(checkpoints.dims(_c.ckpt), _c.layout)
assert len(expected_files(MANY.layout)) >= 16


class Expected:
    """A case's converted files, raw and with CRCs zeroed (cached)."""

    def __init__(self, out: Path):
        self.out = out
        self.names = [n.removeprefix("model/") for n in files_under(out)]
        self._zeroed: dict = {}

    def path(self, name: str) -> Path:
        return self.out / "model" / name

    def zeroed(self, name: str) -> bytes:
        if name not in self._zeroed:
            self._zeroed[name] = zero_crcs(self.path(name).read_bytes(), name)
        return self._zeroed[name]


_EXPECTED: dict = {}


def expected_for(conversions, case: Case) -> Expected:
    conv = conversions.converted_ok(case.ckpt, case.args)
    if conv.out not in _EXPECTED:
        _EXPECTED[conv.out] = Expected(conv.out)
        assert files_under(conv.out) == expected_files(case.layout), f"{case.id}: convert wrote {files_under(conv.out)}"
    return _EXPECTED[conv.out]


def assert_file_equals(mounted: Path, want: bytes, scratch: Path, log: Optional[Path] = None) -> None:
    """Reads mounted in full (plain read) and compares with want; on a
    difference, explains where (record, bytes) using ptfile."""
    with open(mounted, "rb") as f:
        got = f.read()
    if got == want:
        return
    scratch.mkdir(parents=True, exist_ok=True)
    exp = scratch / ("expected-" + mounted.name)
    exp.write_bytes(want)
    act = scratch / ("mounted-" + mounted.name)
    act.write_bytes(got)
    off = first_difference(act, exp)
    raise AssertionError(
        f"{mounted} differs from the converted file with CRCs zeroed "
        f"(read {len(got)} bytes, expected {len(want)}):\n"
        + (explain_difference(act, exp, off) if off is not None else "(no difference on re-read?)")
        + "\n" + log_tail(log)
    )


def assert_tree(m: Mounted, exp: Expected) -> None:
    """Listing of MNT and MNT/model, modes and sizes."""
    assert sorted(os.listdir(m.mnt)) == ["model"], f"MNT holds {sorted(os.listdir(m.mnt))}"
    got = sorted(os.listdir(m.model))
    assert got == sorted(exp.names), (
        f"MNT/model listing differs from convert's files\n  missing: {sorted(set(exp.names) - set(got))}"
        f"\n  unexpected: {sorted(set(got) - set(exp.names))}"
    )
    problems = []
    for n in exp.names:
        st = os.stat(m.model / n)
        want = exp.path(n).stat().st_size
        if st.st_size != want:
            problems.append(f"{n}: st_size {st.st_size}, converted file {want}")
        if not (st.st_mode & 0o170000) == 0o100000:
            problems.append(f"{n}: not a regular file (mode {st.st_mode:o})")
        if st.st_mode & 0o222:
            problems.append(f"{n}: writable mode {st.st_mode & 0o7777:o}")
    assert not problems, "\n".join(problems)


def load_pair(mounted: Path, converted: Path, what: str, **kw) -> None:
    got = torch.load(mounted, weights_only=True, **kw)
    want = torch.load(converted, weights_only=True)
    try:
        compare_state(got, want, what)
    finally:
        del got, want
        gc.collect()



def converted_copy(shardfs, ckpts, tmp_path: Path, c: Case) -> tuple:
    """A copy of case `c`'s checkpoint under tmp_path/src, for a test to
    change, converted: (the copy, the converted files as `Expected`, the
    sources each rank file uses)."""
    src = ckpts.get(c.ckpt).copy_to(tmp_path / "src")
    out = tmp_path / "converted"
    conv = shardfs.run("convert", src, out, *c.args)
    assert conv.returncode == 0, conv.describe()
    return src, Expected(out), _sources_by_file(shardfs, src, c.args)


def _sources_by_file(shardfs, src: Path, args: list) -> dict:
    """rank file name -> set of safetensors files its tensors come from
    (`plan --json`)."""
    r = shardfs.run("plan", src, *args, "--json")
    assert r.returncode == 0, r.describe()
    plan = json.loads(r.stdout)
    out = {}
    for f in plan["files"]:
        out[f["path"].removeprefix("model/")] = {s["file"] for t in f["tensors"] for s in t["sources"]}
    return out


# (how the shard changes, mount mode). In "cached" mode a descriptor opened
# before the change has the file in the page cache: the daemon must drop
# those pages (it notifies the kernel) or that reader keeps the old bytes.


# How a file is read: through the page cache, or direct_io (with persisted
# copies spliced, or not).
READ_MODES = {"cached": ["--page-cache"], "direct-io": [], "direct-io-no-splice": ["--no-splice"]}


def _errno_of(fn) -> Optional[int]:
    try:
        r = fn()
    except OSError as e:
        return e.errno
    if isinstance(r, int) and r >= 0:  # an fd from os.open
        os.close(r)
    return None
