"""Helpers to compare .pt files byte for byte (docs/formats/pt.md) and to explain
where two files differ (which zip record / region, and for data.pkl which
pickle opcode)."""

from __future__ import annotations

import io
import os
import pickletools
import re
import shutil
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

import zipdir

SER_ID = ".data/serialization_id"


def zip_layout(path) -> zipdir.Directory:
    """The records of a .pt file (zipdir: name, header, data and CRC offsets)."""
    return zipdir.of_file(path)


def serialization_id_span(path) -> tuple[int, int]:
    lay = zip_layout(path)
    hits = [m for m in lay.members if m.name.endswith("/" + SER_ID)]
    if len(hits) != 1:
        raise AssertionError(f"{path}: {len(hits)} {SER_ID} records")
    return hits[0].data_offset, hits[0].size


def describe_offset(path, off: int) -> str:
    lay = zip_layout(path)
    ms = sorted(lay.members, key=lambda m: m.header_offset)
    for i, m in enumerate(ms):
        nxt = ms[i + 1].header_offset if i + 1 < len(ms) else lay.cd_offset
        if m.header_offset <= off < m.data_offset:
            return f"local header of {m.name!r} (+{off - m.header_offset})"
        if m.data_offset <= off < m.data_offset + m.size:
            return f"data of {m.name!r} (+{off - m.data_offset} of {m.size})"
        if m.data_offset + m.size <= off < nxt:
            return f"data descriptor after {m.name!r} (+{off - m.data_offset - m.size})"
    if off >= lay.cd_offset:
        return f"central directory / end records (cd at {lay.cd_offset}, +{off - lay.cd_offset})"
    return f"offset {off} (before first record?)"


def first_difference(a_path, b_path, a_skip=(), b_skip=(), chunk=1 << 24) -> Optional[int]:
    """First differing offset of two files (None if equal), with the byte
    ranges a_skip / b_skip ((offset, length) pairs) blanked in each. If the
    sizes differ and the common prefix is equal, returns the shorter size.
    Reads with plain file I/O (no mapping) so that multi-GiB files do not
    inflate the resident set."""
    sa, sb = os.path.getsize(a_path), os.path.getsize(b_path)
    n = min(sa, sb)
    ba, bb = np.empty(chunk, np.uint8), np.empty(chunk, np.uint8)
    with open(a_path, "rb", buffering=0) as fa, open(b_path, "rb", buffering=0) as fb:
        for start in range(0, n, chunk):
            end = min(n, start + chunk)
            ca, cb = ba[: end - start], bb[: end - start]
            for f, buf in ((fa, ca), (fb, cb)):
                mv, got = memoryview(buf), 0
                while got < len(buf):
                    k = f.readinto(mv[got:])
                    if not k:
                        raise AssertionError(f"short read of {f.name}")
                    got += k
            for arr, skips in ((ca, a_skip), (cb, b_skip)):
                for off, ln in skips:
                    lo, hi = max(off, start), min(off + ln, end)
                    if lo < hi:
                        arr[lo - start : hi - start] = 0
            if not np.array_equal(ca, cb):
                return start + int(np.nonzero(ca != cb)[0][0])
    return None if sa == sb else n


def pickle_diff(a_pkl: bytes, b_pkl: bytes, context: int = 4) -> str:
    """Disassemble both pickles and show the first differing opcode line."""

    def dis(b):
        s = io.StringIO()
        try:
            pickletools.dis(b, out=s)
        except Exception as e:  # noqa: BLE001
            s.write(f"<pickletools failed: {e}>\n")
        # drop the byte position column so that a shift does not hide the op
        return [re.sub(r"^\s*\d+:\s*", "", ln) for ln in s.getvalue().splitlines()]

    la, lb = dis(a_pkl), dis(b_pkl)
    for i in range(max(len(la), len(lb))):
        x = la[i] if i < len(la) else "<end>"
        y = lb[i] if i < len(lb) else "<end>"
        if x != y:
            lo = max(0, i - context)
            ctx = "\n".join("      " + t for t in la[lo:i])
            return f"pickle differs at op #{i}:\n{ctx}\n  got:      {x}\n  expected: {y}"
    return "pickles disassemble identically (differ in bytes only)"


