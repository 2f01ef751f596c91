"""The records of a zip archive as its central directory lists them (zip64
aware), with where each record's bytes and CRC-32 fields lie: the one
parser of the tests (tests/compat, and tests/stress's checker, which reads
through a mount with pread), to compare files record by record, zero or
damage a field, or aim reads at a boundary.

Reads only what a torch.save archive holds: stored records (no
compression), one disk. Anything else, or an archive whose entries
disagree with their local headers, raises ZipFormatError.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from typing import Callable, Optional

# The end record is 22 bytes, after at most a 65,535-byte comment.
_TAIL = 22 + 0xFFFF


class ZipFormatError(AssertionError):
    """The archive is not one this parser reads, or contradicts itself."""


@dataclass(frozen=True)
class Record:
    name: str
    header_offset: int  # the local header
    data_offset: int
    size: int
    crc: int  # as the central directory entry holds it
    central_offset: int  # the central directory entry
    dd_crc_offset: Optional[int]  # the data descriptor's CRC field; None: no descriptor
    descriptor_end: int  # where the record (its descriptor included) ends
    extra: bytes  # the local header's extra field

    @property
    def cd_crc_offset(self) -> int:
        """The CRC-32 field of the central directory entry."""
        return self.central_offset + 16

    @property
    def local_crc_offset(self) -> int:
        """The CRC-32 field a reader checks besides the central one: the
        data descriptor's, or the local header's when there is none."""
        return self.dd_crc_offset if self.dd_crc_offset is not None else self.header_offset + 14


@dataclass(frozen=True)
class Directory:
    members: list  # of Record, in central directory order
    cd_offset: int
    end_offset: int  # the end of central directory record
    file_size: int

    def by_name(self) -> dict:
        return {r.name: r for r in self.members}


def read(pread: Callable[[int, int], bytes], size: int) -> Directory:
    """The directory of an archive of `size` bytes, read with pread(offset, n)."""
    tail_n = min(size, _TAIL)
    tail = pread(size - tail_n, tail_n)
    e = tail.rfind(b"PK\x05\x06")
    if e < 0 or e + 22 > len(tail):
        raise ZipFormatError("no end of central directory record")
    end = size - tail_n + e
    disk, cd_disk, _, n_total, cd_size, cd_off = struct.unpack("<HHHHII", tail[e + 4: e + 20])
    if n_total == 0xFFFF or cd_size == 0xFFFFFFFF or cd_off == 0xFFFFFFFF:
        loc = pread(end - 20, 20)
        if loc[:4] != b"PK\x06\x07":
            raise ZipFormatError("zip64 sizes but no zip64 end of central directory locator")
        (z64,) = struct.unpack("<Q", loc[8:16])
        rec = pread(z64, 56)
        if rec[:4] != b"PK\x06\x06":
            raise ZipFormatError(f"no zip64 end of central directory record at {z64}")
        disk, cd_disk = struct.unpack("<II", rec[16:24])
        n_total, cd_size, cd_off = struct.unpack("<QQQ", rec[32:56])
    if disk != 0 or cd_disk != 0:
        raise ZipFormatError(f"an archive of several disks (this is disk {disk}, the directory on {cd_disk})")
    cd = pread(cd_off, cd_size)
    members, p = [], 0
    for _ in range(n_total):
        if cd[p: p + 4] != b"PK\x01\x02":
            raise ZipFormatError(f"bad central directory entry at {cd_off + p}")
        flags, method = struct.unpack("<HH", cd[p + 8: p + 12])
        crc, csize, usize = struct.unpack("<III", cd[p + 16: p + 28])
        n, ex, c = struct.unpack("<HHH", cd[p + 28: p + 34])
        (lho,) = struct.unpack("<I", cd[p + 42: p + 46])
        name = cd[p + 46: p + 46 + n].decode()
        extra = cd[p + 46 + n: p + 46 + n + ex]
        q = 0
        while q + 4 <= len(extra):
            hid, hlen = struct.unpack("<HH", extra[q: q + 4])
            if hid == 1:
                # Only the fields that overflowed, in this order.
                vals = list(struct.unpack(f"<{hlen // 8}Q", extra[q + 4: q + 4 + hlen - hlen % 8]))
                if usize == 0xFFFFFFFF:
                    usize = vals.pop(0)
                if csize == 0xFFFFFFFF:
                    csize = vals.pop(0)
                if lho == 0xFFFFFFFF:
                    lho = vals.pop(0)
            q += 4 + hlen
        if method != 0 or csize != usize:
            raise ZipFormatError(f"{name}: compressed (method {method}, {csize} of {usize} bytes); records are stored")
        lh = pread(lho, 30)
        if lh[:4] != b"PK\x03\x04":
            raise ZipFormatError(f"{name}: no local header at {lho}")
        ln, le = struct.unpack("<HH", lh[26:30])
        local = pread(lho + 30, ln + le)
        if local[:ln].decode() != name:
            raise ZipFormatError(f"{name}: the local header at {lho} names another record")
        data = lho + 30 + ln + le
        if flags & 8:
            after = data + csize
            dd_crc = after + 4 if pread(after, 4) == b"PK\x07\x08" else after
            zip64 = usize >= 0xFFFFFFFF or csize >= 0xFFFFFFFF
            descriptor_end = dd_crc + 4 + (16 if zip64 else 8)
        else:
            dd_crc, descriptor_end = None, data + csize
        members.append(Record(name, lho, data, csize, crc, cd_off + p, dd_crc, descriptor_end, local[ln:]))
        p += 46 + n + ex + c
    return Directory(members, cd_off, end, size)


def of_bytes(data) -> Directory:
    """The directory of an archive held in memory (bytes or bytearray)."""
    return read(lambda o, n: bytes(data[o: o + n]), len(data))


def of_file(path) -> Directory:
    """The directory of the archive at `path`, reading only its metadata."""
    with open(path, "rb") as f:
        fd = f.fileno()
        return read(lambda o, n: os.pread(fd, n, o), os.fstat(fd).st_size)


def zero_crcs(data: bytearray, directory: Optional[Directory] = None) -> None:
    """Zeroes, in place, every CRC-32 field of the archive `data` (central
    directory entries, and data descriptors or local headers): what a
    mount serves there."""
    for r in (directory or of_bytes(data)).members:
        for at in (r.cd_crc_offset, r.local_crc_offset):
            data[at: at + 4] = b"\0\0\0\0"


def boundaries(directory: Directory) -> list:
    """Offsets where a read is most likely to be cut wrongly: record
    headers, data starts and ends, descriptors, the central directory, the
    end record, EOF."""
    pts = {0, directory.cd_offset, directory.end_offset, directory.file_size}
    for r in directory.members:
        pts.update((r.header_offset, r.data_offset, r.data_offset + r.size, r.descriptor_end))
        if r.dd_crc_offset is not None:
            pts.add(r.dd_crc_offset)
    return sorted(pts)
