"""`--format xser` (docs/formats/xser.md): for every rank file P, P (a dict of
torch_xla TensorReference objects), P.info.pt (dtype and shape per tid) and
P.tensors/tensor_<tid>.pt (each tensor alone), each a torch.save file.

Loaded the way NxD's trainer does (P with weights_only=False and a stand-in
TensorReference class defined here, then .info.pt, then every tensor file),
compared with the pt format's rank file of the same layout; every file is
torch.save's own bytes (serialization id aside); a mount serves the same tree
as convert writes (CRC-32 fields aside).
"""

from __future__ import annotations

import json
import os
import sys
import types
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from checks import files_under
from ptfile import assert_same_pt_bytes, first_difference
from reference import Layout, rank_file_name, validate
import checkpoints

# Mount helpers (the fixture comes from conftest.py).
import mounting
from mounting import new_mnt, zero_crcs

L = Layout
QL = dict(qkv_linear=True)
XSER = ["--format", "xser"]


class TensorReference:
    """Stand-in for torch_xla.utils.serialization.TensorReference (its one
    attribute is `tid`); registered under that module name below, so that
    torch.load(weights_only=False) finds it as it would on a Neuron host."""

    def __init__(self, tid):
        self.tid = tid


def _install_stand_in() -> None:
    for name in ("torch_xla", "torch_xla.utils", "torch_xla.utils.serialization"):
        sys.modules.setdefault(name, types.ModuleType(name))
    TensorReference.__module__ = "torch_xla.utils.serialization"
    sys.modules["torch_xla.utils.serialization"].TensorReference = TensorReference


_install_stand_in()


@dataclass(frozen=True)
class Case(mounting.Case):
    """A mount case, converted to xser (`args`) or plain (`pt_args`)."""

    @property
    def pt_args(self) -> list:
        return self.layout.cli_args()

    @property
    def args(self) -> list:
        return self.pt_args + XSER


CASES = [
    Case("gqa-tp2-pp2", "gqa", L(tp=2, pp=2)),
    Case("gqa-tp4-qkvlin-fuse-m2", "gqa", L(tp=4, kv_mult=2, fuse_qkv=True, **QL)),
    Case("uneven-tp2-pp3-bf16", "uneven", L(tp=2, pp=3, dtype="bfloat16")),  # f32 source, edge values
    Case("f16-tp2-qkvlin-trn1-f32", "f16", L(tp=2, dtype="float32", **QL)),
    Case("tied-tp2-pp2", "tied", L(tp=2, pp=2)),
    Case("f64-tp2-default", "f64", L(tp=2)),  # float64 in .info.pt
    Case("deep-pp3", "deep", L(pp=3)),  # 1000+ references: pickle batches, long memo
]
CASE_BY_ID = {c.id: c for c in CASES}
MOUNT_CASES = ["gqa-tp4-qkvlin-fuse-m2", "uneven-tp2-pp3-bf16", "tied-tp2-pp2"]


for _c in CASES:
    validate(checkpoints.dims(_c.ckpt), _c.layout)


def _ranks(case: Case):
    return [(t, p) for t in range(case.layout.tp) for p in range(case.layout.pp)]


def _rank_params(cases):
    for c in cases:
        for t, p in _ranks(c):
            yield pytest.param(c.id, t, p, id=f"{c.id}/tp{t:02d}-pp{p:02d}")


_PT: dict = {}


def pt_state(conversions, case: Case, t: int, p: int):
    """The pt format's rank file of the same layout (checked against
    reference.py and torch.save by test_convert.py)."""
    key = (case.id, t, p)
    if key not in _PT:
        conv = conversions.converted_ok(case.ckpt, case.pt_args)
        _PT[key] = torch.load(conv.out / "model" / rank_file_name(t, p), weights_only=True)
    return _PT[key]


def expected_xser_files(conversions, case: Case) -> list[str]:
    out = []
    for t, p in _ranks(case):
        name = "model/" + rank_file_name(t, p)
        n = len(pt_state(conversions, case, t, p))
        out += [name, name + ".info.pt"] + [f"{name}.tensors/tensor_{i}.pt" for i in range(n)]
    return sorted(out)


def dirs_under(d: Path) -> list[str]:
    """Folders below d, except ShardFS's manifest (d/.shardfs/)."""
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_dir() and p.relative_to(d).parts[0] != ".shardfs")


def load_like_trainer(path: Path):
    """NxD's xser load of one rank file: the references, then .info.pt, then
    each tensor file. -> (references dict, info dict, key -> tensor)."""
    refs = torch.load(path, weights_only=False)
    info = torch.load(f"{path}.info.pt", weights_only=False)
    tensors = {}
    for k, r in refs.items():
        assert isinstance(r, TensorReference), f"{path.name}[{k!r}] is a {type(r).__name__}, not a TensorReference"
        tensors[k] = torch.load(f"{path}.tensors/tensor_{r.tid}.pt", weights_only=False)
    return refs, info, tensors


