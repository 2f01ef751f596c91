"""Faults under `shardfs mount` (issue 7): sources that vanish, shrink or fail
to read while mounted, and a daemon killed under load.

What each fault must give: EIO to the readers of the files that use the
broken source (never wrong or short bytes, never a hang), a daemon log line
naming the source where the daemon can know it, the daemon alive and every
other file still read correctly; after SIGKILL of the daemon, readers fail
(ENOTCONN/ECONNABORTED) instead of hanging, `shardfs unmount` recovers and a
new mount reads correctly.

Two kinds of source:
- the tiny GQA checkpoint of the compat suite (changed in place: deleted,
  truncated), with `shardfs convert` output as the expected bytes;
- a sparse Llama-3-8B (bench/make_sparse_checkpoint.py: 16 GB of shapes,
  3 MB on disk, made in < 1 s), checked with tests/stress/rankcheck.py (the
  plan + the fill pattern), for the tests that need real row widths: a
  narrow column cut (o_proj, 1 KiB rows at TP=8) goes through the daemon's
  mmap gather and its SIGBUS guard, a full-width tensor through splice.

A source that returns EIO is played by eiofs.c, a passthrough FUSE file
system compiled here with cc against libfuse3 (device-mapper's `error`
target needs /dev/mapper, absent in containers; /dev/fuse is there wherever
these tests run). Every mount is removed on every path (the `mounts`
fixture of mounting.py for shardfs, `eiofs_mount` for the shim).
"""

from __future__ import annotations

