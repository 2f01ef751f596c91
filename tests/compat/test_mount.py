"""`shardfs mount` / `shardfs unmount`: the FUSE file system.

MNT/model/*.pt must read exactly as `shardfs convert` writes OUT/model/*.pt,
except the zip CRC-32 fields (data descriptor and central directory), which
are 0 in a mounted file. Each expected file is therefore the converted file
with those fields zeroed; the offsets come from parsing the converted file's
central directory, and every CRC found there is first checked against
zlib.crc32 of its record (so a wrong offset cannot make the test pass).

Every test unmounts on every path (the `mounts` fixture: `shardfs unmount`,
then `fusermount3 -u -z`, then SIGKILL of the daemon), and a session
finalizer fails if any fuse.shardfs mount is left under the pytest temp dir.
All tests carry the `mount` marker (`-m "not mount"` deselects them where
there is no FUSE).
"""

from __future__ import annotations

import errno
import gc
import json
import mmap
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import threading
import time
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import pytest
import torch

from checks import compare_state, files_under
from daemon_log import default_log_path
from ptfile import explain_difference, first_difference
from reference import Dims, Layout, LayoutError, expected_files, validate
import checkpoints

pytestmark = pytest.mark.mount

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


@dataclass
class Record:
    name: str
    local_offset: int
    data_offset: int
    size: int
    crc: int
    cd_crc_offset: int
    dd_crc_offset: Optional[int]  # None: no data descriptor (CRC in the local header)
    descriptor_end: int


def zip_records(data: bytes) -> tuple[list, int]:
    """Parses the central directory (zip64 aware) -> (records, cd offset)."""
    eocd = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    assert eocd >= 0, "no end of central directory record"
    _, _, _, n_total, cd_size, cd_off, _ = struct.unpack("<HHHHIIH", data[eocd + 4: eocd + 22])
    if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:
        loc = eocd - 20
        assert data[loc: loc + 4] == b"PK\x06\x07", "zip64 sizes but no zip64 locator"
        (z64,) = struct.unpack("<Q", data[loc + 8: loc + 16])
        assert data[z64: z64 + 4] == b"PK\x06\x06", "no zip64 end of central directory record"
        n_total, cd_size, cd_off = struct.unpack("<QQQ", data[z64 + 32: z64 + 56])
    recs, p = [], cd_off
    for _ in range(n_total):
        assert data[p: p + 4] == b"PK\x01\x02", f"bad central directory entry at {p}"
        (flags,) = struct.unpack("<H", data[p + 8: p + 10])
        crc, csize, usize = struct.unpack("<III", data[p + 16: p + 28])
        n, e, c = struct.unpack("<HHH", data[p + 28: p + 34])
        (lho,) = struct.unpack("<I", data[p + 42: p + 46])
        name = data[p + 46: p + 46 + n].decode()
        extra = data[p + 46 + n: p + 46 + n + e]
        q = 0
        while q + 4 <= len(extra):
            hid, hlen = struct.unpack("<HH", extra[q: q + 4])
            if hid == 1:
                vals = list(struct.unpack(f"<{hlen // 8}Q", extra[q + 4: q + 4 + hlen - hlen % 8]))
                if usize == 0xFFFFFFFF:
                    usize = vals.pop(0)
                if csize == 0xFFFFFFFF:
                    csize = vals.pop(0)
                if lho == 0xFFFFFFFF:
                    lho = vals.pop(0)
            q += 4 + hlen
        assert data[lho: lho + 4] == b"PK\x03\x04", f"{name}: no local header at {lho}"
        ln, le = struct.unpack("<HH", data[lho + 26: lho + 30])
        doff = lho + 30 + ln + le
        dd = doff + csize
        if flags & 8:
            has_sig = data[dd: dd + 4] == b"PK\x07\x08"
            dd_crc = dd + 4 if has_sig else dd
            z64 = usize >= 0xFFFFFFFF or csize >= 0xFFFFFFFF
            end = dd_crc + 4 + (16 if z64 else 8)
        else:
            dd_crc, end = None, dd
        recs.append(Record(name, lho, doff, csize, crc, p + 16, dd_crc, end))
        p += 46 + n + e + c
    return recs, cd_off