def check_against_pt(path: Path, want, what: str):
    """Keys, tids, .info.pt and every tensor against the pt rank file."""
    refs, info, tensors = load_like_trainer(path)
    assert type(refs) is dict and list(refs) == list(want), f"{what}: keys differ from the pt file's"
    assert [r.tid for r in refs.values()] == list(range(len(want))), f"{what}: tids are not 0, 1, ... in key order"
    assert vars(next(iter(refs.values()))) == {"tid": 0}, f"{what}: a TensorReference holds {vars(next(iter(refs.values())))}"
    assert type(info) is dict and list(info) == list(range(len(want))), f"{what}: .info.pt keys {list(info)[:5]}..."
    problems = []
    for (k, e), tid in zip(want.items(), range(len(want))):
        g = tensors[k]
        i = info[tid]
        if list(i) != ["dtype", "shape", "expert_model_parallel"]:
            problems.append(f"{k}: .info.pt fields {list(i)}")
        if i.get("expert_model_parallel") is not False:
            problems.append(f"{k}: expert_model_parallel is {i.get('expert_model_parallel')!r}")
        if type(i.get("shape")) is not torch.Size:
            problems.append(f"{k}: .info.pt shape is a {type(i.get('shape')).__name__}, not torch.Size")
        if not isinstance(g, torch.Tensor):
            problems.append(f"{k}: tensor_{tid}.pt holds a {type(g).__name__}")
            continue
        if (i.get("dtype"), i.get("shape")) != (g.dtype, g.shape):
            problems.append(f"{k}: .info.pt says {i.get('dtype')} {i.get('shape')}, tensor_{tid}.pt holds {g.dtype} {g.shape}")
        if g.dtype != e.dtype or g.shape != e.shape or not torch.equal(g, e):
            problems.append(f"{k}: tensor_{tid}.pt is {g.dtype} {tuple(g.shape)}, differs from the pt file's "
                            f"{e.dtype} {tuple(e.shape)}")
        elif not g.is_contiguous() or g.storage_offset() != 0 or g.requires_grad:
            problems.append(f"{k}: not a contiguous, offset 0, requires_grad=False tensor")
    assert not problems, f"{what}:\n  " + "\n  ".join(problems[:20])
    return refs, info, tensors


