"""An NxD checkpoint tag as the SOURCE (issue 12): `shardfs convert TAG OUT
--config CK --format hf` back to Hugging Face, resharding a tag into another
layout (`--format pt|xser` with layout flags), tags written the way NxD's
trainer and converter write them, `shardfs mount TAG MNT --format hf`, and
bad input.

Expectations come from the real libraries, never from shardfs: the original
state dict of checkpoints.py's transformers model (`.to(dtype)` for layouts
with --dtype), `safetensors.torch.save_file(tensors, path,
metadata={"format": "pt"})` for the bytes of a single-file checkpoint,
`model.save_pretrained(dir, max_shard_size=...)` of the model
`AutoModelForCausalLM.from_pretrained` loads from the original for sharded
ones, and a direct `shardfs convert HF -> layout B` (itself checked against
reference.py and torch.save by test_convert.py / test_xser.py) for reshards.
"""

from __future__ import annotations

import gc
import json
import os
import pickle
import shutil
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import pytest
import torch

import checkpoints
import test_xser  # its TensorReference stand-in (before trainer_files would make one) and loader
import trainer_files as TF
from checks import assert_no_output, files_under
from ptfile import explain_difference, first_difference
from reference import DTYPES, Dims, Layout, expected_files, rank_file_name, validate
from test_convert import CASE_BY_ID as PT_CASE_BY_ID
from test_convert import CASES as PT_CASES
# Mount helpers (the fixture comes from conftest.py).
from mounting import daemon_pids, is_mounted, new_mnt  # noqa: F401

L = Layout
QL = dict(qkv_linear=True)
XSER = ["--format", "xser"]
HF = ["--format", "hf"]
CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


# ---------------------------------------------------------------------------
# tags (HF -> layout, through the session's conversion cache) and the way back


@dataclass(frozen=True)
class Tag:
    """An NxD tag made by `shardfs convert CK TAG <args>`."""
    id: str
    ckpt: str
    layout: Layout
    fmt: str = "pt"  # "pt" | "xser"
    extra: tuple = ()  # extra args of the HF -> TAG run (test_convert's --jobs etc.)

    @property
    def args(self) -> list:
        return self.layout.cli_args() + list(self.extra) + (XSER if self.fmt == "xser" else [])

    @property
    def dtype(self) -> Optional[torch.dtype]:
        return DTYPES[self.layout.dtype] if self.layout.dtype else None


def tag_dir(conversions, tag: Tag) -> Path:
    return conversions.converted_ok(tag.ckpt, tag.args).out


@dataclass
class Conversion:
    run: object  # conftest.Run
    out: Path


class HfBack:
    """Runs `shardfs convert TAG OUT <args>` once per (TAG, args) per session."""

    def __init__(self, root: Path, shardfs):
        self.root = root
        self.shardfs = shardfs
        self._done: dict = {}

    def convert(self, src: Path, args: list) -> Conversion:
        key = (str(src), tuple(map(str, args)))
        if key not in self._done:
            out = self.root / f"back{len(self._done):03d}"
            self._done[key] = Conversion(self.shardfs.run("convert", src, out, *args), out)
        return self._done[key]

    def ok(self, src: Path, args: list) -> Conversion:
        c = self.convert(src, args)
        assert c.run.returncode == 0, f"convert of the tag {src} failed:\n{c.run.describe()}"
        return c


@pytest.fixture(scope="session")
def hfback(tmp_path_factory, shardfs) -> HfBack:
    shardfs.require()
    return HfBack(tmp_path_factory.mktemp("hfback"), shardfs)


def back_args(ck, tag: Tag, *more) -> list:
    return ["--config", ck.path, *HF, "--source-hw-backend", tag.layout.backend, *more]


# ---------------------------------------------------------------------------
# expectations from the libraries


def hf_expected(ck, dtype: Optional[torch.dtype] = None) -> "OrderedDict[str, torch.Tensor]":
    """The original state dict in state-dict order, minus lm_head when tied,
    converted with torch's .to(dtype) when the tag has another dtype."""
    out = OrderedDict()
    for k, v in ck.state_dict.items():
        if k == "lm_head.weight" and ck.spec.tied:
            continue
        out[k] = v.to(dtype) if dtype is not None else v
    return out


def compare_tensors(got: dict, want: "OrderedDict[str, torch.Tensor]", what: str) -> None:
    if set(got) != set(want):
        raise AssertionError(f"{what}: tensor names differ\n  missing: {sorted(set(want) - set(got))}\n"
                             f"  unexpected: {sorted(set(got) - set(want))}")
    problems = []
    for k, w in want.items():
        g = got[k]
        if g.dtype != w.dtype or tuple(g.shape) != tuple(w.shape):
            problems.append(f"{k}: {g.dtype} {tuple(g.shape)}, expected {w.dtype} {tuple(w.shape)}")
        elif not torch.equal(g.contiguous().view(torch.uint8), w.contiguous().view(torch.uint8)):
            diff = (g.double() != w.double()).nonzero()
            where = tuple(diff[0].tolist()) if len(diff) else "(bitwise, e.g. -0.0)"
            problems.append(f"{k}: values differ ({len(diff)} elements; first at {where})")
    assert not problems, f"{what}:\n  " + "\n  ".join(problems[:20])


def safetensors_diff(actual: Path, expected: Path) -> str:
    a, b = actual.read_bytes(), expected.read_bytes()
    if a == b:
        return ""
    off = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    na = int.from_bytes(a[:8], "little") if len(a) >= 8 else -1
    nb = int.from_bytes(b[:8], "little") if len(b) >= 8 else -1
    msg = [f"{actual.name}: {len(a)} bytes, expected {len(b)}; first difference at byte {off} "
           f"({'header' if off < 8 + max(na, 0) else 'data'}; header lengths {na} / {nb})"]
    if na != nb or a[8:8 + na] != b[8:8 + nb]:
        msg.append(f"  header:          {a[8:8 + min(na, 600)]!r}")
        msg.append(f"  expected header: {b[8:8 + min(nb, 600)]!r}")
    return "\n".join(msg)


def assert_same_file(actual: Path, expected: Path) -> None:
    d = safetensors_diff(actual, expected)
    assert not d, d


def check_hf_single(out: Path, ck, want: "OrderedDict[str, torch.Tensor]", scratch: Path) -> None:
    """OUT holds exactly config.json (the given one, byte for byte) and
    model.safetensors: the expected tensors, value for value, and the very
    bytes safetensors' save_file writes for them."""
    from safetensors.torch import load_file, save_file

    got_files = files_under(out)
    assert got_files == [CONFIG, SINGLE], f"OUT holds {got_files}, expected {[CONFIG, SINGLE]}"
    assert (out / CONFIG).read_bytes() == (ck.path / CONFIG).read_bytes(), "config.json is not the given config.json byte for byte"
    compare_tensors(load_file(str(out / SINGLE)), want, f"{out.name}/{SINGLE}")
    scratch.mkdir(parents=True, exist_ok=True)
    ref = scratch / SINGLE
    save_file(OrderedDict((k, v.contiguous()) for k, v in want.items()), str(ref), metadata={"format": "pt"})
    assert_same_file(out / SINGLE, ref)


