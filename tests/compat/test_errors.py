"""Bad input: exit status 1 (64 for argument-parser usage errors), stderr
names the offending file / tensor / config field / flag, and nothing is
left in OUT/model.

Corrupt safetensors files are written by hand (8-byte little-endian header
length + JSON header + data), starting from a valid tiny checkpoint. A
control case re-packs the same checkpoint with the same writer, unchanged,
and must convert: so each failure below is due to its corruption alone."""

from __future__ import annotations

import json
import os
import shutil
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import pytest

import checkpoints as C
from checks import assert_no_output, files_under
from reference import Layout, LayoutError, validate

SINGLE = "mha"  # base checkpoint with a single model.safetensors
SHARDED = "gqa"  # base checkpoint with model.safetensors.index.json


@dataclass
class Err:
    id: str
    base: str  # checkpoint name
    mutate: Optional[Callable[[Path], list]]  # (src dir) -> names that stderr may contain (any one)
    args: tuple = ()
    rc: int = 1
    names: tuple = ()  # static alternatives (used when mutate returns none)
    also_plan: bool = False  # plan --json must refuse too (config/flag-level errors)
    layout: Optional[Layout] = None  # if set: reference.validate must refuse it too
    rcs: tuple = ()  # if set: any of these exit statuses is accepted (instead of rc)


# ---------------------------------------------------------------------------
# mutations of a copied checkpoint directory


def _st(src: Path) -> Path:
    return src / "model.safetensors"


def repack_unchanged(src):
    entries, meta, data = C.read_safetensors(_st(src))
    C.write_safetensors_raw(_st(src), C.header_json(entries, meta), data)
    return []


def truncated(src):
    p = _st(src)
    entries, _, _ = C.read_safetensors(p)
    raw = p.read_bytes()
    p.write_bytes(raw[:-100])
    return ["model.safetensors", entries[-1].name]


def header_len_beyond_file(src):
    p = _st(src)
    raw = p.read_bytes()
    p.write_bytes(struct.pack("<Q", len(raw)) + raw[8:])
    return ["model.safetensors"]


