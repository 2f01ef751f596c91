"""`shardfs convert` / `shardfs plan` over a matrix of layouts, checked file
by file against reference.py and against torch.save's own bytes."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from checks import check_bytes, check_values, files_under
from ptfile import assert_same_except_id, first_difference
from reference import Dims, Layout, all_rank_states, expected_files, rank_file_name, rank_state, validate
import checkpoints


@dataclass(frozen=True)
class Case:
    id: str
    ckpt: str
    layout: Layout
    extra: tuple = ()  # extra CLI args (--jobs, explicit defaults)

    @property
    def args(self) -> list:
        return self.layout.cli_args() + list(self.extra)

    @property
    def plan_args(self) -> list:
        """args without --jobs (a convert-only option)."""
        a, out = self.args, []
        i = 0
        while i < len(a):
            if a[i] == "--jobs":
                i += 2
                continue
            out.append(a[i])
            i += 1
        return out


L = Layout
QL = dict(qkv_linear=True)

CASES = [
    # --- GQA, bf16, sharded checkpoint (8 q heads, 2 kv heads)
    Case("gqa-tp1-default", "gqa", L(), ("--jobs", "1")),
    Case("gqa-explicit-defaults", "gqa", L(), ("--tp-size", "1", "--pp-size", "1", "--virtual-pp-size", "1",
                                               "--kv-size-multiplier", "1", "--hw-backend", "trn1",
                                               "--dtype", "bfloat16")),
    Case("gqa-tp2-f32", "gqa", L(tp=2, dtype="float32")),
    Case("gqa-tp4-pp2-f16", "gqa", L(tp=4, pp=2, dtype="float16"), ("--jobs", "3")),
    Case("gqa-tp8-plain", "gqa", L(tp=8)),
    Case("gqa-tp2-qkvlin-trn1", "gqa", L(tp=2, **QL)),
    Case("gqa-tp4-qkvlin-m2-trn1", "gqa", L(tp=4, kv_mult=2, **QL), ("--jobs", "1")),
    Case("gqa-tp8-pp2-qkvlin-fuse-m4-trn1-f32", "gqa",
         L(tp=8, pp=2, kv_mult=4, fuse_qkv=True, dtype="float32", **QL), ("--hw-backend", "trn1")),
    Case("gqa-tp4-qkvlin-m2-trn2", "gqa", L(tp=4, kv_mult=2, backend="trn2", **QL)),
    Case("gqa-tp8-qkvlin-fuse-m4-trn2-f16", "gqa",
         L(tp=8, kv_mult=4, fuse_qkv=True, backend="trn2", dtype="float16", **QL)),
    Case("gqa-tp1-qkvlin-trn2", "gqa", L(tp=1, backend="trn2", **QL)),
    # trn1, m=1, Hkv % T == 0 with Hkv > T: the layout NxD's trainer trains in
    # (its converter refuses it): whole KV heads per rank, Q heads contiguous
    Case("gqa-tp1-qkvlin-trn1", "gqa", L(tp=1, **QL)),
    Case("gqa-tp2-qkvlin-fuse-trn2", "gqa", L(tp=2, fuse_qkv=True, backend="trn2", **QL)),
    # --- MHA, bf16, single file
    Case("mha-tp2-pp2", "mha", L(tp=2, pp=2)),
    Case("mha-tp4-qkvlin-trn1", "mha", L(tp=4, **QL)),
    Case("mha-tp2-qkvlin-trn2", "mha", L(tp=2, backend="trn2", **QL)),  # m=1, Hkv % T == 0
    Case("mha-tp2-qkvlin-fuse-trn1", "mha", L(tp=2, fuse_qkv=True, **QL)),  # m=1, Hkv % T == 0 (the trainer's)
    Case("mha-tp4-qkvlin-fuse-trn2-f32", "mha", L(tp=4, fuse_qkv=True, backend="trn2", dtype="float32", **QL)),
    # --- tied embeddings (no lm_head.weight in the files)
    Case("tied-tp1", "tied", L()),
    Case("tied-tp2-pp2", "tied", L(tp=2, pp=2)),
    Case("tied-tp4-pp2-qkvlin-fuse-trn1-f16", "tied", L(tp=4, pp=2, fuse_qkv=True, dtype="float16", **QL)),
    # --- Llama-3-70B head ratio (64 q heads, 8 kv heads, head_dim 8)
    Case("r64x8-tp8-qkvlin-fuse-trn1", "r64x8", L(tp=8, fuse_qkv=True, **QL)),
    Case("r64x8-tp32-pp2-qkvlin-fuse-m4-trn1", "r64x8",  # the seed's layout, scaled down
         L(tp=32, pp=2, kv_mult=4, fuse_qkv=True, **QL), ("--jobs", "2")),
    Case("r64x8-tp16-qkvlin-m2-trn2-f32", "r64x8", L(tp=16, kv_mult=2, backend="trn2", dtype="float32", **QL)),
    Case("r64x8-tp4-qkvlin-trn2", "r64x8", L(tp=4, backend="trn2", **QL)),  # m=1, Hkv % T == 0
    Case("r64x8-tp4-qkvlin-trn1", "r64x8", L(tp=4, **QL)),  # m=1, Hkv % T == 0 (the trainer's): 2 KV heads a rank
    # --- 5 layers, float32 source (edge values in model.norm), uneven stages
    Case("uneven-pp2", "uneven", L(pp=2)),
    Case("uneven-tp2-pp3-bf16", "uneven", L(tp=2, pp=3, dtype="bfloat16")),
    Case("uneven-tp2-pp2-vpp2-qkvlin-trn1", "uneven", L(tp=2, pp=2, vpp=2, **QL)),
    Case("uneven-vpp2-f16", "uneven", L(vpp=2, dtype="float16")),
    Case("uneven-pp2-vpp2-bf16", "uneven", L(pp=2, vpp=2, dtype="bfloat16")),
    Case("uneven-tp4-pp2-qkvlin-m2-trn2-f16", "uneven",
         L(tp=4, pp=2, kv_mult=2, backend="trn2", dtype="float16", **QL)),
    # --- float16 source
    Case("f16-tp2", "f16", L(tp=2)),
    Case("f16-tp2-pp2-bf16", "f16", L(tp=2, pp=2, dtype="bfloat16")),
    Case("f16-tp2-qkvlin-trn1-f32", "f16", L(tp=2, dtype="float32", **QL)),
    # --- float64 source (F64): default output float64, and narrowing as torch does it
    Case("f64-tp2-default", "f64", L(tp=2)),
    Case("f64-tp2-f32", "f64", L(tp=2, dtype="float32")),
    Case("f64-tp2-bf16", "f64", L(tp=2, dtype="bfloat16")),
    Case("f64-tp2-pp2-f16", "f64", L(tp=2, pp=2, dtype="float16")),
    # --- 375 layers: at pp 3, pp0 holds 1001 keys, pp1 exactly 1000, pp2 1002
    Case("deep-pp3", "deep", L(pp=3)),
    Case("deep-tp2-qkvlin-fuse-m2-f32", "deep", L(tp=2, kv_mult=2, fuse_qkv=True, dtype="float32", **QL)),
    # --- zip framing: FB extra with pad 0 and pad 63
    Case("odd-pad0-pad63", "odd", L()),
    # --- other accepted inputs
    Case("mistral-tp2-pp2", "mistral", L(tp=2, pp=2)),
    Case("headdim16-tp2-plain", "headdim16", L(tp=2)),  # head_dim != h/Hq is fine without qkv_linear
    Case("mha_nokv-tp4-qkvlin-trn1", "mha_nokv", L(tp=4, **QL)),  # num_key_value_heads absent
]
CASE_BY_ID = {c.id: c for c in CASES}
assert len(CASE_BY_ID) == len(CASES)


# every case must be a layout the spec accepts (a broken matrix is a test bug)
for _c in CASES:
    validate(checkpoints.dims(_c.ckpt), _c.layout)

# the matrix uses every flag, value and dtype
_all = " ".join(" ".join(c.args) for c in CASES)
for _flag in ("--tp-size", "--pp-size", "--virtual-pp-size", "--kv-size-multiplier", "--qkv-linear",
              "--fuse-qkv", "--hw-backend trn1", "--hw-backend trn2", "--dtype float32", "--dtype bfloat16",
              "--dtype float16", "--jobs"):
    assert _flag in _all, _flag
for _t in (1, 2, 4, 8):
    assert any(c.layout.tp == _t for c in CASES)
for _p in (1, 2, 3):
    assert any(c.layout.pp == _p for c in CASES)
for _m in (1, 2, 4):
    assert any(c.layout.kv_mult == _m and c.layout.qkv_linear for c in CASES)


def _file_params():
    for c in CASES:
        for t in range(c.layout.tp):
            for p in range(c.layout.pp):
                yield pytest.param(c.id, t, p, id=f"{c.id}/tp{t:02d}-pp{p:02d}")


_REF_CACHE: dict = {}


def reference_for(ckpts, case: Case, t: int, p: int):
    key = (case.id, t, p)
    if key not in _REF_CACHE:
        ck = ckpts.get(case.ckpt)
        _REF_CACHE[key] = rank_state(ck.state_dict, Dims.from_config(ck.config), case.layout, t, p)
    return _REF_CACHE[key]


# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_file_set(conversions, case_id):
    """Exit 0 and exactly the expected files under OUT (no marker files)."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    got = files_under(conv.out)
    want = expected_files(c.layout)
    assert got == want, (
        f"files under OUT differ\n  missing: {sorted(set(want) - set(got))}\n"
        f"  unexpected: {sorted(set(got) - set(want))}"
    )