# ---------------------------------------------------------------------------
# 1. round trips over test_convert's matrix (pt) and a set in xser

PT_TAGS = [Tag(c.id, c.ckpt, c.layout, "pt", c.extra) for c in PT_CASES]
XSER_TAGS = [
    Tag("gqa-tp2-pp2", "gqa", L(tp=2, pp=2), "xser"),
    Tag("gqa-tp4-qkvlin-fuse-m2", "gqa", L(tp=4, kv_mult=2, fuse_qkv=True, **QL), "xser"),
    Tag("uneven-tp2-pp3-bf16", "uneven", L(tp=2, pp=3, dtype="bfloat16"), "xser"),
    Tag("tied-tp2-pp2", "tied", L(tp=2, pp=2), "xser"),
    Tag("f64-tp2-default", "f64", L(tp=2), "xser"),
    Tag("deep-pp3", "deep", L(pp=3), "xser"),
    # not in test_xser: trn2 with m > 1, fused, f16; vpp
    Tag("gqa-tp8-qkvlin-fuse-m4-trn2-f16", "gqa",
        L(tp=8, kv_mult=4, fuse_qkv=True, backend="trn2", dtype="float16", **QL), "xser"),
    Tag("uneven-tp2-pp2-vpp2-qkvlin-trn1", "uneven", L(tp=2, pp=2, vpp=2, **QL), "xser"),
]
TAG_BY_ID = {("pt", t.id): t for t in PT_TAGS} | {("xser", t.id): t for t in XSER_TAGS}
for _t in TAG_BY_ID.values():
    validate(checkpoints.dims(_t.ckpt), _t.layout)


@pytest.mark.parametrize("fmt,tag_id", [("pt", t.id) for t in PT_TAGS] + [("xser", t.id) for t in XSER_TAGS],
                         ids=[f"pt-{t.id}" for t in PT_TAGS] + [f"xser-{t.id}" for t in XSER_TAGS])
def test_roundtrip_hf(conversions, ckpts, hfback, tmp_path, fmt, tag_id):
    """HF -> TAG (the case's layout) -> --format hf: the original tensors
    (minus a tied lm_head; in the tag's dtype), config.json verbatim, and
    model.safetensors byte-equal to save_file of those tensors."""
    tag = TAG_BY_ID[(fmt, tag_id)]
    ck = ckpts.get(tag.ckpt)
    src = tag_dir(conversions, tag)
    back = hfback.ok(src, back_args(ck, tag))
    check_hf_single(back.out, ck, hf_expected(ck, tag.dtype), tmp_path)


HF_DTYPES = [
    ("pt", "gqa-tp4-qkvlin-m2-trn1", "float32"),  # widening
    ("pt", "uneven-pp2", "bfloat16"),  # float32 tag (edge values) narrowed as torch rounds
    ("pt", "uneven-pp2", "float16"),
    ("pt", "f64-tp2-default", "bfloat16"),  # float64 tag: torch goes through float32
    ("pt", "f64-tp2-default", "float16"),
]


@pytest.mark.parametrize("fmt,tag_id,dtype", HF_DTYPES, ids=[f"{f}-{t}-to-{d}" for f, t, d in HF_DTYPES])
def test_roundtrip_hf_dtype(conversions, ckpts, hfback, tmp_path, fmt, tag_id, dtype):
    """--format hf --dtype D: the tag's tensors converted as torch's .to(D)
    converts them (the tag equals the original here), save_file's bytes."""
    tag = TAG_BY_ID[(fmt, tag_id)]
    assert tag.dtype is None
    ck = ckpts.get(tag.ckpt)
    back = hfback.ok(tag_dir(conversions, tag), back_args(ck, tag, "--dtype", dtype))
    check_hf_single(back.out, ck, hf_expected(ck, DTYPES[dtype]), tmp_path)


# sharded: against save_pretrained of the model transformers loads from the original

SHARDED = [
    ("pt", "gqa-tp4-qkvlin-m2-trn1", "64KB"),
    ("xser", "tied-tp2-pp2", "40KB"),
    ("pt", "deep-pp3", "20KB"),  # 375 layers: layers.10 vs layers.2 ordering
    ("pt", "uneven-pp2", "100000"),  # a plain byte count; float32
]