def zero_crcs(converted: bytes, what: str = "") -> bytes:
    """The converted file with every CRC-32 field zeroed (data descriptor
    and central directory; the local header's when there is no descriptor).
    Checks first that each field holds the record's real CRC."""
    recs, _ = zip_records(converted)
    assert recs, f"{what}: no zip records"
    out = bytearray(converted)
    for r in recs:
        real = zlib.crc32(converted[r.data_offset: r.data_offset + r.size])
        assert r.crc == real, f"{what}: {r.name}: central directory CRC {r.crc:#x}, record CRC {real:#x}"
        where = r.dd_crc_offset if r.dd_crc_offset is not None else r.local_offset + 14
        (dd,) = struct.unpack("<I", converted[where: where + 4])
        assert dd == real, f"{what}: {r.name}: data descriptor CRC {dd:#x}, record CRC {real:#x}"
        out[r.cd_crc_offset: r.cd_crc_offset + 4] = b"\0\0\0\0"
        out[where: where + 4] = b"\0\0\0\0"
    return bytes(out)


def boundaries(data: bytes) -> list[int]:
    """Offsets where a read is most likely to be cut wrongly: record
    headers, data starts/ends, descriptors, the central directory, EOF."""
    recs, cd = zip_records(data)
    pts = {0, cd, len(data)}
    for r in recs:
        pts.update((r.local_offset, r.data_offset, r.data_offset + r.size, r.descriptor_end))
        if r.dd_crc_offset is not None:
            pts.add(r.dd_crc_offset)
    eocd = data.rfind(b"PK\x05\x06")
    pts.add(eocd)
    return sorted(pts)


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


def _dims(name: str) -> Dims:
    s = checkpoints.SPECS[name]
    return Dims(L=s.layers, h=s.hidden, Hq=s.heads, Hkv=s.kv_heads, I=s.inter, V=s.vocab,
                tied=s.tied, head_dim=s.head_dim or s.hidden // s.heads)


for _c in CASES + [MANY, GQA_TP2_PP2, GQA_TP4_M2]:
    validate(_dims(_c.ckpt), _c.layout)
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


# ---------------------------------------------------------------------------
# 1 + 2: bytes, sizes, listing, torch.load


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_mounted_bytes_equal_converted(conversions, ckpts, mounts, tmp_path, case_id):
    """Every file equals convert's with CRC fields zeroed; listing and sizes
    equal convert's; torch.load (plain and mmap) gives convert's tensors."""
    c = CASE_BY_ID[case_id]
    exp = expected_for(conversions, c)
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args)
    assert_tree(m, exp)
    for n in exp.names:
        assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    for n in exp.names:
        load_pair(m.model / n, exp.path(n), f"{c.id}: mounted {n} [weights_only]")
        load_pair(m.model / n, exp.path(n), f"{c.id}: mounted {n} [weights_only+mmap]", mmap=True)
    # Files under STREAMING_BYTES go through the page cache, so a shared
    # mapping works (these fixtures' files are all that small); larger ones
    # stream with direct_io and refuse it cleanly (test_faults'
    # test_shared_mapping_of_a_streamed_file), as --help says.
    assert all(len(exp.zeroed(n)) < STREAMING_BYTES for n in exp.names)
    assert_shared_mapping_works(m, exp)
    assert m.pids(), f"no daemon process found for {m.mnt}"


# Files this large or larger are served with direct_io (MountedFileSystem.streamingFileBytes).
STREAMING_BYTES = 8 << 20


def assert_shared_mapping_works(m, exp) -> None:
    n = exp.names[0]
    with open(m.model / n, "rb") as f:
        with mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ) as mm:
            assert mm[:] == exp.zeroed(n), f"{n}: MAP_SHARED mapping differs"


MOUNT_OPTIONS = {
    "page-cache": ["--page-cache"],
    "no-splice": ["--no-splice"],
    "page-cache-no-splice": ["--page-cache", "--no-splice"],
    "max-read-4k": ["--max-read-kib", "4"],
    "max-read-1m": ["--max-read-kib", "1024"],
    "page-cache-max-read-1m": ["--page-cache", "--max-read-kib", "1024"],
}