@pytest.mark.parametrize("case_id,tp,pp", list(_file_params()))
def test_rank_file_values(conversions, ckpts, case_id, tp, pp):
    """Keys in order, dtypes, shapes, values == reference; loads with
    weights_only, mmap and calculate_storage_offsets."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    f = conv.out / "model" / rank_file_name(tp, pp)
    assert f.exists(), f"{f.name} not written"
    check_values(f, reference_for(ckpts, c, tp, pp))


@pytest.mark.parametrize("case_id,tp,pp", list(_file_params()))
def test_rank_file_bytes(conversions, ckpts, case_id, tp, pp, tmp_path):
    """Byte equality with torch.save (docs/formats/pt.md), real CRC-32s."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    f = conv.out / "model" / rank_file_name(tp, pp)
    assert f.exists(), f"{f.name} not written"
    check_bytes(f, reference_for(ckpts, c, tp, pp), tmp_path)


def _dtype_name(dt) -> str:
    return str(dt).removeprefix("torch.")


@pytest.mark.parametrize("case_id", [c.id for c in CASES])
def test_plan_json(shardfs, conversions, ckpts, case_id):
    """plan --json: same paths, sizes equal to the written files, tensors
    (key, dtype, shape) in file order."""
    c = CASE_BY_ID[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    ck = ckpts.get(c.ckpt)
    run = shardfs.run("plan", ck.path, *c.plan_args, "--json")
    assert run.returncode == 0, run.describe()
    try:
        plan = json.loads(run.stdout)
    except json.JSONDecodeError as e:
        pytest.fail(f"plan --json did not print JSON ({e}):\n{run.describe()}")
    assert isinstance(plan, dict) and isinstance(plan.get("files"), list), f"no 'files' list: {run.stdout[:500]}"
    paths = [f.get("path") for f in plan["files"]]
    assert sorted(paths) == expected_files(c.layout), f"plan paths: {paths}"
    assert len(set(paths)) == len(paths), "plan lists a file twice"
    problems = []
    for entry in plan["files"]:
        path = entry["path"]
        real = conv.out / path
        if entry.get("size") != os.path.getsize(real):
            problems.append(f"{path}: plan size {entry.get('size')}, file size {os.path.getsize(real)}")
        tp = int(path.split("tp_rank_")[1][:2])
        pp = int(path.split("pp_rank_")[1][:2])
        ref = reference_for(ckpts, c, tp, pp)
        want = [{"key": k, "dtype": _dtype_name(v.dtype), "shape": list(v.shape)} for k, v in ref.items()]
        got = [{"key": t.get("key"), "dtype": t.get("dtype"), "shape": t.get("shape")} for t in entry.get("tensors", [])]
        if got != want:
            for i, (g, w) in enumerate(zip(got, want)):
                if g != w:
                    problems.append(f"{path}: tensor #{i}: plan {g}, expected {w}")
                    break
            else:
                problems.append(f"{path}: plan lists {len(got)} tensors, expected {len(want)}")
    assert not problems, "\n".join(problems)


# ---------------------------------------------------------------------------
# --jobs and --part

JOBS_CASE = CASE_BY_ID["gqa-tp4-pp2-f16"]


@pytest.mark.parametrize("jobs", [["--jobs", "1"], ["--jobs", "2"], [], ["--jobs", "8"]],
                         ids=["jobs1", "jobs2", "default", "jobs8"])
def test_jobs_give_identical_bytes(conversions, jobs):
    """The output does not depend on --jobs, serialization_id included
    (it is derived from the layout and file name)."""
    base_args = JOBS_CASE.layout.cli_args()
    a = conversions.converted_ok(JOBS_CASE.ckpt, base_args + ["--jobs", "3"])
    b = conversions.converted_ok(JOBS_CASE.ckpt, base_args + jobs)
    names = expected_files(JOBS_CASE.layout)
    assert files_under(b.out) == names
    for n in names:
        off = first_difference(a.out / n, b.out / n)
        assert off is None, f"{n}: --jobs 3 and {jobs or 'default'} differ at byte {off}"


PART_CASES = [
    ("gqa-tp4-pp2-f16", 3),
    ("uneven-tp2-pp3-bf16", 4),
    ("r64x8-tp32-pp2-qkvlin-fuse-m4-trn1", 5),
    ("gqa-tp2-f32", 1),
]


@pytest.mark.parametrize("case_id,nparts", PART_CASES, ids=[f"{c}-parts{n}" for c, n in PART_CASES])
def test_parts(shardfs, conversions, ckpts, tmp_path, case_id, nparts):
    """--part I/N (0-based I): each part alone writes an even share; parts are
    disjoint; running all N into one OUT gives every file, each equal to the
    full run's file."""
    c = CASE_BY_ID[case_id]
    full = conversions.converted_ok(c.ckpt, c.args)
    src = ckpts.get(c.ckpt).path
    names = expected_files(c.layout)
    total = len(names)
    shares = []
    for i in range(nparts):
        out = tmp_path / f"alone{i}"
        run = shardfs.run("convert", src, out, *c.args, "--part", f"{i}/{nparts}")
        assert run.returncode == 0, run.describe()
        got = files_under(out)
        assert set(got) <= set(names), f"part {i}/{nparts} wrote unexpected files {sorted(set(got) - set(names))}"
        assert len(got) in (total // nparts, -(-total // nparts)), (
            f"part {i}/{nparts} wrote {len(got)} of {total} files (not an even share): {got}"
        )
        shares.append(set(got))
    for i in range(nparts):
        for j in range(i + 1, nparts):
            assert not (shares[i] & shares[j]), f"parts {i} and {j} both wrote {sorted(shares[i] & shares[j])}"
    assert set().union(*shares) == set(names), f"parts miss {sorted(set(names) - set().union(*shares))}"

    shared = tmp_path / "shared"
    seen = set()
    for i in range(nparts):
        run = shardfs.run("convert", src, shared, *c.args, "--part", f"{i}/{nparts}")
        assert run.returncode == 0, f"part {i}/{nparts} into a shared OUT:\n{run.describe()}"
        now = set(files_under(shared))
        assert now - seen == shares[i], f"part {i}/{nparts} into shared OUT added {sorted(now - seen)}, alone it wrote {sorted(shares[i])}"
        seen = now
    assert sorted(seen) == names
    for n in names:
        assert_same_except_id(shared / n, full.out / n, tmp_path / "cmp" / n.replace("/", "_"),
                              "the full run's file")