def _saved_pretrained(ck, max_shard_size: str, dst: Path) -> Path:
    """save_pretrained of the model built from its config with the original
    weights loaded into it: its split follows the model's own state-dict
    order, which issue 12 asks for. (A model that from_pretrained loaded is
    split in transformers 5.24's dot_natural_key order instead: its
    revert_weight_conversion sorts the state dict first.)"""
    import transformers
    from safetensors.torch import load_file

    size = int(max_shard_size) if max_shard_size.isdigit() else max_shard_size
    config = transformers.AutoConfig.from_pretrained(str(ck.path))
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=ck.dtype)
    weights = {}
    for f in sorted(ck.path.glob("*.safetensors")):
        weights.update(load_file(str(f)))
    missing, unexpected = model.load_state_dict(weights, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    try:
        model.save_pretrained(str(dst), max_shard_size=size)
    finally:
        del model
        gc.collect()
    return dst


def _explain_split(got_dir: Path, ref_dir: Path, tensors: "OrderedDict[str, torch.Tensor]", size: str) -> str:
    """Which key order each side's split follows: huggingface_hub's greedy
    split over the state-dict order, or over transformers 5.24's
    dot_natural_key order (revert_weight_conversion sorts a from_pretrained
    model's state dict before save_pretrained splits it)."""
    from huggingface_hub import split_torch_state_dict_into_shards

    def split_of(d: Path):
        if (d / INDEX).exists():
            wm = json.loads((d / INDEX).read_text())["weight_map"]
        else:
            wm = {k: SINGLE for k in tensors}
        files: dict = {}
        for k, f in wm.items():
            files.setdefault(f, set()).add(k)
        return {f: frozenset(v) for f, v in files.items()}

    orders = {"state-dict order": list(tensors)}
    try:
        from transformers.core_model_loading import dot_natural_key
        orders["natural-sorted order (dot_natural_key)"] = sorted(tensors, key=dot_natural_key)
    except ImportError:
        pass
    limit = int(size) if size.isdigit() else size
    found = {}
    for name, order in orders.items():
        sp = split_torch_state_dict_into_shards(OrderedDict((k, tensors[k]) for k in order),
                                                filename_pattern="model{suffix}.safetensors", max_shard_size=limit)
        found[name] = {f: frozenset(v) for f, v in sp.filename_to_tensors.items()}
    lines = []
    for who, d in (("shardfs", got_dir), ("save_pretrained", ref_dir)):
        mine = split_of(d)
        match = [n for n, sp in found.items() if sp == mine]
        lines.append(f"  {who}: {len(mine)} files, split = huggingface_hub's over {match[0] if match else 'neither order'}")
    return "\n".join(lines)


@pytest.mark.parametrize("fmt,tag_id,size", SHARDED, ids=[f"{f}-{t}-{s}" for f, t, s in SHARDED])
def test_roundtrip_sharded_vs_save_pretrained(conversions, ckpts, hfback, tmp_path, fmt, tag_id, size):
    """--max-shard-size: the shards and model.safetensors.index.json are,
    file for file and byte for byte, what transformers'
    `model.save_pretrained(dir, max_shard_size=...)` writes for the model
    built from the config and given the original's weights (_saved_pretrained)."""
    tag = TAG_BY_ID[(fmt, tag_id)]
    ck = ckpts.get(tag.ckpt)
    back = hfback.ok(tag_dir(conversions, tag), back_args(ck, tag, "--max-shard-size", size))
    ref = _saved_pretrained(ck, size, tmp_path / "save_pretrained")
    want = sorted(n for n in files_under(ref) if n.endswith(".safetensors") or n == INDEX)
    assert INDEX in want, f"save_pretrained did not shard at {size}: {want} (pick a smaller size)"
    got = files_under(back.out)
    assert (back.out / CONFIG).read_bytes() == (ck.path / CONFIG).read_bytes(), "config.json not verbatim"

    how = "\n" + _explain_split(back.out, ref, hf_expected(ck, tag.dtype), size)
    assert got == sorted(want + [CONFIG]), (
        f"files differ from save_pretrained's\n  got:      {got}\n  expected: {sorted(want + [CONFIG])}{how}")
    problems = [safetensors_diff(back.out / n, ref / n) for n in want if n != INDEX]
    problems = [p for p in problems if p]
    if (back.out / INDEX).read_bytes() != (ref / INDEX).read_bytes():
        problems.append(f"{INDEX} differs from save_pretrained's")
    assert not problems, f"{len(problems)} files differ from save_pretrained's; first:\n" + problems[0] + how
    # and the tensors, whatever the split
    from safetensors.torch import load_file

    got_t = {}
    for n in want:
        if n != INDEX:
            got_t.update(load_file(str(back.out / n)))
    compare_tensors(got_t, hf_expected(ck, tag.dtype), f"{tag.id} shards")


CONSISTENT = [("pt", "gqa-tp4-qkvlin-m2-trn1", "64KB"), ("pt", "tied-tp2-pp2", "40KB")]


@pytest.mark.parametrize("fmt,tag_id,size", CONSISTENT, ids=[f"{f}-{t}-{s}" for f, t, s in CONSISTENT])
def test_roundtrip_sharded_files_consistent(conversions, ckpts, hfback, tmp_path, fmt, tag_id, size):
    """Whatever the order of the split: the index's weight_map names every
    tensor once, in the file that holds it; files are numbered
    model-0000K-of-0000N; each holds {"format": "pt"} metadata and stays
    within --max-shard-size unless it holds one tensor; the index metadata
    (total_size, total_parameters: a tied weight counted once) equals
    save_pretrained's."""
    from safetensors import safe_open

    tag = TAG_BY_ID[(fmt, tag_id)]
    ck = ckpts.get(tag.ckpt)
    back = hfback.ok(tag_dir(conversions, tag), back_args(ck, tag, "--max-shard-size", size))
    idx = json.loads((back.out / INDEX).read_text())
    want = hf_expected(ck, tag.dtype)
    assert sorted(idx["weight_map"]) == sorted(want)
    files = sorted(set(idx["weight_map"].values()))
    assert sorted(files + [CONFIG, INDEX]) == files_under(back.out)
    n = len(files)
    assert files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)]
    limit = int(size) if size.isdigit() else int(size[:-2]) * 1000
    for f in files:
        with safe_open(str(back.out / f), framework="pt") as st:
            assert st.metadata() == {"format": "pt"}, f
            keys = sorted(st.keys())
        assert keys == sorted(k for k, v in idx["weight_map"].items() if v == f), f
        nbytes = sum(want[k].numel() * want[k].element_size() for k in keys)
        assert nbytes <= limit or len(keys) == 1, f"{f}: {nbytes} bytes of tensors > {size}"
    ref = _saved_pretrained(ck, size, tmp_path / "save_pretrained")
    assert idx["metadata"] == json.loads((ref / INDEX).read_text())["metadata"], "index metadata differs from save_pretrained's"
    assert list(idx) == ["metadata", "weight_map"]


# --config as a file, config.json inside the tag, --source-hw-backend not needed


def test_config_file_and_config_in_tag(conversions, ckpts, hfback, shardfs, tmp_path):
    """--config FILE works as --config DIR; without --config, TAG/config.json
    is used; both give the same files."""
    tag = TAG_BY_ID[("pt", "gqa-tp8-pp2-qkvlin-fuse-m4-trn1-f32")]
    ck = ckpts.get(tag.ckpt)
    want = hf_expected(ck, torch.float32)
    a = hfback.ok(tag_dir(conversions, tag), ["--config", ck.path / CONFIG, *HF, "--source-hw-backend", "trn1"])
    check_hf_single(a.out, ck, want, tmp_path / "a")
    src = tmp_path / "tag"
    shutil.copytree(tag_dir(conversions, tag), src)
    shutil.copy(ck.path / CONFIG, src / CONFIG)
    out = tmp_path / "out"
    run = shardfs.run("convert", src, out, *HF, "--source-hw-backend", "trn1")
    assert run.returncode == 0, run.describe()
    check_hf_single(out, ck, want, tmp_path / "b")


SOURCE_HW_NOT_NEEDED = ["mha-tp2-pp2", "gqa-tp2-qkvlin-trn1", "gqa-tp1-qkvlin-trn2", "mha-tp2-qkvlin-trn2"]


