"""A record past 4 GiB: zip64 framing must equal torch.save's.

The source is a hand-written 1-layer bf16 checkpoint whose embed_tokens and
lm_head [2^24+8, 64] are a sparse hole (zeros, no disk). Converted with
--dtype float32 at tp 1 pp 1, the one rank file holds two records of
4 GiB + 2 KiB each: embed (size >= 4 GiB, offset below), lm_head (size and
offset >= 4 GiB), and then small records at offsets >= 4 GiB. The reference
is torch.save of the same dict, the big tensors being zeros backed by
never-written anonymous memory (so memory stays low); every byte must match
except the serialization id -- framing, pickle, data and CRCs (convert
writes real CRCs).

torch.save must write the reference by path (a stream would name the
archive "archive"), so it takes 8 GiB of disk; once written, the data of its
two big records (zeros by construction) is punched out as holes, and only
then does convert write its own 8 GiB. Needs ~9 GiB of free disk for a few
minutes, all removed at the end; where the disk has less free, the test
says so and skips rather than fill it.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import shutil
import struct
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

import checkpoints as C
from checks import files_under
from ptfile import assert_same_pt_bytes, zip_layout
from reference import Dims, Layout, rank_state

BIG = 0xFFFFFFFF


_KEEP = []  # anonymous mappings backing the zero tensors


def zero_tensor(shape, dtype=torch.float32) -> torch.Tensor:
    """Zeros backed by a private anonymous mapping that is never written:
    reading it maps the kernel's zero page, so it costs no memory."""
    numel = 1
    for s in shape:
        numel *= s
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    m = mmap.mmap(-1, nbytes, flags=mmap.MAP_PRIVATE)
    _KEEP.append(m)
    return torch.frombuffer(m, dtype=dtype).view(*shape)


_FALLOC_FL_KEEP_SIZE, _FALLOC_FL_PUNCH_HOLE = 0x01, 0x02


def punch_big_records(path: Path) -> None:
    """Turn the data of every record of >= 1 GiB (the zero tensors) into a
    hole: the file reads the same, and gives its disk back."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    fd = os.open(path, os.O_RDWR)
    try:
        for m in zip_layout(path).members:
            if m.size < 1 << 30:
                continue
            lo = (m.data_offset + 4095) & ~4095
            hi = (m.data_offset + m.size) & ~4095
            if libc.fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, lo, hi - lo) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"fallocate(PUNCH_HOLE) of {m.name} in {path}: {os.strerror(err)}")
    finally:
        os.close(fd)


def build_reference(src: Path, small: OrderedDict, config: dict, work: Path, name: str) -> tuple[Path, OrderedDict]:
    V, h = config["vocab_size"], config["hidden_size"]
    sd = OrderedDict(small)
    sd["model.embed_tokens.weight"] = torch.empty((V, h), dtype=torch.bfloat16, device="meta")
    sd["lm_head.weight"] = torch.empty((V, h), dtype=torch.bfloat16, device="meta")
    ref = rank_state(sd, Dims.from_config(config), Layout(dtype="float32"), 0, 0)
    ref["model.embed_tokens.weight"] = zero_tensor((V, h))
    ref["lm_head.weight"] = zero_tensor((V, h))
    assert not any(t.is_meta for t in ref.values())
    (work / "ref").mkdir()
    out = work / "ref" / name
    torch.serialization.set_crc32_options(True)
    torch.save(dict(ref), out)
    punch_big_records(out)
    return out, ref


def zip64_extra(extra: bytes):
    """Body of the zip64 extra (id 1) in a local/central extra field, or None."""
    i = 0
    while i + 4 <= len(extra):
        hid, n = struct.unpack("<HH", extra[i : i + 4])
        if hid == 1:
            return extra[i + 4 : i + 4 + n]
        i += 4 + n
    return None


def check_reference_framing(ref: Path, stem: str) -> None:
    """docs/formats/pt.md's zip64 rules hold for torch.save's own file (guards the
    premise of the comparison)."""
    lay = zip_layout(ref)
    by = {m.name: m for m in lay.members}
    emb = by[f"{stem}/data/0"]
    lm = [m for m in lay.members if m.size >= BIG]
    assert len(lm) == 2, [(m.name, m.size) for m in lay.members]
    e0 = zip64_extra(emb.extra)
    assert e0 is not None and len(e0) == 16 and struct.unpack("<QQ", e0) == (emb.size, 0)
    big2 = lm[1]
    e1 = zip64_extra(big2.extra)
    assert e1 is not None and len(e1) == 24 and struct.unpack("<QQQ", e1) == (big2.size, 0, big2.header_offset)
    ver = by[f"{stem}/version"]
    e2 = zip64_extra(ver.extra)
    assert ver.header_offset >= BIG and e2 is not None and struct.unpack("<Q", e2) == (ver.header_offset,)
    small = by[f"{stem}/data.pkl"]
    assert zip64_extra(small.extra) is None
    assert lay.cd_offset >= BIG


@pytest.mark.slow
def test_zip64_record_over_4gib(shardfs, tmp_path_factory):
    shardfs.require()
    work = tmp_path_factory.mktemp("zip64")
    try:
        src = work / "src"
        small, config, (V, h) = C.build_sparse_zip64_checkpoint(src)
        assert V * h * 4 > 4 * 2**30
        need = 2 * V * h * 4 + (1 << 30)  # one file of two big records at a time, and room to spare
        free = shutil.disk_usage(work).free
        if free < need:
            pytest.skip(f"needs {need / 2**30:.1f} GiB free under {work}; {free / 2**30:.1f} GiB free")
        name = "dp_rank_00_tp_rank_00_pp_rank_00.pt"
        ref_path, ref = build_reference(src, small, config, work, name)
        check_reference_framing(ref_path, name[:-3])
        assert os.stat(ref_path).st_blocks * 512 < 1 << 30, "the reference's zeros were not punched out"
        out = work / "out"
        run = shardfs.run("convert", src, out, "--dtype", "float32", timeout=3600)
        assert run.returncode == 0, run.describe()
        assert files_under(out) == [f"model/{name}"]
        f = out / "model" / name
        # every byte but the serialization id: framing, pickle, data, CRCs
        assert_same_pt_bytes(f, ref_path, "torch.save of the same dict (big tensors: zeros)")
        with zipfile.ZipFile(f) as z:
            assert z.testzip() is None, "bad CRC-32"
        d = torch.load(f, weights_only=True, mmap=True)
        assert list(d) == list(ref)
        for k, v in ref.items():
            assert d[k].dtype == torch.float32 and d[k].shape == v.shape, k
            if v.numel() < 1 << 20:
                assert torch.equal(d[k], v), k
        # (the big tensors' zeros were compared byte for byte above; touching
        # them through the mapping would map GiBs of page cache into this
        # process)
        del d
    finally:
        ref = None
        _KEEP.clear()
        shutil.rmtree(work, ignore_errors=True)