@pytest.mark.parametrize("opts", list(MOUNT_OPTIONS), ids=list(MOUNT_OPTIONS))
@pytest.mark.parametrize("case_id", [BIG.id, "gqa-tp4-qkvlin-fuse-m2"])
def test_mount_options_bytes(conversions, ckpts, mounts, tmp_path, case_id, opts):
    """--page-cache, --no-splice, --max-read-kib: the same bytes, and
    torch.load(mmap=True) works (private mapping, also under direct_io);
    with --page-cache a shared mapping works too."""
    c = CASE_BY_ID[case_id]
    exp = expected_for(conversions, c)
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args, *MOUNT_OPTIONS[opts])
    assert_tree(m, exp)
    for n in exp.names:
        assert_file_equals(m.model / n, exp.zeroed(n), tmp_path / "diff", m.log)
    n = exp.names[-1]
    load_pair(m.model / n, exp.path(n), f"{c.id} [{opts}]: mounted {n} [weights_only+mmap]", mmap=True)
    load_pair(m.model / n, exp.path(n), f"{c.id} [{opts}]: mounted {n} [weights_only]")
    if "--page-cache" in MOUNT_OPTIONS[opts]:
        assert_shared_mapping_works(m, exp)


# ---------------------------------------------------------------------------
# 3: random ranges

LENGTHS = [1, 2, 3, 7, 8, 63, 64, 65, 511, 512, 4095, 4096, 4097, 65535, 65536, 65537,
           131072, 524287, 524288, 524289, 1048575, 1048576, 1048577, 1500000, 2 * 1048576 + 3]


def random_reads(rng: random.Random, size: int, bounds: list[int], n: int = 200):
    out = []
    for i in range(n):
        kind = i % 4
        if kind == 0 or kind == 1:  # near a record boundary
            b = rng.choice(bounds)
            off = b + rng.randint(-70, 70)
        else:
            off = rng.randrange(0, max(1, size))
        off = min(max(off, 0), size)
        if kind == 2:
            ln = rng.randint(1, 2 * 1048576 + 100)
        elif kind == 3:
            ln = rng.randint(1, 8192)
        else:
            ln = rng.choice(LENGTHS)
        out.append((off, ln))
    out.append((0, size))
    out.append((max(0, size - 1), 1))
    return out


READ_MODES = {"cached": ["--page-cache"], "direct-io": [], "direct-io-no-splice": ["--no-splice"]}


@pytest.mark.parametrize("mode", list(READ_MODES))
@pytest.mark.parametrize("case_id", [BIG.id, "odd-pad0-pad63", "uneven-tp2-pp3-bf16"])
def test_random_ranges(conversions, ckpts, mounts, tmp_path, case_id, mode):
    """200 os.pread ranges per file (1 byte .. > 2 MiB, many next to record
    boundaries) equal the CRC-zeroed converted bytes; reads past EOF are
    short or empty."""
    c = CASE_BY_ID[case_id]
    exp = expected_for(conversions, c)
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args, *READ_MODES[mode])
    problems = []
    for n in exp.names:
        want = exp.zeroed(n)
        size = len(want)
        seed = zlib.crc32(f"{c.id}/{n}".encode())
        rng = random.Random(seed)
        fd = os.open(m.model / n, os.O_RDONLY)
        try:
            for off, ln in random_reads(rng, size, boundaries(want)):
                try:
                    got = os.pread(fd, ln, off)
                except OSError as e:
                    problems.append(f"{n}: pread(len={ln}, off={off}) failed: {e}")
                    continue
                if got != want[off: off + ln]:
                    exp_b = want[off: off + ln]
                    where = next((i for i, (a, b) in enumerate(zip(got, exp_b)) if a != b), min(len(got), len(exp_b)))
                    problems.append(
                        f"{n} (seed {seed}): pread(len={ln}, off={off}) returned {len(got)} bytes, "
                        f"expected {len(exp_b)}; first difference at file offset {off + where}"
                    )
                if len(problems) > 10:
                    break
            # past EOF
            for off, ln, want_len in ((size, 100, 0), (size + 12345, 10, 0), (size - 10, 100, 10),
                                      (size - 1, 1 << 20, 1), (1 << 40, 4096, 0)):
                got = os.pread(fd, ln, off)
                if len(got) != want_len or got != want[off: off + ln]:
                    problems.append(f"{n}: pread(len={ln}, off={off}) at size {size} returned {len(got)} bytes, "
                                    f"expected {want_len}")
        finally:
            os.close(fd)
        if len(problems) > 10:
            break
    assert not problems, "\n".join(problems[:12]) + "\n" + log_tail(m.log)


# ---------------------------------------------------------------------------
# 4: concurrency