@pytest.mark.parametrize("tag_id", SOURCE_HW_NOT_NEEDED)
def test_source_hw_backend_not_needed(conversions, ckpts, hfback, tmp_path, tag_id):
    """Where trn1 and trn2 place heads alike (no qkv_linear; qkv_linear with
    m = 1 and the same Q order), --source-hw-backend may be left out, and
    every value the layout allows is accepted with the same result."""
    tag = TAG_BY_ID[("pt", tag_id)]
    ck = ckpts.get(tag.ckpt)
    src = tag_dir(conversions, tag)
    want = hf_expected(ck, tag.dtype)
    base = hfback.ok(src, ["--config", ck.path, *HF])
    check_hf_single(base.out, ck, want, tmp_path / "none")
    d = checkpoints.dims(tag.ckpt)
    for backend in ("trn1", "trn2"):
        try:
            validate(d, Layout(**{**tag.layout.__dict__, "backend": backend}))
        except ValueError:
            continue  # a backend that cannot have written the tag: test_bad_source
        other = hfback.ok(src, ["--config", ck.path, *HF, "--source-hw-backend", backend])
        for n in files_under(base.out):
            assert (other.out / n).read_bytes() == (base.out / n).read_bytes(), f"{n}: --source-hw-backend {backend} differs"


def test_plan_hf_shows_source_layout(shardfs, conversions, ckpts, hfback):
    """plan TAG --format hf --json: the inferred source layout, the HF files
    (sizes as written), and per HF tensor its pieces (file, rows/columns)
    tiling the tensor exactly once."""
    tag = TAG_BY_ID[("pt", "uneven-tp2-pp2-vpp2-qkvlin-trn1")]
    ck = ckpts.get(tag.ckpt)
    src = tag_dir(conversions, tag)
    run = shardfs.run("plan", src, *back_args(ck, tag), "--json")
    assert run.returncode == 0, run.describe()
    plan = json.loads(run.stdout)
    lay = plan["sourceLayout"]
    assert (lay["tpSize"], lay["ppSize"], lay["virtualPPSize"], lay["kvSizeMultiplier"], lay["qkvLinear"],
            lay["fuseQKV"], lay["dtype"]) == (2, 2, 2, 1, True, False, "float32"), lay
    back = hfback.ok(src, back_args(ck, tag))
    sizes = {f["path"]: f["size"] for f in plan["huggingFaceFiles"]}
    assert sizes == {n: (back.out / n).stat().st_size for n in files_under(back.out)}, sizes
    want = hf_expected(ck)
    tensors = {t["key"]: t for t in plan["huggingFaceTensors"]}
    assert list(tensors) == list(want), "plan's HF tensors are not the state dict's, in its order"
    rank_files = set(expected_files(tag.layout))
    for k, t in tensors.items():
        shape = list(want[k].shape)
        assert t["shape"] == shape and t["dtype"] == "float32", (k, t["shape"], t["dtype"])
        grid = shape if len(shape) == 2 else [1, shape[0]]  # a 1-D tensor as one row
        cover = torch.zeros(*grid, dtype=torch.int32)
        for piece in t["sources"]:
            assert piece["file"] in rank_files, piece
            r0, r1 = piece.get("rows", [0, grid[0]])
            c0, c1 = piece.get("columns", [0, grid[1]])
            cover[r0:r1, c0:c1] += 1
        assert bool((cover == 1).all()), f"{k}: pieces do not tile the tensor exactly once"


# ---------------------------------------------------------------------------
# 2. resharding: TAG (layout A) -> layout B equals HF -> B


@dataclass(frozen=True)
class Reshard:
    id: str
    a: Tag
    b_args: tuple  # the args of the direct HF -> B conversion
    parts: int = 0  # > 0: run as --part I/N, all parts into one OUT


def _pt(case_id: str) -> Tag:
    return TAG_BY_ID[("pt", case_id)]


def _xs(case_id: str) -> Tag:
    return TAG_BY_ID[("xser", case_id)]


def _b(case_id: str, fmt: str = "pt") -> tuple:
    c = PT_CASE_BY_ID[case_id]
    return tuple(c.args + (XSER if fmt == "xser" else []))


RESHARDS = [
    Reshard("trn2-m2-to-trn1-tp8-pp2-fuse-m4-f32", _pt("gqa-tp4-qkvlin-m2-trn2"),
            _b("gqa-tp8-pp2-qkvlin-fuse-m4-trn1-f32")),
    Reshard("r64x8-tp32-pp2-to-tp4-trn2", _pt("r64x8-tp32-pp2-qkvlin-fuse-m4-trn1"), _b("r64x8-tp4-qkvlin-trn2")),
    Reshard("r64x8-tp32-pp2-to-tp4-trn2-parts3", _pt("r64x8-tp32-pp2-qkvlin-fuse-m4-trn1"),
            _b("r64x8-tp4-qkvlin-trn2"), parts=3),
    Reshard("vpp2-to-tp4-pp2-m2-trn2-f16", _pt("uneven-tp2-pp2-vpp2-qkvlin-trn1"),
            _b("uneven-tp4-pp2-qkvlin-m2-trn2-f16")),
    Reshard("pp2-to-vpp2", _pt("uneven-pp2"), _b("uneven-tp2-pp2-vpp2-qkvlin-trn1")),
    Reshard("tied-tp2-pp2-to-fuse-f16", _pt("tied-tp2-pp2"), _b("tied-tp4-pp2-qkvlin-fuse-trn1-f16")),
    Reshard("qkvlin-to-plain-pp2", _pt("mha-tp4-qkvlin-trn1"), _b("mha-tp2-pp2")),
    Reshard("f64-to-f16-pp2", _pt("f64-tp2-default"), _b("f64-tp2-pp2-f16")),
    Reshard("deep-pp3-to-tp2-fuse-m2-f32", _pt("deep-pp3"), _b("deep-tp2-qkvlin-fuse-m2-f32")),
    Reshard("xser-to-pt", _xs("gqa-tp2-pp2"), _b("gqa-tp4-qkvlin-m2-trn1")),
    Reshard("pt-to-xser", _pt("mha-tp2-pp2"), _b("mha-tp4-qkvlin-trn1", "xser")),
    Reshard("xser-m2-to-xser", _xs("gqa-tp4-qkvlin-fuse-m2"), tuple(L(tp=2, pp=2).cli_args() + XSER)),
    Reshard("xser-to-xser-parts2", _xs("uneven-tp2-pp3-bf16"),  # the tag is bf16, the source f32
            tuple(L(tp=2, pp=2, vpp=2, dtype="bfloat16", **QL).cli_args() + XSER), parts=2),
]
RESHARD_BY_ID = {r.id: r for r in RESHARDS}