def explain_difference(actual, expected, off: int) -> str:
    msg = [
        f"first difference at byte {off}: actual {describe_offset(actual, off) if off < os.path.getsize(actual) else 'EOF'}"
        f"; expected {describe_offset(expected, off) if off < os.path.getsize(expected) else 'EOF'}",
        f"sizes: actual {os.path.getsize(actual)}, expected {os.path.getsize(expected)}",
    ]
    with open(actual, "rb") as fa, open(expected, "rb") as fb:
        fa.seek(max(0, off - 16))
        fb.seek(max(0, off - 16))
        msg.append(f"actual   bytes @{max(0, off - 16)}: {fa.read(48).hex(' ')}")
        msg.append(f"expected bytes @{max(0, off - 16)}: {fb.read(48).hex(' ')}")
    try:
        la, lb = zip_layout(actual), zip_layout(expected)
        na = [(m.name, m.header_offset, m.data_offset, m.size, m.extra.hex()) for m in la.members]
        nb = [(m.name, m.header_offset, m.data_offset, m.size, m.extra.hex()) for m in lb.members]
        if [x[0] for x in na] != [x[0] for x in nb]:
            msg.append(f"record names differ:\n  actual   {[x[0] for x in na]}\n  expected {[x[0] for x in nb]}")
        else:
            for x, y in zip(na, nb):
                if x != y:
                    msg.append(f"first differing record {x[0]!r}: actual (hdr, data, size, extra)={x[1:]} expected={y[1:]}")
                    break
        pa = [m for m in la.members if m.name.endswith("/data.pkl")]
        pb = [m for m in lb.members if m.name.endswith("/data.pkl")]
        if pa and pb:
            with zipfile.ZipFile(actual) as za, zipfile.ZipFile(expected) as zb:
                a_pkl, b_pkl = za.read(pa[0].name), zb.read(pb[0].name)
            if a_pkl != b_pkl:
                msg.append(pickle_diff(a_pkl, b_pkl))
    except Exception as e:  # noqa: BLE001
        msg.append(f"(could not parse zip for details: {e!r})")
    return "\n".join(msg)


def adopt_serialization_id(path, ident: bytes) -> None:
    """Rewrite, in place, the 40-digit serialization id of a torch.save'd
    file and, if the file carries CRCs (non-zero), that record's CRC-32 in
    its data descriptor and central directory entry."""
    off, n = serialization_id_span(path)
    assert len(ident) == n, (ident, n)
    record = [m for m in zip_layout(path).members if m.name.endswith("/" + SER_ID)][0]
    assert record.dd_crc_offset == off + n + 4, f"{path}: {record.name} has no data descriptor right after its data"
    new_crc = zlib.crc32(ident) if record.crc != 0 else 0
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(ident)
        for field in (record.dd_crc_offset, record.cd_crc_offset):
            f.seek(field)
            f.write(struct.pack("<I", new_crc))


def assert_same_pt_bytes(actual, expected, what: str = "") -> None:
    """actual == expected byte for byte except the 40 digits of
    .data/serialization_id. The expected file (a scratch torch.save output)
    is given actual's id first -- with its CRC-32 recomputed, since a
    persisted file carries real CRCs -- and then compared in full."""
    ident = serialization_id(actual)
    adopt_serialization_id(expected, ident)
    off = first_difference(actual, expected)
    if off is not None:
        raise AssertionError(
            f"{Path(actual).name} differs from {what or Path(expected)} "
            f"(serialization id excluded):\n" + explain_difference(actual, expected, off)
        )


def assert_same_except_id(actual, other, scratch: Path, what: str = "") -> None:
    """Like assert_same_pt_bytes for two files that must not be modified:
    compares actual with a scratch copy of other."""
    scratch = Path(scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    copy = scratch / Path(other).name
    shutil.copyfile(other, copy)
    assert_same_pt_bytes(actual, copy, what or str(other))


def serialization_id(path) -> bytes:
    off, n = serialization_id_span(path)
    with open(path, "rb") as f:
        f.seek(off)
        return f.read(n)