def header_too_long(src):
    """Announces a 200 MiB header; the file is made long enough (sparse)
    that only the size limit (100 MB) is violated."""
    p = _st(src)
    raw = p.read_bytes()
    n = 200 * 1024 * 1024
    with open(p, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.write(raw[8:])
        f.truncate(8 + n + len(raw))
    return ["model.safetensors"]


def bad_json(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    h = C.header_json(entries, meta)
    broken = h[: len(h) // 2]  # cut mid-way: not JSON
    C.write_safetensors_raw(p, broken, data)
    return ["model.safetensors"]


def unknown_dtype(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    victim = entries[3]
    victim.dtype = "Q7"
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    return [victim.name, "Q7"]


def offsets_out_of_bounds(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    victim = entries[-1]
    n = victim.end - victim.begin
    victim.begin = len(data) + 64
    victim.end = victim.begin + n
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    return [victim.name, "model.safetensors"]


def offsets_reversed(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    victim = entries[2]
    victim.begin, victim.end = victim.end, victim.begin
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    return [victim.name, "model.safetensors"]


def overlapping(src):
    """post_attention_layernorm of layer 0 shares input_layernorm's bytes;
    the rest is packed without holes, so only the overlap is wrong."""
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    by = {e.name: e for e in entries}
    a = by["model.layers.0.input_layernorm.weight"]
    b = by["model.layers.0.post_attention_layernorm.weight"]
    assert a.end - a.begin == b.end - b.begin
    chunks, out_entries, off = [], [], 0
    for e in entries:
        if e is b:
            continue
        chunk = data[e.begin : e.end]
        out_entries.append(C.STEntry(e.name, e.dtype, e.shape, off, off + len(chunk)))
        chunks.append(chunk)
        off += len(chunk)
    na = next(e for e in out_entries if e.name == a.name)
    out_entries.append(C.STEntry(b.name, b.dtype, b.shape, na.begin, na.end))
    C.write_safetensors_raw(p, C.header_json(out_entries, meta), b"".join(chunks))
    return [a.name, b.name, "model.safetensors"]


def gap(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    victim = entries[-1]
    data = data[: victim.begin] + b"\0" * 64 + data[victim.begin :]
    victim.begin += 64
    victim.end += 64
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    return [victim.name, "model.safetensors"]


def shape_vs_bytes(src):
    p = _st(src)
    entries, meta, data = C.read_safetensors(p)
    victim = next(e for e in entries if e.name == "model.norm.weight")
    victim.shape = [victim.shape[0] // 2]
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    return [victim.name]


def _rewrite_tensors(src, edit):
    p = _st(src)
    from safetensors.torch import load_file

    tensors = load_file(str(p))
    from collections import OrderedDict

    od = OrderedDict(sorted(tensors.items()))
    edit(od)
    entries, data = C.pack_tensors(od)
    C.write_safetensors_raw(p, C.header_json(entries, {"format": "pt"}), data)


def missing_tensor(src):
    name = "model.layers.1.mlp.down_proj.weight"
    _rewrite_tensors(src, lambda od: od.pop(name))
    return [name]


def missing_lm_head(src):
    name = "lm_head.weight"
    _rewrite_tensors(src, lambda od: od.pop(name))
    return [name]


def unknown_tensor(src):
    import torch

    name = "model.layers.0.mlp.extra_proj.weight"
    _rewrite_tensors(src, lambda od: od.__setitem__(name, torch.zeros(8, 64, dtype=torch.bfloat16)))
    return [name]


def layer_out_of_range(src):
    import torch

    name = "model.layers.7.input_layernorm.weight"
    _rewrite_tensors(src, lambda od: od.__setitem__(name, torch.ones(64, dtype=torch.bfloat16)))
    return [name]


def bias_tensor(src):
    import torch

    name = "model.layers.0.self_attn.q_proj.bias"
    _rewrite_tensors(src, lambda od: od.__setitem__(name, torch.zeros(64, dtype=torch.bfloat16)))
    return [name]


def _edit_config(src, edit):
    p = src / "config.json"
    cfg = json.loads(p.read_text())
    edit(cfg)
    p.write_text(json.dumps(cfg, indent=2))


def shape_vs_config(src):
    _edit_config(src, lambda c: c.__setitem__("intermediate_size", 64))
    return ["intermediate_size", "gate_proj", "up_proj", "down_proj"]


def vocab_vs_config(src):
    _edit_config(src, lambda c: c.__setitem__("vocab_size", 120))
    return ["vocab_size", "embed_tokens", "lm_head"]


def gpt2_arch(src):
    _edit_config(src, lambda c: c.__setitem__("architectures", ["GPT2LMHeadModel"]))
    return ["GPT2LMHeadModel"]


def no_config(src):
    (src / "config.json").unlink()
    return ["config.json"]


def _index(src):
    return json.loads((src / "model.safetensors.index.json").read_text())


def index_missing_shard(src):
    wm = _index(src)["weight_map"]
    shard = wm["model.layers.1.self_attn.o_proj.weight"]
    (src / shard).unlink()
    return [shard]


def index_wrong_file(src):
    idx = _index(src)
    wm = idx["weight_map"]
    name = "model.layers.0.mlp.down_proj.weight"
    files = sorted(set(wm.values()))
    other = next(f for f in files if f != wm[name])
    wm[name] = other
    (src / "model.safetensors.index.json").write_text(json.dumps(idx, indent=2))
    return [name]


def no_src(src):
    shutil.rmtree(src)
    return [str(src)]


# ---------------------------------------------------------------------------

HEADS = ("kv-size-multiplier", "kv_size_multiplier", "num_key_value_heads", "num_attention_heads", "heads")
STAGES = ("num_hidden_layers", "layers", "stage", "pp-size", "virtual-pp-size")

ERRORS = [
    # control: the writer itself produces a valid file
    Err("control-repacked-unchanged", SINGLE, repack_unchanged, ("--tp-size", "2"), rc=0),
    # safetensors structure
    Err("truncated-file", SINGLE, truncated),
    Err("header-length-beyond-file", SINGLE, header_len_beyond_file),
    Err("header-over-100MB", SINGLE, header_too_long),
    Err("header-bad-json", SINGLE, bad_json),
    Err("unknown-dtype", SINGLE, unknown_dtype),
    Err("offsets-out-of-bounds", SINGLE, offsets_out_of_bounds),
    Err("offsets-reversed", SINGLE, offsets_reversed),
    Err("overlapping-tensors", SINGLE, overlapping),
    Err("gap-between-tensors", SINGLE, gap),
    Err("shape-vs-byte-range", SINGLE, shape_vs_bytes),
    # index
    Err("index-missing-shard", SHARDED, index_missing_shard),
    Err("index-tensor-in-wrong-file", SHARDED, index_wrong_file),
    # tensor names
    Err("missing-tensor", SINGLE, missing_tensor),
    Err("missing-lm-head-untied", SINGLE, missing_lm_head),
    Err("unknown-tensor", SINGLE, unknown_tensor),
    Err("layer-beyond-num_hidden_layers", SINGLE, layer_out_of_range),
    Err("bias-tensor", SINGLE, bias_tensor),
    # config
    Err("shape-vs-config-intermediate", SINGLE, shape_vs_config),
    Err("shape-vs-config-vocab", SINGLE, vocab_vs_config),
    Err("architecture-gpt2", SINGLE, gpt2_arch, also_plan=True),
    Err("no-config-json", SINGLE, no_config, also_plan=True),
    Err("src-missing", SINGLE, no_src, also_plan=True),
    # layout refusals
    Err("hidden-not-divisible-by-tp3", "h64_v96", None, ("--tp-size", "3"),
        names=("hidden_size", "_proj", "tp-size", "tp_size"), also_plan=True, layout=Layout(tp=3)),
    Err("vocab-not-divisible-by-tp8", "v100", None, ("--tp-size", "8"),
        names=("vocab_size", "embed_tokens", "lm_head"), also_plan=True, layout=Layout(tp=8)),
    Err("intermediate-not-divisible-by-tp8", "i100", None, ("--tp-size", "8"),
        names=("intermediate_size", "gate_proj", "up_proj", "down_proj"), also_plan=True, layout=Layout(tp=8)),
    Err("layers2-lt-pp3", SHARDED, None, ("--pp-size", "3"), names=STAGES, also_plan=True,
        layout=Layout(pp=3)),
    Err("layers5-lt-pp3xvpp2", "uneven", None, ("--pp-size", "3", "--virtual-pp-size", "2"), names=STAGES,
        also_plan=True, layout=Layout(pp=3, vpp=2)),
    Err("trn1-hkv2-m1-tp4", SHARDED, None, ("--tp-size", "4", "--qkv-linear"), names=HEADS, also_plan=True,
        layout=Layout(tp=4, qkv_linear=True)),
    Err("trn1-hq8-tp16-m8", SHARDED, None, ("--tp-size", "16", "--kv-size-multiplier", "8", "--qkv-linear"),
        names=HEADS, also_plan=True, layout=Layout(tp=16, kv_mult=8, qkv_linear=True)),
    Err("trn1-hkv2-m4-tp4", SHARDED, None, ("--tp-size", "4", "--kv-size-multiplier", "4", "--qkv-linear"),
        names=HEADS, also_plan=True, layout=Layout(tp=4, kv_mult=4, qkv_linear=True)),
    Err("trn2-hkv2-m2-tp8", SHARDED, None,
        ("--tp-size", "8", "--kv-size-multiplier", "2", "--qkv-linear", "--hw-backend", "trn2"),
        names=HEADS, also_plan=True, layout=Layout(tp=8, kv_mult=2, qkv_linear=True, backend="trn2")),
    Err("trn2-hkv2-m1-tp4", SHARDED, None, ("--tp-size", "4", "--qkv-linear", "--hw-backend", "trn2"),
        names=HEADS, also_plan=True, layout=Layout(tp=4, qkv_linear=True, backend="trn2")),
    Err("fuse-qkv-without-qkv-linear", SHARDED, None, ("--tp-size", "2", "--fuse-qkv"),
        names=("fuse-qkv", "fuse_qkv"), also_plan=True, layout=Layout(tp=2, fuse_qkv=True)),
    Err("head_dim-ne-hidden-over-heads-qkv-linear", "headdim16", None,
        ("--tp-size", "2", "--qkv-linear", "--hw-backend", "trn2"), names=("head_dim",), also_plan=True,
        layout=Layout(tp=2, qkv_linear=True, backend="trn2")),
    # argument parser usage errors
    Err("unknown-flag-bogus", SINGLE, None, ("--bogus",), rc=64, names=("--bogus",), also_plan=True),
    Err("unknown-flag-converter-spelling", SINGLE, None, ("--tp_size", "2"), rc=64, names=("--tp_size",),
        also_plan=True),
    Err("unknown-flag-fuse_qkv-False", SINGLE, None, ("--fuse_qkv", "False"), rc=64, names=("--fuse_qkv",),
        also_plan=True),
    Err("dtype-value-int8", SINGLE, None, ("--dtype", "int8"), rc=64, names=("int8",), also_plan=True),
    Err("dtype-value-fp32", SINGLE, None, ("--dtype", "fp32"), rc=64, names=("fp32",), also_plan=True),
    Err("hw-backend-value-trn3", SINGLE, None, ("--hw-backend", "trn3"), rc=64, names=("trn3",), also_plan=True),
    Err("tp-size-not-a-number", SINGLE, None, ("--tp-size", "two"), rc=64, names=("two",), also_plan=True),
    # options of the converter that ShardFS does not reproduce: refused by name
    Err("coalesce-qkv-not-reproduced", SINGLE, None, ("--coalesce-qkv",), rcs=(1, 64), names=("coalesce",)),
]
ERR_BY_ID = {e.id: e for e in ERRORS}
assert len(ERR_BY_ID) == len(ERRORS)


# the reference agrees that the layout-level cases are refusals
for _e in ERRORS:
    if _e.layout is not None:
        with pytest.raises(LayoutError):
            validate(C.dims(_e.base), _e.layout)


def _prepare(ckpts, e: Err, tmp_path: Path):
    src = ckpts.get(e.base).copy_to(tmp_path / "src")
    names = list(e.names)
    if e.mutate is not None:
        names = e.mutate(src) or names
    return src, names


def _check(run, e: Err, names, out: Path):
    if e.rcs:
        assert run.returncode in e.rcs, f"expected exit status in {e.rcs}\n{run.describe()}"
    else:
        assert run.returncode == e.rc, f"expected exit status {e.rc}\n{run.describe()}"
    if e.rc == 0 and not e.rcs:
        return
    assert any(n in run.stderr for n in names), (
        f"stderr names none of {names}\n{run.describe()}"
    )
    assert "Traceback" not in run.stderr and "Fatal error" not in run.stderr, run.describe()


@pytest.mark.parametrize("err_id", [e.id for e in ERRORS])
def test_convert_refuses(shardfs, ckpts, tmp_path, err_id):
    e = ERR_BY_ID[err_id]
    shardfs.require()
    src, names = _prepare(ckpts, e, tmp_path)
    out = tmp_path / "out"
    run = shardfs.run("convert", src, out, *e.args, timeout=300)
    _check(run, e, names, out)
    if e.rc == 0 and not e.rcs:
        assert files_under(out / "model"), "control conversion wrote nothing"
        return
    assert_no_output(out, run)


@pytest.mark.parametrize("err_id", [e.id for e in ERRORS if e.also_plan])
def test_plan_refuses(shardfs, ckpts, tmp_path, err_id):
    e = ERR_BY_ID[err_id]
    shardfs.require()
    src, names = _prepare(ckpts, e, tmp_path)
    run = shardfs.run("plan", src, *e.args, "--json", timeout=300)
    _check(run, e, names, tmp_path)


def test_error_into_existing_out_keeps_nothing(shardfs, ckpts, tmp_path):
    """A failing run into an OUT that already exists (empty model/) leaves
    OUT/model empty."""
    shardfs.require()
    src = ckpts.get(SINGLE).copy_to(tmp_path / "src")
    truncated(src)
    out = tmp_path / "out"
    (out / "model").mkdir(parents=True)
    run = shardfs.run("convert", src, out, "--tp-size", "2")
    assert run.returncode == 1, run.describe()
    assert_no_output(out, run)