@pytest.mark.parametrize("rid", [r.id for r in RESHARDS])
def test_reshard(shardfs, conversions, ckpts, tmp_path, rid):
    """Every file equals the direct conversion's byte for byte (serialization
    ids included: they derive from layout and file name); with --part, each
    part writes an even, disjoint share and together they write all."""
    r = RESHARD_BY_ID[rid]
    ck = ckpts.get(r.a.ckpt)
    src = tag_dir(conversions, r.a)
    direct = conversions.converted_ok(r.a.ckpt, list(r.b_args))
    names = files_under(direct.out)
    out = tmp_path / "out"
    common = ["--config", ck.path, "--source-hw-backend", r.a.layout.backend, *r.b_args]
    if r.parts:
        seen: set = set()
        for i in range(r.parts):
            run = shardfs.run("convert", src, out, *common, "--part", f"{i}/{r.parts}")
            assert run.returncode == 0, run.describe()
            now = set(files_under(out))
            added = now - seen
            ranks = {n for n in added if n.endswith(".pt") and ".pt." not in n and "/tensor_" not in n}
            assert len(ranks) in (len(expected_files_of(names)) // r.parts, -(-len(expected_files_of(names)) // r.parts)), (
                f"part {i}/{r.parts} wrote {sorted(ranks)}: not an even share of {len(expected_files_of(names))} rank files")
            seen = now
    else:
        run = shardfs.run("convert", src, out, *common)
        assert run.returncode == 0, run.describe()
    got = files_under(out)
    assert got == names, (f"files differ from HF -> B\n  missing: {sorted(set(names) - set(got))[:10]}\n"
                          f"  unexpected: {sorted(set(got) - set(names))[:10]}")
    problems = []
    for n in names:
        off = first_difference(out / n, direct.out / n)
        if off is not None:
            problems.append(f"{n}:\n" + explain_difference(out / n, direct.out / n, off))
    assert not problems, f"{len(problems)} of {len(names)} files differ from HF -> B; first:\n" + problems[0]


def expected_files_of(names: list) -> list:
    """The rank files among a tag's files (not .info.pt or tensor files)."""
    return [n for n in names if n.endswith(".pt") and ".pt." not in n and "/tensor_" not in n]


# ---------------------------------------------------------------------------
# 3. tags written the way NxD's trainer and converter write them


@dataclass(frozen=True)
class TrainerTag:
    id: str
    ckpt: str
    layout: Layout
    kind: str  # "state_dict" | "old" | "converter_xser" | "xser"
    parameters: bool = False
    shared_qkv: bool = False
    o_colmajor: bool = False
    slices: bool = False  # embed / lm_head / down_proj as views into the uncut tensor


TRAINER_TAGS = [
    # the trainer's model.state_dict(): OrderedDict + _metadata, Parameters,
    # q/k/v views of one storage, o_proj column-major, slices of the uncut
    # tensors; bf16; needs --source-hw-backend (m = 2)
    TrainerTag("state-dict-qkvlin-m2-bf16", "gqa", L(tp=4, pp=2, kv_mult=2, **QL), "state_dict",
               parameters=True, shared_qkv=True, o_colmajor=True, slices=True),
    # q_proj/k_proj/v_proj views of one storage, Parameters, no qkv_linear
    TrainerTag("state-dict-plain-mha-bf16", "mha", L(tp=2, pp=2), "state_dict",
               parameters=True, shared_qkv=True, slices=True),
    # older naming tp_rank_YY_pp_rank_ZZ/checkpoint.pt, float32, fused, vpp 2,
    # plain dicts, o_proj column-major (as the converter saves under qkv_linear)
    TrainerTag("old-naming-fuse-vpp2-f32", "uneven", L(tp=2, pp=2, vpp=2, fuse_qkv=True, **QL), "old",
               o_colmajor=True),
    # NxD's offline converter with --save_xser 1 on CPU tensors: plain files
    # plus an empty P.tensors/ folder each (docs/formats/xser.md), o_proj column-major
    TrainerTag("converter-save-xser-empty-folders", "gqa", L(tp=2, pp=2, fuse_qkv=True, **QL), "converter_xser",
               o_colmajor=True),
    # xser as the trainer writes it, float32
    TrainerTag("xser-trainer-f32", "uneven", L(tp=2, pp=3), "xser"),
    # xser, bf16, qkv_linear trn2 m2
    TrainerTag("xser-trainer-trn2-m2-bf16", "gqa", L(tp=4, kv_mult=2, backend="trn2", **QL), "xser"),
    # the trainer's state_dict at TP 1 with qkv_linear (m 1, both KV heads on
    # the one rank: a layout its converter refuses), bf16
    TrainerTag("state-dict-qkvlin-tp1-bf16", "gqa", L(**QL), "state_dict", parameters=True),
]
TRAINER_BY_ID = {t.id: t for t in TRAINER_TAGS}
for _t in TRAINER_TAGS:
    validate(checkpoints.dims(_t.ckpt), _t.layout)