import errno
import json
import mmap
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from mounting import (  # noqa: F401
    FUSE_TYPE, GQA_TP2_PP2, MANY, _alive, converted_copy, expected_for, is_mounted, log_tail,
    new_mnt, proc_mounts, wait_for,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests/stress"))
import rankcheck  # noqa: E402

pytestmark = pytest.mark.mount

DEAD = (errno.ENOTCONN, errno.ECONNABORTED)
LAYOUT_8B = ["--tp-size", "8", "--pp-size", "4"]


@pytest.fixture(scope="module", autouse=True)
def no_mount_left(tmp_path_factory):
    """After this module: no shardfs or eiofs mount under the pytest temp dir
    (the `mounts` and `eiofs_mount` fixtures must have removed them all)."""
    yield
    base = str(tmp_path_factory.getbasetemp()) + "/"
    left = [(p, t) for p, t in proc_mounts() if p.startswith(base) and t in (FUSE_TYPE, "fuse.eiofs", "fuse")]
    for p, _ in left:
        subprocess.run(["fusermount3", "-u", "-z", p], capture_output=True)
    assert not left, f"mounts left after test_faults.py: {left}"


def errname(e) -> str:
    return errno.errorcode.get(e, str(e)) if e else "no error"


def timed(fn, timeout: float = 20.0):
    """Runs fn in a thread: (result, exception); fails the test if it hangs
    (a FUSE request never answered)."""
    box = {}

    def run():
        try:
            box["r"] = fn()
        except BaseException as e:  # noqa: BLE001
            box["e"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        pytest.fail(f"a read did not return within {timeout} s (hung FUSE request?)")
    return box.get("r"), box.get("e")


def pread_errno(path: Path, n: int, off: int):
    """(errno or None, bytes) of one open + pread, with a hang guard."""
    def rd():
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.pread(fd, n, off)
        finally:
            os.close(fd)
    data, exc = timed(rd)
    if exc is not None:
        if isinstance(exc, OSError):
            return exc.errno, b""
        raise exc
    return None, data


# ---------------------------------------------------------------------------
# the sparse 8B checkpoint and its checker


class Sparse8B:
    def __init__(self, src: Path, shardfs):
        self.src = src
        r = shardfs.run("plan", src, *LAYOUT_8B, "--json")
        assert r.returncode == 0, r.describe()
        self.plan = json.loads(r.stdout)
        self.files = rankcheck.out_tensors(self.plan, rankcheck.SparseSource(src))
        self.uses = {f["path"]: {s["file"] for t in f["tensors"] for s in t["sources"]} for f in self.plan["files"]}

    def rank_file(self, mnt: Path, path: str) -> rankcheck.RankFile:
        size, tensors = self.files[path]
        fd = os.open(mnt / path, os.O_RDONLY)
        try:
            return rankcheck.load_rank_file(path, size, tensors, rankcheck.pread_full(fd))
        finally:
            os.close(fd)


@pytest.fixture(scope="session")
def sparse8b_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("sparse8b") / "sparse-llama-3-8b"
    subprocess.run([sys.executable, str(REPO / "bench/make_sparse_checkpoint.py"), "--model", "8b", "--out", str(d)],
                   check=True, capture_output=True)
    return d


@pytest.fixture(scope="session")
def sparse8b(sparse8b_dir, shardfs) -> Sparse8B:
    return Sparse8B(sparse8b_dir, shardfs)


def span_of(rf: rankcheck.RankFile, key: str):
    """(record data start, end, OutTensor) of tensor `key`."""
    return next(s for s in rf.spans if s[2].key == key)


def source_span(t: rankcheck.OutTensor, first_row: int, last_row: int) -> tuple[str, int, int]:
    """(shard file, lo, hi): the source bytes behind output rows
    [first_row, last_row) of a single-source tensor."""
    assert len(t.parts) == 1
    st, src_row0, src_cols, col0 = t.parts[0]
    lo = st.base + ((src_row0 + first_row) * src_cols + col0) * 2
    hi = st.base + ((src_row0 + last_row - 1) * src_cols + col0 + t.cols) * 2
    return st.file, lo, hi


def check_range(mnt: Path, rf: rankcheck.RankFile, off: int, n: int) -> str | None:
    """None when MNT/path reads [off, off+n) exactly as the checker says."""
    e, got = pread_errno(mnt / rf.path, n, off)
    if e is not None:
        return f"{rf.path} pread({n}, {off}): {errname(e)}"
    want = rf.expected(off, n)
    if got != want:
        k = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
        return f"{rf.path} pread({n}, {off}): {len(got)} bytes, first difference at {off + k}"
    return None


# ---------------------------------------------------------------------------
# eiofs: a source whose reads fail


@pytest.fixture(scope="session")
def eiofs_bin(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eiofs") / "eiofs"
    flags = subprocess.run(["pkg-config", "fuse3", "--cflags", "--libs"], capture_output=True, text=True)
    assert flags.returncode == 0, f"pkg-config fuse3 failed (libfuse3-dev and pkg-config, scripts/setup.sh): {flags.stderr}"
    # cc (gcc on Debian); the Swift toolchain's clang serves as well
    compiler = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    assert compiler, "no C compiler (cc, clang or gcc) to build eiofs.c: apt-get install gcc"
    r = subprocess.run([compiler, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(HERE / "eiofs.c"),
                        *flags.stdout.split()], capture_output=True, text=True)
    assert r.returncode == 0, f"cc eiofs.c failed:\n{r.stderr}"
    return out


class EioFS:
    def __init__(self, exe: Path, tmp: Path):
        self.exe, self.tmp = exe, tmp
        self.live: list = []

    def mount(self, source: Path, fails: list[tuple[str, int, int]]) -> tuple[Path, Path]:
        mnt = new_mnt(self.tmp, f"eiofs-{len(self.live)}")
        log = self.tmp / f"eiofs-{len(self.live)}.log"
        env = dict(os.environ, EIOFS_SOURCE=str(source), EIOFS_LOG=str(log),
                   EIOFS_FAIL=",".join(f"{n}:{a}:{b}" for n, a, b in fails))
        err = open(self.tmp / f"eiofs-{len(self.live)}.stderr", "wb")
        p = subprocess.Popen([str(self.exe), str(mnt), "-f", "-o", "ro,fsname=eiofs"], env=env,
                             stdin=subprocess.DEVNULL, stdout=err, stderr=err)
        self.live.append((mnt, p))
        ok = wait_for(lambda: any(m == str(mnt) for m, _ in proc_mounts()) or p.poll() is not None, 10)
        assert ok and p.poll() is None, f"eiofs did not mount (exit {p.poll()}): {err.name}"
        return mnt, log

    def cleanup(self) -> None:
        for mnt, p in reversed(self.live):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


@pytest.fixture
def eiofs_mount(eiofs_bin, tmp_path):
    """Request before `mounts` so that shardfs (a client of the shim) is
    unmounted first."""
    fs = EioFS(eiofs_bin, tmp_path)
    try:
        yield fs
    finally:
        fs.cleanup()
    assert not [m for m, _ in fs.live if any(p == str(m) for p, _ in proc_mounts())], "eiofs mount left"


# (case, mount flags, tensor, dtype): which read path meets the failing bytes
EIO_CASES = [
    # full-width rows: the daemon hands the kernel the source range (splice)
    ("splice", [], "model.layers.0.self_attn.q_proj.weight", None),
    # the same bytes copied through the daemon (pread)
    ("no-splice", ["--no-splice"], "model.layers.0.self_attn.q_proj.weight", None),
    ("page-cache", ["--page-cache"], "model.layers.0.self_attn.q_proj.weight", None),
    # a 1 KiB column cut: gathered from the source's mmap, where the failing
    # page raises SIGBUS that the guard must turn into EIO
    ("gather", [], "model.layers.0.self_attn.o_proj.weight", None),
    # bf16 -> fp32: pread into the conversion buffer
    ("convert-f32", ["--dtype", "float32"], "model.layers.0.self_attn.q_proj.weight", "float32"),
]


@pytest.mark.parametrize("case,flags,key,dtype", EIO_CASES, ids=[c[0] for c in EIO_CASES])
def test_source_read_eio(eiofs_mount, mounts, sparse8b, shardfs, tmp_path, case, flags, key, dtype):
    """A source whose disk returns EIO for some pages: readers of the rank
    file ranges cut from those pages get EIO (not a hang, not zeros), the
    daemon logs the failing source, stays up, and serves the rest of that
    file and other files."""
    sp = sparse8b if dtype is None else Sparse8B(sparse8b.src, _WithDtype(shardfs, dtype))
    path = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    size, tensors = sp.files[path]
    t = tensors[key]
    rows = (t.rows // 2, t.rows // 2 + 64)
    shard, lo, hi = source_span(t, *rows)
    fail = (shard, lo // 4096 * 4096, -(-hi // 4096) * 4096)
    shim, shim_log = eiofs_mount.mount(sp.src, [fail])
    m = mounts.mount(shim, new_mnt(tmp_path), *LAYOUT_8B, *flags)
    pids = m.pids()
    rf = sp.rank_file(m.mnt, path)
    s, e, _ = span_of(rf, key)
    off = s + rows[0] * t.cols * t.itemsize
    n = (rows[1] - rows[0]) * t.cols * t.itemsize

    err, got = pread_errno(m.mnt / path, n, off)
    shim_hits = shim_log.read_text() if shim_log.exists() else ""
    assert "EIO " + shard in shim_hits, f"eiofs never failed a read of {shard} {fail} (the test missed its target)"
    assert err == errno.EIO, (f"[{case}] {path} rows {rows} of {key} (source {shard} bytes {lo}..{hi} fail): "
                              f"{errname(err) if err else f'returned {len(got)} bytes'}, expected EIO\n{log_tail(m.log)}")
    # again: a failure must not be cached as success, nor poison later reads
    err2, _ = pread_errno(m.mnt / path, 4096, off + 4096)
    assert err2 == errno.EIO, f"[{case}] second read of the failing range: {errname(err2)}, expected EIO"

    problems = []
    if not (is_mounted(m.mnt) and pids and all(_alive(p) for p in pids)):
        problems.append("the daemon died")
    # With splice the kernel reads the source while libfuse answers the
    # request: fuse_reply_data() itself replies EIO when the splice fails and
    # returns 0, so the daemon cannot know and logs nothing (RELIABILITY-STRESS.md).
    if not flags_splice(case) and shard not in m.log_text():
        problems.append(f"the daemon log does not name {shard}")
    # the same file outside the failing pages, and another stage's file
    emb_s, _, _ = span_of(rf, "model.embed_tokens.weight")
    for rfx, o, k in ((rf, 0, 1 << 20), (rf, emb_s + 12345, 3 << 20), (rf, s, 4096), (rf, e - 5000, 9000)):
        bad = check_range(m.mnt, rfx, o, k)
        if bad:
            problems.append(bad)
    other = sp.rank_file(m.mnt, "model/dp_rank_00_tp_rank_05_pp_rank_03.pt")
    for o in (0, other.size // 3, other.size - 100_000):
        bad = check_range(m.mnt, other, o, 100_000)
        if bad:
            problems.append(bad)
    assert not problems, f"[{case}]\n" + "\n".join(problems) + "\n" + log_tail(m.log)


def test_prefetch_meets_source_eio(eiofs_mount, mounts, sparse8b, tmp_path):
    """The prefetcher reads ahead of the reader (issue 11): when its read of
    the source fails, nothing is lost and nothing crashes. The failure shows
    in the source's own log before the reader gets there; the reader that
    needs those bytes then gets EIO, every other byte of the file still reads
    right, and the daemon stays up."""
    sp = sparse8b
    path = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    _, tensors = sp.files[path]
    key = "model.embed_tokens.weight"  # the file's first record
    t = tensors[key]
    rows = (64, 128)  # 8 KiB rows: 0.5-1 MiB into it, inside the 2 MiB read ahead at open
    shard, lo, hi = source_span(t, *rows)
    shim, shim_log = eiofs_mount.mount(sp.src, [(shard, lo // 4096 * 4096, -(-hi // 4096) * 4096)])
    m = mounts.mount(shim, new_mnt(tmp_path), *LAYOUT_8B)
    pids = m.pids()
    fd = os.open(m.mnt / path, os.O_RDONLY)  # opening starts the prefetch of its first window
    try:
        met = wait_for(lambda: shim_log.exists() and ("EIO " + shard) in shim_log.read_text(), 10.0)
        assert met, f"the prefetch never read the failing source range of {shard}\n{log_tail(m.log)}"
        rf = sp.rank_file(m.mnt, path)
        s, _, _ = span_of(rf, key)
        off = s + rows[0] * t.cols * t.itemsize
        err, got = pread_errno(m.mnt / path, (rows[1] - rows[0]) * t.cols * t.itemsize, off)
        assert err == errno.EIO, (f"{path} rows {rows} of {key}, whose source failed under the prefetch: "
                                  f"{errname(err) if err else f'returned {len(got)} bytes'}, expected EIO\n{log_tail(m.log)}")
        problems = [p for p in (check_range(m.mnt, rf, o, n) for o, n in ((0, 256 << 10), (s, 4096), (off + (1 << 20), 1 << 20),
                                                                          (rf.size - 100_000, 100_000))) if p]
        assert not problems, "\n".join(problems) + "\n" + log_tail(m.log)
        assert is_mounted(m.mnt) and pids and all(_alive(p) for p in pids), "the daemon died\n" + log_tail(m.log)
    finally:
        os.close(fd)


def test_shared_mapping_of_a_streamed_file(mounts, sparse8b, tmp_path):
    """Files of 8 MiB and more stream with direct_io (the default): a shared
    mapping is refused cleanly with ENODEV, a private one (torch.load(mmap=True))
    works; files below that size go through the page cache (test_mount_bytes.py)."""
    m = mounts.mount(sparse8b.src, new_mnt(tmp_path), *LAYOUT_8B)
    path = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    rf = sparse8b.rank_file(m.mnt, path)
    assert rf.size >= 8 << 20
    with open(m.mnt / path, "rb") as f:
        with pytest.raises(OSError) as failure:
            mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
        assert failure.value.errno == errno.ENODEV, f"{path}: MAP_SHARED failed with {failure.value}, not ENODEV"
        with mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ) as mm:
            assert mm[: 1 << 20] == rf.expected(0, 1 << 20)


def flags_splice(case: str) -> bool:
    """The failing bytes go to the kernel as a source range (splice)."""
    return case in ("splice", "page-cache")


class _WithDtype:
    """`shardfs plan ... --dtype D` through the conftest runner."""

    def __init__(self, shardfs, dtype):
        self.shardfs, self.dtype = shardfs, dtype

    def run(self, *args, **kw):
        return self.shardfs.run(*args, "--dtype", self.dtype, **kw)


# ---------------------------------------------------------------------------
# a source deleted or truncated while mounted (tiny checkpoint)


def _break(path: Path, how: str) -> None:
    if how == "delete":
        path.unlink()
    elif how == "truncate":
        os.truncate(path, path.stat().st_size // 2)
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["delete", "truncate"])
def test_source_deleted_or_truncated(shardfs, ckpts, mounts, tmp_path, how):
    """A shard deleted / truncated while mounted: within ~2.5 s every file
    using it fails with EIO (new opens, and a descriptor opened before), the
    log names the shard, files not using it read correctly, the daemon lives."""
    c = GQA_TP2_PP2
    src, exp, uses = converted_copy(shardfs, ckpts, tmp_path, c)
    shards = sorted(p.name for p in src.glob("*.safetensors"))
    shard = next((s for s in shards if 0 < sum(s in u for u in uses.values()) < len(uses)), None)
    assert shard is not None, f"no shard used by only some files: {uses}"
    users = sorted(n for n in exp.names if shard in uses[n])
    others = sorted(n for n in exp.names if shard not in uses[n])

    m = mounts.mount(src, new_mnt(tmp_path), *c.args)
    pids = m.pids()
    for n in exp.names:
        with open(m.model / n, "rb") as f:
            assert f.read() == exp.zeroed(n), f"{n} before the fault"
    old_fd = os.open(m.model / users[0], os.O_RDONLY)
    try:
        _break(src / shard, how)
        t0 = time.monotonic()

        def users_fail() -> bool:
            e, got = pread_errno(m.model / users[0], 64, len(exp.zeroed(users[0])) // 2)
            assert e in (None, errno.EIO), f"{users[0]} after {how} of {shard}: {errname(e)}, expected EIO"
            if e is None:
                want = exp.zeroed(users[0])[len(exp.zeroed(users[0])) // 2:][:64]
                assert got == want, f"{users[0]} after {how} of {shard}: wrong bytes before EIO"
            return e == errno.EIO
        assert wait_for(users_fail, 2.5, 0.05), (f"{users[0]} still served {time.monotonic() - t0:.1f} s after "
                                                 f"{how} of {shard}\n{log_tail(m.log)}")
        problems = []
        for n in users:
            e, _ = pread_errno(m.model / n, 1 << 20, 0)
            if e != errno.EIO:
                problems.append(f"{n} uses {shard}: {errname(e)}, expected EIO")
        # Small files go through the page cache: pages read before the fault
        # are dropped by the daemon's watcher within its poll (as test_mount_sources.py's
        # test_source_changed allows), never served for longer.
        def old_fd_fails() -> bool:
            _, exc = timed(lambda: os.pread(old_fd, 4096, 0))
            return isinstance(exc, OSError) and exc.errno == errno.EIO
        if not wait_for(old_fd_fails, 2.0, 0.1):
            _, exc = timed(lambda: os.pread(old_fd, 4096, 0))
            problems.append(f"{users[0]}: the descriptor opened before the {how} still reads 2 s after detection: {exc!r}")
        for n in others:
            err, got = pread_errno(m.model / n, len(exp.zeroed(n)) + 10, 0)
            if err is not None or got != exp.zeroed(n):
                problems.append(f"{n} does not use {shard} but reads {errname(err) if err else 'wrong bytes'}")
        if not wait_for(lambda: shard in m.log_text(), 2.0):
            problems.append(f"the daemon log does not name {shard}")
        if not (is_mounted(m.mnt) and all(_alive(p) for p in pids)):
            problems.append("the daemon died")
        assert not problems, f"[{how}]\n" + "\n".join(problems) + "\n" + log_tail(m.log)
    finally:
        os.close(old_fd)


# ---------------------------------------------------------------------------
# a source truncated while readers are in the middle of its files (8B)


def test_source_truncated_under_readers(mounts, sparse8b, tmp_path):
    """8 readers of random ranges (narrow column cuts through the mmap
    gather, full rows through splice) of files using shard 1; the shard is
    truncated to half its size mid-run. Every read returns the right bytes
    or EIO (never short, zero or other bytes, never a hang); within 2.5 s
    every read of those files is EIO; the daemon lives, logs the shard, and
    files not using it read correctly. (Whether the SIGBUS guard itself fired
    depends on the race; the log says so and the test prints it.)"""
    src = tmp_path / "src"
    src.mkdir()
    for p in sparse8b.src.iterdir():
        subprocess.run(["cp", "--sparse=always", str(p), str(src / p.name)], check=True)
    sp = sparse8b
    shard = "model-00001-of-00004.safetensors"
    users = sorted(p for p, u in sp.uses.items() if shard in u)
    others = sorted(p for p, u in sp.uses.items() if shard not in u)
    assert users and others
    m = mounts.mount(src, new_mnt(tmp_path), *LAYOUT_8B)
    pids = m.pids()
    rfs = [sp.rank_file(m.mnt, p) for p in users[:8]]
    # tensors of shard 1 only (so a read cannot pass by missing the shard)
    targets = []
    for rf in rfs:
        for s, e, t in rf.spans:
            if all(p[0].file == shard for p in t.parts) and t.nbytes >= 1 << 20:
                targets.append((rf, s, e))
    assert len(targets) >= 8

    stop = threading.Event()
    truncated = threading.Event()
    results = {"ok": 0, "eio_after": 0, "eio_before": 0}
    wrong: list = []
    lock = threading.Lock()

    def reader(i: int) -> None:
        rng = random.Random(i)
        fds = {}
        try:
            while not stop.is_set():
                rf, s, e = targets[rng.randrange(len(targets))]
                n = rng.choice([4096, 65536, 1 << 20, 3 << 20])
                off = rng.randrange(s, max(s + 1, e - n))
                was_truncated = truncated.is_set()
                try:
                    # open fails with EIO too once the source is known broken
                    fd = fds.get(rf.path) or fds.setdefault(rf.path, os.open(m.mnt / rf.path, os.O_RDONLY))
                    got = os.pread(fd, n, off)
                except OSError as ex:
                    with lock:
                        if ex.errno != errno.EIO:
                            wrong.append(f"{rf.path} pread({n}, {off}): {errname(ex.errno)}, expected EIO")
                        elif was_truncated:
                            results["eio_after"] += 1
                        else:
                            results["eio_before"] += 1
                    continue
                want = rf.expected(off, n)
                if len(got) < n and got == want[:len(got)] and truncated.is_set():
                    # A read in flight when the source shrank: its first
                    # requests were answered, a later one failed, and the
                    # kernel returns a direct_io read's bytes up to the failure.
                    with lock:
                        results["short_during"] = results.get("short_during", 0) + 1
                    continue
                if got != want:
                    with lock:
                        wrong.append(f"{rf.path} pread({n}, {off}): {len(got)} bytes that differ from the source's "
                                     f"({'after' if was_truncated else 'before'} the truncation)")
                with lock:
                    results["ok"] += 1
        finally:
            for fd in fds.values():
                os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    ok_before = results["ok"]
    # set first: a read that starts after this may meet the truncation; one
    # that started before (at most one per reader) may too, being in flight
    truncated.set()
    os.truncate(src / shard, (src / shard).stat().st_size // 2)
    t0 = time.monotonic()

    def all_users_fail() -> bool:
        return all(pread_errno(m.mnt / rf.path, 4096, s + 4096)[0] == errno.EIO for rf, s, _ in targets[:4])
    detected = wait_for(all_users_fail, 2.5, 0.05)
    took = time.monotonic() - t0
    time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(20)
    hung = [t.name for t in threads if t.is_alive()]
    log = m.log_text()
    guard = log.count("became shorter while being read") + log.count("shorter than its header says")
    print(f"\ntruncate under readers: {ok_before} good reads before, {results}; EIO everywhere after {took:.2f} s; "
          f"SIGBUS-guard / size-check log lines: {guard}")
    problems = []
    if hung:
        problems.append(f"readers {hung} hung after the truncation")
    if ok_before == 0:
        problems.append("no read completed before the truncation (the test did not load the daemon)")
    if results["eio_before"] > len(threads):
        problems.append(f"{results['eio_before']} EIO before the truncation (more than the {len(threads)} reads in flight)")
    problems += wrong[:10]
    if not detected:
        problems.append(f"files using {shard} still served 2.5 s after the truncation")
    if shard not in log:
        problems.append(f"the daemon log does not name {shard}")
    if not (is_mounted(m.mnt) and all(_alive(p) for p in pids)):
        problems.append("the daemon died")
    for p in others[:3]:
        rf = sp.rank_file(m.mnt, p)
        for o in (0, rf.size // 2, rf.size - 70_000):
            bad = check_range(m.mnt, rf, o, 1 << 20)
            if bad:
                problems.append(bad)
    assert not problems, "\n".join(problems) + "\n" + log_tail(m.log)


# ---------------------------------------------------------------------------
# the daemon killed under load


def test_daemon_killed_under_load(conversions, ckpts, mounts, tmp_path):
    """8 readers looping over 16 files; SIGKILL of the daemon: every reader's
    read fails with ENOTCONN/ECONNABORTED within 10 s (none hangs, none gets
    wrong bytes); `shardfs unmount` removes the dead mount; a new mount on
    the same point reads every file correctly."""
    c = MANY
    exp = expected_for(conversions, c)
    src = ckpts.get(c.ckpt).path
    mnt = new_mnt(tmp_path)
    m = mounts.mount(src, mnt, *c.args)
    pids = m.pids()
    assert len(pids) == 1, f"daemons for {mnt}: {pids}"
    wants = {n: exp.zeroed(n) for n in exp.names}
    reads = [0] * 8
    ended: dict = {}
    wrong: list = []

    def reader(i: int) -> None:
        rng = random.Random(i)
        try:
            while True:
                n = rng.choice(exp.names)
                w = wants[n]
                off = rng.randrange(len(w))
                k = rng.choice([1, 4096, 200_000, 1 << 20])
                with open(m.model / n, "rb", buffering=0) as f:
                    got = os.pread(f.fileno(), k, off)
                if got != w[off: off + k]:
                    wrong.append(f"{n} pread({k}, {off}): wrong bytes")
                reads[i] += 1
        except OSError as e:
            ended[i] = e.errno

    threads = [threading.Thread(target=reader, args=(i,), daemon=True) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.0)
    before = sum(reads)
    os.kill(pids[0], signal.SIGKILL)
    assert wait_for(lambda: not _alive(pids[0]), 10), f"daemon {pids[0]} survived SIGKILL"
    for t in threads:
        t.join(10)
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    assert not hung, f"readers {hung} still blocked 10 s after SIGKILL of the daemon"
    assert before > 0, "no read before the kill (the test did not load the daemon)"
    assert not wrong, "\n".join(wrong[:10])
    bad = {i: errname(e) for i, e in ended.items() if e not in DEAD}
    assert len(ended) == 8 and not bad, f"readers ended with {bad or ended}, expected ENOTCONN/ECONNABORTED"
    assert is_mounted(mnt), "the dead mount vanished by itself"

    r = mounts.unmount(mnt)
    assert r.returncode == 0, f"unmount of a dead mount:\n{r.describe()}"
    assert not is_mounted(mnt) and os.listdir(mnt) == []
    m2 = mounts.mount(src, mnt, *c.args)
    for n in exp.names:
        with open(m2.model / n, "rb") as f:
            assert f.read() == wants[n], f"{n} after remount"
    print(f"\ndaemon killed under load: {before} reads before SIGKILL, readers ended with "
          f"{sorted(errname(e) for e in ended.values())}")


# ---------------------------------------------------------------------------
# leases: a source rewritten in place while its bytes are being spliced


def _fresh_copy(src: Path, dest: Path) -> Path:
    """A private copy of the sparse checkpoint (holes kept), to rewrite."""
    subprocess.run(["cp", "-r", "--sparse=always", str(src), str(dest)], check=True)
    return dest


def _race_writer(m, rf, path: str, shard_path: Path, lo: int, hi: int, off: int, n: int, readers: int = 8):
    """`readers` threads pread [off, off+n) of MNT/path (256 KiB at a time)
    in a loop while one process-local writer opens `shard_path` for writing
    and overwrites its bytes [lo, hi) with 0xAB. Returns (outcomes, when the
    writer's open returned, when its write ended): outcomes are (start time,
    "ok" | "EIO" | what else happened)."""
    want = rf.expected(off, n)
    outcomes: list = []
    lock = threading.Lock()
    stop = threading.Event()
    times: dict = {}

    def reader(seed: int) -> None:
        rnd = random.Random(seed)
        fd = os.open(m.mnt / path, os.O_RDONLY)
        try:
            while not stop.is_set():
                start = rnd.randrange(0, n - (256 << 10)) // 4096 * 4096
                t = time.monotonic()
                try:
                    got = os.pread(fd, 256 << 10, off + start)
                    what = "ok" if got == want[start:start + len(got)] and len(got) == 256 << 10 else \
                        f"wrong bytes at {off + start} ({len(got)} bytes)"
                except OSError as e:
                    what = errname(e.errno)
                with lock:
                    outcomes.append((t, what))
        finally:
            os.close(fd)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for th in threads:
        th.start()
    time.sleep(0.5)
    t0 = time.monotonic()
    with open(shard_path, "r+b") as f:
        times["opened"] = time.monotonic()
        f.seek(lo)
        f.write(b"\xab" * (hi - lo))
        f.flush()
        os.fsync(f.fileno())
    times["written"] = time.monotonic()
    times["open_wait"] = times["opened"] - t0
    time.sleep(2.5)
    stop.set()
    for th in threads:
        th.join()
    return outcomes, times


def _status(shardfs, mnt: Path) -> dict:
    r = shardfs.run("status", mnt, "--json")
    assert r.returncode == 0, r.describe()
    return json.loads(r.stdout)


def test_rewrite_during_spliced_reads_under_a_lease(mounts, sparse8b, shardfs, tmp_path):
    """A leased source (local disk) rewritten in place while 8 readers read
    bytes spliced from it: the writer's open waits for the reads in flight;
    no read returns anything but the old bytes or EIO; every read that
    starts after the writer got in fails with EIO; status counts the break."""
    src = _fresh_copy(sparse8b.src, tmp_path / "src")
    path = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    size, tensors = sparse8b.files[path]
    key = "model.layers.0.self_attn.q_proj.weight"  # full-width rows: spliced
    t = tensors[key]
    shard, lo, hi = source_span(t, 0, t.rows)
    m = mounts.mount(src, new_mnt(tmp_path), *LAYOUT_8B)
    rf = sparse8b.rank_file(m.mnt, path)
    s, e, _ = span_of(rf, key)
    assert e - s > (1 << 20)
    before = _status(shardfs, m.mnt)["sources"]
    assert before["splicing"] == "always" and before["leased"] >= 1, before
    outcomes, times = _race_writer(m, rf, path, src / shard, lo, hi, s, e - s)
    bad = [w for _, w in outcomes if w not in ("ok", "EIO")]
    assert not bad, f"{len(bad)} reads got neither the old bytes nor EIO: {bad[:5]}\n{log_tail(m.log)}"
    assert any(w == "ok" for t0, w in outcomes if t0 < times["opened"]), "no read succeeded before the write"
    late = [w for t0, w in outcomes if t0 > times["opened"]]
    assert late and all(w == "EIO" for w in late), f"reads after the writer got in: {sorted(set(late))}"
    after = _status(shardfs, m.mnt)["sources"]
    assert after["leasesBroken"] >= 1, after
    assert shard in m.log_text()


@pytest.mark.parametrize("splicing", ["always", "leased"])
def test_rewrite_where_no_lease_holds(eiofs_mount, mounts, sparse8b, shardfs, tmp_path, splicing):
    """Sources on a FUSE file system (the tests' passthrough shim, writes
    made to its backing files as another node would): no lease is taken;
    status says why. By default they are spliced and checked after each
    reply; with --splice-sources leased copied and checked before. Either
    way a read returns the old bytes, the new ones (the race reading the
    file directly has too) or EIO, and within a few seconds of the write
    every read fails with EIO."""
    src = _fresh_copy(sparse8b.src, tmp_path / "src")
    shim, _ = eiofs_mount.mount(src, [])
    path = "model/dp_rank_00_tp_rank_00_pp_rank_00.pt"
    size, tensors = sparse8b.files[path]
    key = "model.layers.0.self_attn.q_proj.weight"
    t = tensors[key]
    shard, lo, hi = source_span(t, 0, t.rows)
    m = mounts.mount(shim, new_mnt(tmp_path), *LAYOUT_8B, "--splice-sources", splicing)
    rf = sparse8b.rank_file(m.mnt, path)
    s, e, _ = span_of(rf, key)
    status = _status(shardfs, m.mnt)["sources"]
    assert status["splicing"] == splicing and status["leased"] == 0 and status["unleased"] >= 1, status
    assert all("FUSE file system" in why for why in status["unleasedExamples"]), status
    outcomes, times = _race_writer(m, rf, path, src / shard, lo, hi, s, e - s)
    # 0xAB bytes are "wrong bytes" to the checker: allowed while racing the write.
    odd = [w for _, w in outcomes if w != "ok" and w != "EIO" and not w.startswith("wrong bytes")]
    assert not odd, odd[:5]
    settled = [w for t0, w in outcomes if t0 > times["written"] + 2.0]
    assert settled and all(w == "EIO" for w in settled), \
        f"reads 2 s after the write: {sorted(set(settled))}\n{log_tail(m.log)}"
