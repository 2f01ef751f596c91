"""`shardfs mount`: every mounted file reads exactly as `convert` writes it
(the zip CRC fields aside, which are 0), whole, in random ranges, under
every mount option, to concurrent readers, and after a remount in another
layout."""

from __future__ import annotations

import mmap
import os
import random
import threading
import zlib

import pytest

from mounting import (  # the fixtures (mounts, ...) come from conftest.py
    _alive, assert_file_equals, assert_tree, BIG, boundaries, CASE_BY_ID, CASES, expected_for, GQA_TP2_PP2,
    GQA_TP4_M2, is_mounted, load_pair, log_tail, MANY, new_mnt, READ_MODES, wait_for,
)

pytestmark = pytest.mark.mount


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