# ---------------------------------------------------------------------------
# convert


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_xser_file_set(conversions, case_id):
    """Exactly P, P.info.pt and P.tensors/tensor_<tid>.pt per rank file; the
    only folders are model/ and the .tensors ones."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    want = expected_xser_files(conversions, c)
    got = files_under(conv.out)
    assert got == want, (f"files differ\n  missing: {sorted(set(want) - set(got))[:10]}\n"
                         f"  unexpected: {sorted(set(got) - set(want))[:10]}")
    assert dirs_under(conv.out) == sorted(["model"] + [f"model/{rank_file_name(t, p)}.tensors" for t, p in _ranks(c)])


@pytest.mark.parametrize("case_id,tp,pp", list(_rank_params(CASES)))
def test_xser_rank(conversions, case_id, tp, pp, tmp_path):
    """Loaded as the trainer loads it, equal to the pt format; .info.pt
    agrees with the tensor files; each file is torch.save's bytes (of the
    tensor it loads to; for P and .info.pt, of the object it loads to) with
    real CRC-32s."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    path = conv.out / "model" / rank_file_name(tp, pp)
    refs, info, tensors = check_against_pt(path, pt_state(conversions, c, tp, pp), f"{c.id} {path.name}")

    torch.serialization.set_crc32_options(True)
    checks = [(path, refs), (Path(f"{path}.info.pt"), info)]
    checks += [(Path(f"{path}.tensors/tensor_{r.tid}.pt"), tensors[k]) for k, r in refs.items()]
    for i, (f, obj) in enumerate(checks):
        with zipfile.ZipFile(f) as z:
            bad = z.testzip()
        assert bad is None, f"{f.name}: zip member {bad!r} has a wrong CRC-32"
        scratch = tmp_path / str(i)
        scratch.mkdir()
        torch.save(obj, scratch / f.name)  # same basename: same archive name
        assert_same_pt_bytes(f, scratch / f.name, f"torch.save of what {f.name} loads to")


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_xser_plan_json(shardfs, conversions, ckpts, case_id):
    """plan --json --format xser: every file of the format with the size
    convert writes."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    run = shardfs.run("plan", ckpts.get(c.ckpt).path, *c.args, "--json")
    assert run.returncode == 0, run.describe()
    plan = json.loads(run.stdout)
    assert plan.get("format") == "xser"
    sizes = {}
    for f in plan["files"]:
        sizes[f["path"]] = f["size"]
        sizes[f["info"]["path"]] = f["info"]["size"]
        for t in f["tensors"]:
            sizes[t["file"]["path"]] = t["file"]["size"]
    want = expected_xser_files(conversions, c)
    assert sorted(sizes) == want
    assert plan["fileCount"] == len(want)
    wrong = [(p, s, os.path.getsize(conv.out / p)) for p, s in sizes.items() if s != os.path.getsize(conv.out / p)]
    assert not wrong, f"plan sizes differ from the written files (path, plan, file): {wrong[:5]}"
    assert plan["totalSize"] == sum(sizes.values())


def test_xser_pt_unchanged(conversions):
    """--format pt is the default, and gives the same files as no flag."""
    c = CASE_BY_ID["gqa-tp2-pp2"]
    a = conversions.converted_ok(c.ckpt, c.pt_args)
    b = conversions.converted_ok(c.ckpt, c.pt_args + ["--format", "pt"])
    assert files_under(a.out) == files_under(b.out)
    for n in files_under(a.out):
        assert first_difference(a.out / n, b.out / n) is None, n


def test_xser_parts(shardfs, conversions, ckpts, tmp_path):
    """--part I/N keeps each rank file's group (P, P.info.pt, P.tensors/*)
    in one part; the parts together equal the full run byte for byte."""
    c = CASE_BY_ID["uneven-tp2-pp3-bf16"]
    full = conversions.converted_ok(c.ckpt, c.args)
    names = files_under(full.out)
    seen = set()
    for i in range(4):
        out = tmp_path / f"part{i}"
        run = shardfs.run("convert", ckpts.get(c.ckpt).path, out, *c.args, "--part", f"{i}/4")
        assert run.returncode == 0, run.describe()
        got = set(files_under(out))
        ranks = {n for n in got if n.endswith(".pt") and "/" not in n.removeprefix("model/") and ".pt." not in n}
        assert ranks, f"part {i}/4 wrote no rank file: {sorted(got)}"
        group = {n for n in names if any(n == r or n.startswith(r + ".") for r in ranks)}
        assert got == group, f"part {i}/4 does not hold whole groups: extra {sorted(got - group)[:5]}, missing {sorted(group - got)[:5]}"
        assert not (got & seen)
        seen |= got
        for n in got:
            assert first_difference(out / n, full.out / n) is None, f"part {i}/4: {n} differs from the full run's"
    assert sorted(seen) == names


@pytest.mark.parametrize("command", ["plan", "convert", "mount"])
def test_xser_bad_format(shardfs, ckpts, tmp_path, command):
    """An unknown --format is a usage error naming the flag and the choices;
    nothing is written or mounted."""
    src = ckpts.get("gqa").path
    target = tmp_path / "target"
    target.mkdir()
    args = [src] + ([] if command == "plan" else [target]) + ["--format", "safetensors"]
    run = shardfs.run(command, *args)
    assert run.returncode == 64, run.describe()
    assert "--format" in run.stderr and "xser" in run.stderr, run.describe()
    assert os.listdir(target) == []


def test_xser_help(shardfs):
    """--help of each command explains xser."""
    for command in ("plan", "convert", "mount"):
        run = shardfs.run(command, "--help")
        text = " ".join(run.stdout.split())
        assert run.returncode == 0 and "--format <pt|xser|hf|dcp>" in text, run.describe()
        assert "TensorReference" in text and "*.tensors" in text and "--save_xser" in text, run.describe()


# ---------------------------------------------------------------------------
# mount


def tree_of(root: Path) -> tuple[list, list]:
    return dirs_under(root), files_under(root)


@pytest.mark.mount
@pytest.mark.parametrize("case_id", MOUNT_CASES)
def test_xser_mount(conversions, ckpts, mounts, tmp_path, case_id):
    """The mounted tree equals convert's (folders, files, sizes); every file
    equals convert's with CRC fields zeroed; a rank loads through the mount
    as the trainer loads it, equal to the pt format."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    m = mounts.mount(ckpts.get(c.ckpt).path, new_mnt(tmp_path), *c.args)
    assert tree_of(m.mnt) == tree_of(conv.out), "mounted tree differs from the converted one"
    problems = []
    for n in files_under(conv.out):
        got = (m.mnt / n).read_bytes()
        want = zero_crcs((conv.out / n).read_bytes(), n)
        if got != want:
            problems.append(f"{n}: {len(got)} bytes mounted, {len(want)} converted; first difference at "
                            f"{next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))}")
    assert not problems, "\n".join(problems[:10])
    for t, p in _ranks(c):
        check_against_pt(m.model / rank_file_name(t, p), pt_state(conversions, c, t, p),
                         f"{c.id} mounted {rank_file_name(t, p)}")
