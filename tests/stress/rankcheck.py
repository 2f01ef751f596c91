"""Expected bytes of any range of any rank file of a mount over a sparse
checkpoint made by bench/make_sparse_checkpoint.py, computed without the
Swift engine.

What the checker trusts, and what it does not:
- The slice description comes from `shardfs plan --json` (per output tensor:
  an ordered list of sources, each `rows` x `columns` of a safetensors
  tensor, concatenated along dim 0). The plan's correctness against NxD's
  converter is the compat suite's job (tests/compat/test_reference.py);
  here it only says *which* source bytes land where.
- Source bytes are NOT read from the source: they are the fill pattern of
  make_sparse_checkpoint.py (`pattern_regions` + the word formula), zeros
  elsewhere, so a daemon serving the wrong source range, a stale page or a
  torn buffer cannot agree with it by accident.
- Zip structure and data.pkl are read from the mount once per file and
  validated (central directory consistent with the local headers, every
  tensor record's size = numel * itemsize of the plan's shape and dtype,
  data.pkl's keys / shapes / dtypes = the plan's, CRC fields 0); those
  non-tensor bytes are cached and later reads must return them unchanged.
"""

from __future__ import annotations

import collections
import io
import json
import os
import pickle
import re
import struct
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO / "tests" / "compat"))
import make_sparse_checkpoint as msc  # noqa: E402
import zipdir  # noqa: E402

OUT_ITEMSIZE = {"bfloat16": 2, "float32": 4}
STORAGE_DTYPE = {"BFloat16Storage": "bfloat16", "FloatStorage": "float32", "HalfStorage": "float16"}
SHARD_RE = re.compile(r"model-(\d+)-of-(\d+)\.safetensors$")


class CheckerError(Exception):
    """The rank file's structure disagrees with the plan (not a byte mismatch)."""


# ---------------------------------------------------------------------------
# the sparse source: where each tensor's bytes are, and the pattern


@dataclass
class SourceTensor:
    file: str                # the shard's file name
    shard_no: int            # 1-based, as in the pattern formula
    base: int                # file offset of the tensor's first byte
    shape: tuple
    regions_start: np.ndarray  # pattern regions of the whole shard (sorted)
    regions_end: np.ndarray


def read_safetensors_header(path: Path) -> tuple[int, dict]:
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return 8 + n, json.loads(f.read(n))


