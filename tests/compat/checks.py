"""Checks of one produced rank file against its reference dict."""

from __future__ import annotations

import re
import zipfile
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path

import torch

from ptfile import assert_same_pt_bytes, serialization_id


@contextmanager
def calculate_storage_offsets():
    cfg = torch.utils.serialization.config.load
    old = cfg.calculate_storage_offsets
    cfg.calculate_storage_offsets = True
    try:
        yield
    finally:
        cfg.calculate_storage_offsets = old


def load_variants(path: Path) -> dict:
    """torch.load in every way docs/formats/pt.md promises to support."""
    out = {}
    errors = []
    for name, kw, ctx in (
        ("weights_only", dict(weights_only=True), None),
        ("weights_only+mmap", dict(weights_only=True, mmap=True), None),
        ("weights_only+mmap+calculate_storage_offsets", dict(weights_only=True, mmap=True), calculate_storage_offsets),
        ("weights_only+calculate_storage_offsets", dict(weights_only=True), calculate_storage_offsets),
    ):
        try:
            if ctx is None:
                out[name] = torch.load(path, **kw)
            else:
                with ctx():
                    out[name] = torch.load(path, **kw)
        except Exception as e:  # noqa: BLE001
            errors.append(f"torch.load({path.name}, {name}) failed: {type(e).__name__}: {e}")
    assert not errors, "\n".join(errors)
    return out


def compare_state(got, expected: "OrderedDict[str, torch.Tensor]", what: str) -> None:
    assert type(got) is dict, f"{what}: top-level object is {type(got).__name__}, expected a plain dict"
    gk, ek = list(got.keys()), list(expected.keys())
    if gk != ek:
        missing = [k for k in ek if k not in got]
        extra = [k for k in gk if k not in expected]
        raise AssertionError(
            f"{what}: keys differ\n  missing: {missing}\n  unexpected: {extra}\n"
            f"  got order:      {gk}\n  expected order: {ek}"
        )
    problems = []
    for k, e in expected.items():
        g = got[k]
        if not isinstance(g, torch.Tensor):
            problems.append(f"{k}: {type(g).__name__}, not a tensor")
            continue
        if g.dtype != e.dtype:
            problems.append(f"{k}: dtype {g.dtype}, expected {e.dtype}")
            continue
        if tuple(g.shape) != tuple(e.shape):
            problems.append(f"{k}: shape {tuple(g.shape)}, expected {tuple(e.shape)}")
            continue
        if not torch.equal(g, e):
            diff = (g.float() != e.float()) & ~(g.float().isnan() & e.float().isnan())
            idx = diff.nonzero()
            first = tuple(idx[0].tolist()) if len(idx) else None
            detail = ""
            if first is not None:
                detail = f"; first at {first}: got {g[first].item()!r}, expected {e[first].item()!r}"
                # is it a permutation of rows (wrong head order / wrong rank)?
                if g.dim() == 2:
                    er = {tuple(r.tolist()): i for i, r in enumerate(e.float())}
                    rows = [er.get(tuple(r.tolist())) for r in g.float()]
                    if all(x is not None for x in rows[:64]):
                        detail += f"; rows are expected rows {rows[:32]}{'...' if len(rows) > 32 else ''}"
            problems.append(f"{k}: values differ at {len(idx)} of {e.numel()} elements{detail}")
            continue
        if g.requires_grad:
            problems.append(f"{k}: requires_grad is True")
        if not g.is_contiguous() or g.storage_offset() != 0:
            problems.append(f"{k}: not row-major contiguous at offset 0 (stride {g.stride()}, offset {g.storage_offset()})")
        nb = g.untyped_storage().nbytes()
        if nb != g.numel() * g.element_size():
            problems.append(f"{k}: storage holds {nb} bytes for {g.numel() * g.element_size()} bytes of tensor")
    assert not problems, f"{what}:\n  " + "\n  ".join(problems)


def check_values(path: Path, expected) -> None:
    for name, d in load_variants(path).items():
        compare_state(d, expected, f"{path.name} [torch.load {name}]")


def check_bytes(path: Path, expected, scratch: Path) -> None:
    """docs/formats/pt.md's equality: resave of the loaded dict (CRC-32 on) equals
    the file except the serialization id; and so does torch.save of the
    reference dict itself. Also real CRCs and a 40-digit id."""
    sid = serialization_id(path)
    assert re.fullmatch(rb"[0-9]{40}", sid), f"{path.name}: serialization_id is {sid!r}, not 40 digits"
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
    assert bad is None, f"{path.name}: zip member {bad!r} has a wrong CRC-32 (convert must write real CRCs)"

    torch.serialization.set_crc32_options(True)
    d = torch.load(path, weights_only=True)
    a = scratch / "resaved"
    a.mkdir(parents=True, exist_ok=True)
    torch.save(d, a / path.name)
    assert_same_pt_bytes(path, a / path.name, "torch.save(torch.load(file))")

    b = scratch / "reference"
    b.mkdir(parents=True, exist_ok=True)
    torch.save(dict(expected), b / path.name)
    assert_same_pt_bytes(path, b / path.name, "torch.save(reference dict)")


def files_under(d: Path) -> list[str]:
    """All files (not dirs) below d, as sorted relative paths, except ShardFS's
    manifest (d/.shardfs/, which convert and --persist-to write)."""
    if not d.exists():
        return []
    return sorted(str(p.relative_to(d)) for p in d.rglob("*")
                  if not p.is_dir() and p.relative_to(d).parts[0] != ".shardfs")


def assert_no_output(out: Path, run) -> None:
    left = files_under(out / "model")
    assert not left, f"files left in OUT/model after a failed run: {left}\n{run.describe()}"