@pytest.mark.parametrize("mode", ["cached", "direct-io"])
def test_concurrent_readers(conversions, ckpts, mounts, tmp_path, mode):
    """8 threads each read all 16 files (in different orders, random chunk
    sizes) at once; every full content equals the converted one."""
    c = MANY
    exp = expected_for(conversions, c)
    assert len(exp.names) >= 16
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args, *READ_MODES[mode])
    wants = {n: exp.zeroed(n) for n in exp.names}
    errors: list = []
    barrier = threading.Barrier(8)

    def worker(k: int) -> None:
        rng = random.Random(k)
        order = exp.names[2 * k:] + exp.names[: 2 * k]
        try:
            barrier.wait(timeout=30)
            fds = {n: os.open(m.model / n, os.O_RDONLY) for n in order}
            try:
                # interleave files: one chunk of each in turn
                pos = {n: 0 for n in order}
                bufs = {n: [] for n in order}
                live = list(order)
                while live:
                    for n in list(live):
                        ln = rng.choice([4096, 65536, 131072, 1 << 20, rng.randint(1, 300000)])
                        b = os.pread(fds[n], ln, pos[n])
                        if not b:
                            live.remove(n)
                            continue
                        bufs[n].append(b)
                        pos[n] += len(b)
                for n in order:
                    data = b"".join(bufs[n])
                    if data != wants[n]:
                        where = next((i for i, (a, b) in enumerate(zip(data, wants[n])) if a != b),
                                     min(len(data), len(wants[n])))
                        errors.append(f"thread {k}: {n}: read {len(data)} bytes, expected {len(wants[n])}; "
                                      f"first difference at {where}")
            finally:
                for fd in fds.values():
                    os.close(fd)
        except Exception as e:  # noqa: BLE001
            errors.append(f"thread {k}: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "reader threads hung\n" + log_tail(m.log)
    assert not errors, "\n".join(errors[:16]) + "\n" + log_tail(m.log)


# ---------------------------------------------------------------------------
# 5: remount with another layout


def test_remount_other_layout(conversions, ckpts, mounts, tmp_path):
    """unmount, then mount another layout on the same MNT: the new file set,
    sizes and bytes; the first daemon exits after its unmount."""
    a, b = GQA_TP2_PP2, GQA_TP4_M2
    ea, eb = expected_for(conversions, a), expected_for(conversions, b)
    assert set(ea.names) != set(eb.names)
    src = ckpts.get("gqa").path
    mnt = new_mnt(tmp_path)
    m1 = mounts.mount(src, mnt, *a.args)
    assert_tree(m1, ea)
    assert_file_equals(m1.model / ea.names[-1], ea.zeroed(ea.names[-1]), tmp_path / "diff", m1.log)
    pids = m1.pids()
    assert len(pids) == 1, f"daemon processes for {mnt}: {pids}"
    r = mounts.unmount(mnt)
    assert r.returncode == 0, r.describe()
    assert not is_mounted(mnt), f"{mnt} still in /proc/mounts after unmount"
    assert wait_for(lambda: not _alive(pids[0]), 10), f"daemon {pids[0]} still running 10 s after unmount\n{log_tail(m1.log)}"
    assert os.listdir(mnt) == [], f"mount point not empty after unmount: {os.listdir(mnt)}"

    m2 = mounts.mount(src, mnt, *b.args)
    assert_tree(m2, eb)
    for n in eb.names:
        assert_file_equals(m2.model / n, eb.zeroed(n), tmp_path / "diff", m2.log)
    for n in set(ea.names) - set(eb.names):
        assert not (m2.model / n).exists(), f"{n} of the old layout still visible after remount"


# ---------------------------------------------------------------------------
# 6: read-only


def _errno_of(fn) -> Optional[int]:
    try:
        r = fn()
    except OSError as e:
        return e.errno
    if isinstance(r, int) and r >= 0:  # an fd from os.open
        os.close(r)
    return None


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
            validate(_dims("gqa"), lay)
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


# ---------------------------------------------------------------------------
# 11: a source changed while mounted


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
    src = ckpts.get(c.ckpt).copy_to(tmp_path / "src")
    out = tmp_path / "converted"
    conv = shardfs.run("convert", src, out, *c.args)
    assert conv.returncode == 0, conv.describe()
    exp = Expected(out)
    uses = _sources_by_file(shardfs, src, c.args)
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