class SparseSource:
    """The expected content of a make_sparse_checkpoint.py checkpoint."""

    def __init__(self, src: Path):
        self.src = Path(src)
        self.tensors: dict[tuple[str, str], SourceTensor] = {}
        for p in sorted(self.src.glob("*.safetensors")):
            m = SHARD_RE.search(p.name)
            if not m:
                raise CheckerError(f"{p}: not a model-0000i-of-0000N.safetensors name")
            shard_no = int(m.group(1))
            data_start, hdr = read_safetensors_header(p)
            offsets = {k: tuple(v["data_offsets"]) for k, v in hdr.items() if k != "__metadata__"}
            data_end = data_start + max((e for _, e in offsets.values()), default=0)
            regions = msc.pattern_regions(data_start, offsets, data_end)
            starts = np.array([o for o, _ in regions], dtype=np.int64)
            ends = np.array([o + n for o, n in regions], dtype=np.int64)
            for k, v in hdr.items():
                if k == "__metadata__":
                    continue
                if v["dtype"] != "BF16":
                    raise CheckerError(f"{p.name}: {k} is {v['dtype']}; the sparse checkpoints are BF16")
                self.tensors[(p.name, k)] = SourceTensor(p.name, shard_no, data_start + v["data_offsets"][0],
                                                         tuple(v["shape"]), starts, ends)

    @staticmethod
    def words_at(st: SourceTensor, offs: np.ndarray) -> np.ndarray:
        """uint16 source words at the (even) file offsets `offs` of the shard."""
        j = np.searchsorted(st.regions_start, offs, side="right") - 1
        inside = (j >= 0) & (offs < st.regions_end[np.maximum(j, 0)])
        e = (offs[inside] // 2).astype(np.uint64)
        x = (e * np.uint64(0x9E3779B1) + np.uint64((st.shard_no * 0x85EBCA6B) & 0xFFFFFFFF)) & np.uint64(0xFFFFFFFF)
        x ^= x >> np.uint64(15)
        out = np.zeros(offs.shape, dtype=np.uint16)
        out[inside] = (np.uint64(0x3800) | (x & np.uint64(0x87FF))).astype(np.uint16)
        return out


# ---------------------------------------------------------------------------
# one output tensor: element index -> source offset


@dataclass
class OutTensor:
    key: str
    shape: tuple
    dtype: str
    rows: int
    cols: int
    out_row_starts: np.ndarray  # first output row of each source
    parts: list                 # (SourceTensor, src_row0, src_cols, col0)

    @property
    def itemsize(self) -> int:
        return OUT_ITEMSIZE[self.dtype]

    @property
    def nbytes(self) -> int:
        return self.rows * self.cols * self.itemsize

    def expected(self, a: int, b: int) -> bytes:
        """Bytes [a, b) of this tensor's record data."""
        isz = self.itemsize
        e0, e1 = a // isz, -(-b // isz)
        idx = np.arange(e0, e1, dtype=np.int64)
        r = idx // self.cols
        c = idx - r * self.cols
        words = np.empty(idx.shape, dtype=np.uint16)
        si = np.searchsorted(self.out_row_starts, r, side="right") - 1
        for s, (st, src_row0, src_cols, col0) in enumerate(self.parts):
            m = si == s
            if not m.any():
                continue
            offs = st.base + ((src_row0 + r[m] - self.out_row_starts[s]) * src_cols + col0 + c[m]) * 2
            words[m] = SparseSource.words_at(st, offs)
        if self.dtype == "bfloat16":
            raw = words.astype("<u2").tobytes()
        else:  # float32: bf16 is the high half of the float32 bit pattern
            raw = (words.astype(np.uint32) << np.uint32(16)).astype("<u4").tobytes()
        skip = a - e0 * isz
        return raw[skip: skip + (b - a)]


def out_tensors(plan: dict, source: SparseSource) -> dict[str, dict[str, OutTensor]]:
    """rank file path ('model/...pt') -> {key: OutTensor}."""
    files = {}
    for f in plan["files"]:
        ts = {}
        for t in f["tensors"]:
            shape = tuple(t["shape"])
            rows, cols = (shape[0], shape[1]) if len(shape) == 2 else (1, shape[0])
            if len(shape) not in (1, 2):
                raise CheckerError(f"{t['key']}: shape {shape} (the checker knows 1-D and 2-D)")
            starts, parts, at = [], [], 0
            for s in t["sources"]:
                st = source.tensors[(s["file"], s["tensor"])]
                src_cols = st.shape[1] if len(st.shape) == 2 else st.shape[0]
                r0, r1 = s["rows"]
                c0, c1 = s["columns"]
                if c1 - c0 != cols:
                    raise CheckerError(f"{t['key']}: source {s} has {c1 - c0} columns, the tensor {cols}")
                starts.append(at)
                parts.append((st, r0, src_cols, c0))
                at += r1 - r0
            if at != rows:
                raise CheckerError(f"{t['key']}: sources give {at} rows, the shape says {rows}")
            if t["dtype"] not in OUT_ITEMSIZE:
                raise CheckerError(f"{t['key']}: dtype {t['dtype']} (the checker knows {sorted(OUT_ITEMSIZE)})")
            ts[t["key"]] = OutTensor(t["key"], shape, t["dtype"], rows, cols,
                                     np.array(starts, dtype=np.int64), parts)
        files[f["path"]] = (f["size"], ts)
    return files


# ---------------------------------------------------------------------------
# the rank file: zip structure and data.pkl


class _Rebuilt:
    def __init__(self, storage, offset, size, stride, *rest):
        self.storage, self.offset, self.size, self.stride = storage, offset, tuple(size), tuple(stride)


class _PklReader(pickle.Unpickler):
    """data.pkl without torch: tensors become _Rebuilt(storage id, ...)."""

    def find_class(self, module, name):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _Rebuilt
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if module == "torch" and name in STORAGE_DTYPE:
            return name
        raise CheckerError(f"data.pkl refers to {module}.{name}, which a rank file should not")

    def persistent_load(self, pid):
        # ('storage', storage type, key, location, numel)
        return tuple(pid)


def parse_zip(pread: Callable[[int, int], bytes], size: int) -> zipdir.Directory:
    """The archive's records (tests/compat/zipdir.py), through pread(offset, n)."""
    try:
        return zipdir.read(pread, size)
    except zipdir.ZipFormatError as e:
        raise CheckerError(str(e)) from None


@dataclass
class RankFile:
    path: str                 # 'model/....pt'
    size: int
    # tensor record data spans, sorted: (start, end, OutTensor)
    spans: list = field(default_factory=list)
    span_starts: Optional[np.ndarray] = None
    # every byte outside tensor data, as read once from the mount: (start, bytes)
    meta: list = field(default_factory=list)
    meta_starts: Optional[np.ndarray] = None
    boundaries: list = field(default_factory=list)

    def expected(self, off: int, n: int) -> bytes:
        """Bytes [off, off + n) (clipped at EOF)."""
        end = min(off + n, self.size)
        out = bytearray()
        pos = off
        while pos < end:
            i = int(np.searchsorted(self.span_starts, pos, side="right")) - 1
            if i >= 0 and pos < self.spans[i][1]:
                s, e, t = self.spans[i]
                stop = min(end, e)
                out += t.expected(pos - s, stop - s)
                pos = stop
                continue
            j = int(np.searchsorted(self.meta_starts, pos, side="right")) - 1
            ms, mb = self.meta[j]
            if not (0 <= j and ms <= pos < ms + len(mb)):
                raise CheckerError(f"{self.path}: offset {pos} is neither tensor data nor cached metadata")
            stop = min(end, ms + len(mb))
            out += mb[pos - ms: stop - ms]
            pos = stop
        return bytes(out)


def load_rank_file(path: str, size: int, tensors: dict[str, OutTensor],
                   pread: Callable[[int, int], bytes], crc_zero: bool = True) -> RankFile:
    """Parses and validates one rank file through pread; caches its
    non-tensor bytes. crc_zero: the CRC fields must be 0 (a mount)."""
    directory = parse_zip(pread, size)
    names = [r.name for r in directory.members]
    pkl = [r for r in directory.members if r.name.endswith("/data.pkl")]
    if len(pkl) != 1:
        raise CheckerError(f"{path}: {len(pkl)} data.pkl records in {names[:8]}...")
    prefix = pkl[0].name[: -len("data.pkl")]
    state = _PklReader(io.BytesIO(pread(pkl[0].data_offset, pkl[0].size))).load()
    if list(state.keys()) != list(tensors.keys()):
        raise CheckerError(f"{path}: data.pkl keys {list(state)[:4]}... differ from the plan's {list(tensors)[:4]}...")
    by_name = directory.by_name()
    rf = RankFile(path, size)
    for key, t in tensors.items():
        v = state[key]
        kind, stype, skey, _loc, numel = v.storage
        if kind != "storage" or STORAGE_DTYPE.get(stype) != t.dtype:
            raise CheckerError(f"{path}: {key}: storage {v.storage}, plan dtype {t.dtype}")
        if v.size != t.shape or v.offset != 0 or numel != t.rows * t.cols:
            raise CheckerError(f"{path}: {key}: size {v.size} offset {v.offset} numel {numel}, plan shape {t.shape}")
        rec = by_name.get(f"{prefix}data/{skey}")
        if rec is None:
            raise CheckerError(f"{path}: {key}: no record {prefix}data/{skey}")
        if rec.size != t.nbytes:
            raise CheckerError(f"{path}: {key}: record of {rec.size} bytes, the plan's tensor has {t.nbytes}")
        if crc_zero and rec.crc != 0:
            raise CheckerError(f"{path}: {rec.name}: central directory CRC {rec.crc:#x}, a mount serves 0")
        rf.spans.append((rec.data_offset, rec.data_offset + rec.size, t))
    rf.spans.sort(key=lambda s: s[0])
    rf.span_starts = np.array([s[0] for s in rf.spans], dtype=np.int64)
    pos = 0
    for s, e, _ in rf.spans:
        if s < pos:
            raise CheckerError(f"{path}: tensor records overlap at {s}")
        if s > pos:
            rf.meta.append((pos, pread(pos, s - pos)))
        pos = e
    if pos < size:
        rf.meta.append((pos, pread(pos, size - pos)))
    for ms, mb in rf.meta:
        if len(mb) == 0:
            raise CheckerError(f"{path}: empty read of metadata at {ms}")
    rf.meta_starts = np.array([m[0] for m in rf.meta], dtype=np.int64)
    rf.boundaries = zipdir.boundaries(directory)
    return rf


def pread_full(fd: int) -> Callable[[int, int], bytes]:
    def rd(off: int, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            b = os.pread(fd, n - len(out), off + len(out))
            if not b:
                raise CheckerError(f"short read at {off + len(out)} (wanted {n} from {off})")
            out += b
        return bytes(out)
    return rd


def zero_crc_fields(data: bytearray, directory: zipdir.Directory) -> None:
    """For checking `shardfs convert` output: zero the CRC-32 fields (central
    directory, and data descriptor or local header), which a mount serves as 0."""
    zipdir.zero_crcs(data, directory)