def _slices_of_whole(sd, d: Dims, lay: Layout, tp: int, pp: int, st) -> dict:
    """Which keys of a rank to store as a narrow() of the uncut tensor."""
    T = lay.tp
    out = {}
    if "model.embed_tokens.weight" in st:
        out["model.embed_tokens.weight"] = (sd["model.embed_tokens.weight"], 0, tp * d.V // T)
    if "lm_head.weight" in st:
        out["lm_head.weight"] = (sd["lm_head.weight"], 0, tp * d.V // T)
    for k in st:
        if k.endswith("mlp.down_proj.weight"):
            out[k] = (sd[k], 1, tp * d.I // T)
    return out


def build_trainer_tag(ck, tt: TrainerTag, dst: Path) -> Path:
    sd = ck.state_dict
    d = Dims.from_config(ck.config)
    states = TF.rank_states(sd, ck.config, tt.layout)
    if tt.kind == "xser":
        TF.write_xser_tag(dst, states)
    else:
        def store(rank, st):
            slices = _slices_of_whole(sd, d, tt.layout, *rank, st) if tt.slices else None
            return TF.trainer_state(st, parameters=tt.parameters, shared_qkv=tt.shared_qkv,
                                    o_colmajor=tt.o_colmajor, slice_of_whole=slices)
        TF.write_plain_tag(dst, states, old_naming=tt.kind == "old",
                           empty_tensors_dirs=tt.kind == "converter_xser", store=store)
    TF.add_trainer_extras(dst, states)
    return dst


def _self_check_trainer_tag(tt: TrainerTag, tag: Path) -> None:
    """The files really are stored as the case says (a test of the test)."""
    if tt.kind == "xser":
        p = tag / "model" / rank_file_name(0, 0)
        refs, info, tensors = test_xser.load_like_trainer(p)  # as NxD's trainer loads it
        assert [r.tid for r in refs.values()] == list(range(len(refs)))
        assert all((info[r.tid]["dtype"], info[r.tid]["shape"]) == (tensors[k].dtype, tensors[k].shape)
                   for k, r in refs.items())
        return
    if tt.kind == "converter_xser":
        assert Path(f"{tag / TF.new_rank_path(0, 0)}.tensors").is_dir()
    rel = TF.old_rank_path(0, 0) if tt.kind == "old" else TF.new_rank_path(0, 0)
    sdict = torch.load(tag / rel, weights_only=False)
    vals = list(sdict.values())
    if tt.parameters:
        assert type(sdict) is OrderedDict and hasattr(sdict, "_metadata") and "" in sdict._metadata
        assert all(isinstance(v, torch.nn.Parameter) for v in vals)
    if tt.shared_qkv:
        qs = [k for k in sdict if k.endswith(("weight_q", "q_proj.weight"))]
        assert qs
        q = sdict[qs[0]]
        k = sdict[qs[0].replace("weight_q", "weight_k").replace("q_proj", "k_proj")]
        assert q.untyped_storage().data_ptr() == k.untyped_storage().data_ptr() and k.storage_offset() > 0
    if tt.o_colmajor:
        o = next(v for k, v in sdict.items() if k.endswith("o_proj.weight"))
        assert o.stride() == (1, o.shape[0]) and not o.is_contiguous()
    if tt.slices:
        e = sdict["model.embed_tokens.weight"]
        assert e.untyped_storage().nbytes() > e.numel() * e.element_size()


@pytest.mark.parametrize("tid", [t.id for t in TRAINER_TAGS])
def test_trainer_written_tag(shardfs, ckpts, tmp_path, tid):
    """A tag written with torch.save as NxD's trainer / converter write it
    (plus optim/, scheduler.pt, user_content.pt, done, checkpoint, which
    must be ignored) converts with --format hf to exactly the original HF
    tensors."""
    tt = TRAINER_BY_ID[tid]
    ck = ckpts.get(tt.ckpt)
    tag = build_trainer_tag(ck, tt, tmp_path / "tag")
    _self_check_trainer_tag(tt, tag)
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, "--config", ck.path, *HF, "--source-hw-backend", tt.layout.backend)
    assert run.returncode == 0, run.describe()
    check_hf_single(out, ck, hf_expected(ck), tmp_path / "ref")
    # the same tag resharded to pt equals HF -> that layout's tensors
    plan = shardfs.run("plan", tag, "--config", ck.path, *HF, "--source-hw-backend", tt.layout.backend, "--json")
    assert plan.returncode == 0, plan.describe()
    lay = json.loads(plan.stdout)["sourceLayout"]
    want = tt.layout
    assert (lay["tpSize"], lay["ppSize"], lay["virtualPPSize"], lay["kvSizeMultiplier"], lay["qkvLinear"],
            lay["fuseQKV"]) == (want.tp, want.pp, want.vpp, want.kv_mult, want.qkv_linear, want.fuse_qkv), lay


def test_trainer_tag_resharded(shardfs, conversions, ckpts, tmp_path):
    """The trainer's state-dict tag (Parameters, shared storages, column-major
    o_proj, slices) resharded to another layout equals HF -> that layout."""
    tt = TRAINER_BY_ID["state-dict-qkvlin-m2-bf16"]
    ck = ckpts.get(tt.ckpt)
    tag = build_trainer_tag(ck, tt, tmp_path / "tag")
    b = _b("gqa-tp8-pp2-qkvlin-fuse-m4-trn1-f32")
    direct = conversions.converted_ok(tt.ckpt, list(b))
    out = tmp_path / "out"
    # Its optim/ is a plain optimizer's (add_trainer_extras): refused by
    # name, nothing written; --weights-only converts the weights alone.
    run = shardfs.run("convert", tag, out, "--config", ck.path, "--source-hw-backend", "trn1", *b)
    assert run.returncode == 1 and "optim/dp_rank_00_tp_rank_00_pp_rank_00.pt" in run.stderr, run.describe()
    assert "without ZeRO-1" in run.stderr and "--weights-only" in run.stderr, run.describe()
    assert files_under(out) == [], run.describe()
    run = shardfs.run("convert", tag, out, "--config", ck.path, "--source-hw-backend", "trn1", "--weights-only", *b)
    assert run.returncode == 0, run.describe()
    assert files_under(out) == files_under(direct.out)
    for n in files_under(out):
        off = first_difference(out / n, direct.out / n)
        assert off is None, f"{n}:\n" + explain_difference(out / n, direct.out / n, off)


# ---------------------------------------------------------------------------
# 4. through the mount

MOUNT_CASES = [
    ("pt", "r64x8-tp32-pp2-qkvlin-fuse-m4-trn1", None),
    ("xser", "tied-tp2-pp2", "40KB"),
    ("pt", "gqa-tp4-qkvlin-m2-trn2", "64KB"),
]


@pytest.mark.mount
@pytest.mark.parametrize("fmt,tag_id,size", MOUNT_CASES, ids=[f"{f}-{t}-{s or 'single'}" for f, t, s in MOUNT_CASES])
def test_mount_hf(conversions, ckpts, hfback, mounts, tmp_path, fmt, tag_id, size):
    """`shardfs mount TAG MNT --config CK --format hf`: the tree and bytes of
    convert --format hf; safetensors.safe_open reads every file (mmap);
    transformers.AutoModelForCausalLM.from_pretrained(MNT) loads a model
    whose state dict equals the original."""
    import transformers
    from safetensors import safe_open

    tag = TAG_BY_ID[(fmt, tag_id)]
    ck = ckpts.get(tag.ckpt)
    src = tag_dir(conversions, tag)
    extra = ["--max-shard-size", size] if size else []
    conv = hfback.ok(src, back_args(ck, tag, *extra))
    m = mounts.mount(src, new_mnt(tmp_path), *back_args(ck, tag, *extra))
    names = files_under(conv.out)
    assert files_under(m.mnt) == names, f"mounted files {files_under(m.mnt)}, convert wrote {names}"
    for n in names:
        assert (m.mnt / n).read_bytes() == (conv.out / n).read_bytes(), f"mounted {n} differs from convert's"
    want = hf_expected(ck, tag.dtype)
    got = {}
    for n in names:
        if n.endswith(".safetensors"):
            with safe_open(str(m.mnt / n), framework="pt") as f:
                for k in f.keys():
                    got[k] = f.get_tensor(k).clone()
                    sl = f.get_slice(k)
                    assert sl.get_shape() == list(want[k].shape)
    compare_tensors(got, want, "safe_open through the mount")
    model = transformers.AutoModelForCausalLM.from_pretrained(str(m.mnt))
    try:
        sd = {k: v.detach().clone() for k, v in model.state_dict().items()}
    finally:
        del model
        gc.collect()
    compare_tensors(sd, OrderedDict(ck.state_dict), "from_pretrained(MNT).state_dict()")


MOUNT_REFUSED = ["truncated-rank-file", "pickle-global-os-system", "missing-rank-file", "key-not-explained",
                 "config-missing", "source-hw-backend-needed"]


@pytest.mark.mount
def test_mount_hf_refuses_bad_tags(conversions, ckpts, mounts, tmp_path):
    """A bad tag or missing flag: `mount --format hf` exits 1 naming the
    culprit as convert does; nothing mounted, mount point left empty."""
    problems = []
    for bad_id in MOUNT_REFUSED:
        b = BAD_BY_ID[bad_id]
        src, env, args = _prepare_bad(conversions, ckpts, b, tmp_path / bad_id)
        mnt = new_mnt(tmp_path / bad_id, "mnt")
        r = mounts.try_mount(src, mnt, *args).run
        if r.returncode != 1:
            problems.append(f"{bad_id}: mount exit {r.returncode}\n{r.describe()}")
        for group in b.names:
            if not any(n in r.stderr for n in group):
                problems.append(f"{bad_id}: mount's stderr names none of {group}\n{r.describe()}")
        if is_mounted(mnt) or daemon_pids(mnt) or os.listdir(mnt):
            problems.append(f"{bad_id}: something left at {mnt}: daemons {daemon_pids(mnt)}, {os.listdir(mnt)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# 5. bad input


@dataclass
class Env:
    """What a mutation or an argument list may need."""
    ck: object  # the tag's checkpoints.Checkpoint
    conversions: object
    ckpts: object


@dataclass
class Bad:
    id: str
    base: Tag  # the tag to copy into tmp_path/src/tag
    mutate: Optional[Callable[[Path, Env], None]] = None
    args: Optional[Callable[[Path, Env], list]] = None  # default: --config CK --format hf
    names: tuple = ()  # groups of alternatives: stderr must hold one of each group
    rc: int = 1
    plan_too: bool = False


BASE = Tag("mha-tp2-pp2", "mha", L(tp=2, pp=2))  # plain, 4 files, bf16
BASE_GQA = Tag("gqa-tp2-pp2", "gqa", L(tp=2, pp=2))  # test_xser's pt twin
BASE_XSER = TAG_BY_ID[("xser", "gqa-tp2-pp2")]
M2_TRN1 = _pt("gqa-tp4-qkvlin-m2-trn1")

R00 = rank_file_name(0, 0)
R01 = rank_file_name(0, 1)
R10 = rank_file_name(1, 0)
R11 = rank_file_name(1, 1)


def _hf(env: Env) -> list:
    return ["--config", env.ck.path, *HF]


def _edit_rank(tag: Path, name: str, edit) -> None:
    p = tag / "model" / name
    d = torch.load(p, weights_only=True)
    edit(d)
    torch.save(d, p)


def _deflate(tag, env):
    TF.rewrite_deflated(tag / "model" / R10)


def _truncate(tag, env=None):
    p = tag / "model" / R10
    p.write_bytes(p.read_bytes()[:-100])


def _pkl_replace(old: bytes, new: bytes):
    def edit(pkl: bytes) -> bytes:
        assert old in pkl, (old, pkl[:200])
        return pkl.replace(old, new, 1)
    return edit


def _global_os_system(tag, env):
    # the first tensor's backward-hooks global (collections.OrderedDict) becomes os.system
    TF.rewrite_pt(tag / "model" / R10, _pkl_replace(b"ccollections\nOrderedDict\n", b"cos\nsystem\n"))


def _global_builtins_eval(tag, env):
    TF.rewrite_pt(tag / "model" / R10, _pkl_replace(b"ctorch._utils\n_rebuild_tensor_v2\n", b"cbuiltins\neval\n"))


def _opcode_inst(tag, env):
    # PROTO 2, EMPTY_DICT, BINPUT 0, then MARK, INST 'collections OrderedDict',
    # POP: still a valid pickle of the same dict (Python's unpickler builds an
    # OrderedDict and drops it), with an opcode torch.save never writes
    def edit(pkl: bytes) -> bytes:
        head = b"\x80\x02}q\x00"
        assert pkl.startswith(head), pkl[:16]
        inserted = b"(icollections\nOrderedDict\n0"
        assert pickle.loads(head + inserted + b".") == {}  # Python's unpickler takes it
        return head + inserted + pkl[len(head):]
    TF.rewrite_pt(tag / "model" / R10, edit)


def _rewrite_unchanged(tag, env):
    TF.rewrite_pt(tag / "model" / R10)


def _missing_rank(tag, env):
    (tag / "model" / R11).unlink()


def _mixed_plain_xser(tag, env):
    """Rank tp01 pp00 replaced by its xser form (P, P.info.pt, P.tensors/)."""
    xs = tag_dir(env.conversions, BASE_XSER)
    for suffix in ("", ".info.pt", ".tensors"):
        s = xs / "model" / (R10 + suffix)
        d = tag / "model" / (R10 + suffix)
        if s.is_dir():
            shutil.copytree(s, d)
        else:
            shutil.copy(s, d)


def _extra_key(tag, env):
    _edit_rank(tag, R10, lambda d: d.__setitem__("model.layers.0.mlp.extra_proj.weight",
                                                 torch.zeros(8, 64, dtype=torch.bfloat16)))


def _missing_key(tag, env):
    _edit_rank(tag, R11, lambda d: d.pop("model.layers.1.mlp.down_proj.weight"))


def _dtype_disagrees(tag, env):
    k = "model.layers.0.mlp.down_proj.weight"
    _edit_rank(tag, R10, lambda d: d.__setitem__(k, d[k].to(torch.float32)))


def _ep_rank(tag, env):
    shutil.copy(tag / "model" / R00, tag / "model" / "dp_rank_00_ep_rank_00_tp_rank_00_pp_rank_00.pt")


def _config_intermediate_64(tag, env):
    """A config.json of the same model but intermediate_size 64 (the tag's
    gate_up / down shapes say 128), in tmp_path/src/cfg."""
    cfg = json.loads((env.ck.path / CONFIG).read_text())
    cfg["intermediate_size"] = 64
    (tag.parent / "cfg").mkdir()
    (tag.parent / "cfg" / CONFIG).write_text(json.dumps(cfg, indent=2))


def _xser_info_wrong(tag, env):
    p = tag / "model" / (R10 + ".info.pt")
    info = torch.load(p, weights_only=False)
    info[0] = {**info[0], "shape": torch.Size([info[0]["shape"][0] + 1, *info[0]["shape"][1:]])}
    torch.save(info, p)


def _xser_tensor_missing(tag, env):
    (tag / "model" / (R10 + ".tensors") / "tensor_3.pt").unlink()


def _trainer_extras(tag, env):
    TF.add_trainer_extras(tag, {(0, 0): {"x": torch.zeros(2)}})


HEADS = ("vocab_size", "embed_tokens", "lm_head", "num_attention_heads", "num_key_value_heads", "q_proj",
         "k_proj", "qkv", "heads")

BAD = [
    # controls: the rewriting helpers alone produce tags that convert
    Bad("control-rewritten-unchanged", BASE, _rewrite_unchanged, rc=0),
    Bad("control-trainer-extras", BASE, _trainer_extras, rc=0),
    # rank files
    Bad("deflated-record", BASE, _deflate, names=((R10,),)),
    Bad("truncated-rank-file", BASE, _truncate, names=((R10,),)),
    Bad("pickle-global-os-system", BASE, _global_os_system, names=((R10,), ("os.system", "os system", "system"))),
    Bad("pickle-global-builtins-eval", BASE, _global_builtins_eval,
        names=((R10,), ("builtins.eval", "builtins eval", "eval"))),
    Bad("pickle-opcode-INST", BASE, _opcode_inst, names=((R10,), ("INST", "0x69", "'i'", "opcode 105"))),
    Bad("missing-rank-file", BASE, _missing_rank, names=((R11,),)),
    Bad("plain-and-xser-in-one-tag", BASE_GQA, _mixed_plain_xser, names=(("xser",), (R10, R00, R01, R11))),
    Bad("xser-info-disagrees", BASE_XSER, _xser_info_wrong, names=((R10 + ".info.pt", "tensor_0.pt"),)),
    Bad("xser-tensor-file-missing", BASE_XSER, _xser_tensor_missing, names=(("tensor_3.pt",),)),
    # keys and shapes vs the config
    Bad("key-not-explained", BASE, _extra_key, names=(("model.layers.0.mlp.extra_proj.weight",),)),
    Bad("key-missing", BASE, _missing_key, names=(("model.layers.1.mlp.down_proj.weight",),)),
    Bad("shape-vs-config-intermediate", BASE, _config_intermediate_64,
        args=lambda tag, env: ["--config", tag.parent / "cfg", *HF],
        names=(("intermediate_size", "gate_up_proj", "down_proj", "gate_proj", "up_proj"),)),
    Bad("config-of-another-model", BASE, None,  # gqa: 8/2 heads, vocab 256; the tag is mha: 4/4, 128
        args=lambda tag, env: ["--config", env.ckpts.get("gqa").path, *HF], names=(HEADS,)),
    Bad("ranks-disagree-on-dtype", BASE, _dtype_disagrees, names=(("model.layers.0.mlp.down_proj.weight",),)),
    Bad("ep-rank-file", BASE, _ep_rank, names=(("dp_rank_00_ep_rank_00_tp_rank_00_pp_rank_00.pt",),)),
    # flags
    Bad("config-missing", BASE, None, args=lambda tag, env: [*HF], names=(("--config",),), plan_too=True),
    Bad("config-path-missing", BASE, None, args=lambda tag, env: ["--config", tag.parent / "nowhere", *HF],
        names=(("nowhere",),), plan_too=True),
    Bad("source-hw-backend-needed", M2_TRN1, None, names=(("--source-hw-backend",),), plan_too=True),
    Bad("hf-with-layout-flag", BASE, None, args=lambda tag, env: [*_hf(env), "--tp-size", "2"],
        names=(("--tp-size",),), plan_too=True),
    Bad("max-shard-size-garbage", BASE, None, args=lambda tag, env: [*_hf(env), "--max-shard-size", "5gigs"],
        names=(("--max-shard-size",),), plan_too=True),
    Bad("part-with-hf", BASE, None, args=lambda tag, env: [*_hf(env), "--part", "0/2"], names=(("--part",),)),
]
BAD_BY_ID = {b.id: b for b in BAD}
assert len(BAD_BY_ID) == len(BAD)


def _prepare_bad(conversions, ckpts, b: Bad, base: Path):
    """Copies the case's tag to base/src/tag and applies its mutation; ->
    (tag, env, args)."""
    env = Env(ckpts.get(b.base.ckpt), conversions, ckpts)
    src = base / "src" / "tag"
    shutil.copytree(tag_dir(conversions, b.base), src)
    if b.mutate is not None:
        b.mutate(src, env)
    args = b.args(src, env) if b.args is not None else _hf(env)
    return src, env, args


@pytest.mark.parametrize("bad_id", [b.id for b in BAD])
def test_bad_source(shardfs, conversions, ckpts, tmp_path, bad_id):
    """Exit status 1, stderr names the file / key / flag, nothing in OUT
    (plan refuses the flag-level ones too)."""
    b = BAD_BY_ID[bad_id]
    src, env, args = _prepare_bad(conversions, ckpts, b, tmp_path)
    out = tmp_path / "out"
    run = shardfs.run("convert", src, out, *args, timeout=300)
    _check_refused(run, b)
    if b.rc == 0:
        check_hf_single(out, env.ck, hf_expected(env.ck), tmp_path / "ref")
        return
    assert_no_output(out, run)
    assert files_under(out) == [], f"files left in OUT after a failed run: {files_under(out)}\n{run.describe()}"
    if b.plan_too:
        _check_refused(shardfs.run("plan", src, *args, "--json", timeout=300), b)


def _check_refused(run, b: Bad) -> None:
    assert run.returncode == b.rc, f"expected exit status {b.rc}\n{run.describe()}"
    if b.rc == 0:
        return
    for group in b.names:
        assert any(n in run.stderr for n in group), f"stderr names none of {group}\n{run.describe()}"
    assert "Traceback" not in run.stderr and "Fatal error" not in run.stderr, run.describe()


def test_bad_source_reshard_nothing_written(shardfs, conversions, ckpts, tmp_path):
    """A bad tag resharded to pt: exit 1, the file named, nothing in OUT."""
    ck = ckpts.get(BASE.ckpt)
    src = tmp_path / "tag"
    shutil.copytree(tag_dir(conversions, BASE), src)
    _truncate(src)
    out = tmp_path / "out"
    run = shardfs.run("convert", src, out, "--config", ck.path, "--tp-size", "4")
    assert run.returncode == 1 and R10 in run.stderr, run.describe()
    assert_no_output(out, run)
    assert files_under(out) == []


# ---------------------------------------------------------------------------
# 6. --help


def test_help_says_what_happens_to_the_optimizer_state(shardfs):
    """A tag's optim/ goes with it (into another layout, or a TorchTitan
    checkpoint) unless --weights-only: the help must say so, not that it is
    never read."""
    run = shardfs.run("convert", "--help")
    text = " ".join(run.stdout.split())
    assert run.returncode == 0, run.describe()
    assert "optim/" in text and "--weights-only" in text and "never read" not in text and "is not read" not in text, \
        f"convert --help misstates what happens to optim/:\n{run.stdout}"
    for flag in ("--config", "--source-hw-backend", "--max-shard-size", "hf", "dcp", "--dcp-shards"):
        assert flag in text, f"convert --help does not mention {flag}"
