"""`shardfs verify SRC TAG [layout flags]` (issue 13): trees written by
`shardfs convert` (pt and xser, several layouts, a float32 --dtype), by a
--persist-to daemon, by torch.save with NxD's converter's column-major
o_proj, and through a mount itself pass; trees damaged one defect at a time
fail (exit 1) naming the file, the key, the element and both values, while
every other file is still reported ok; a tree of another layout fails with a
hint saying so; NxD's converter's trn2 tree (K/V heads tiled where trn2
groups them) fails naming the K/V keys and heads; --json says the same as
one document; --part splits the files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import time
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from checks import files_under
from reference import Dims, Layout, rank_file_name, rank_state, _kv
import test_convert
import test_xser
import trainer_files
from mounting import new_mnt
import zipdir

C = test_convert.CASE_BY_ID
X = test_xser.CASE_BY_ID

PT_CASES = [
    "gqa-tp4-pp2-f16",
    "gqa-tp8-pp2-qkvlin-fuse-m4-trn1-f32",  # --dtype float32 from bf16
    "gqa-tp4-qkvlin-m2-trn2",
    "tied-tp2-pp2",
    "uneven-tp2-pp2-vpp2-qkvlin-trn1",
    "f64-tp2-bf16",
    "r64x8-tp4-qkvlin-trn1",  # m 1, 2 KV heads a rank: the trainer's layout, not the converter's
]
XSER_CASES = ["gqa-tp4-qkvlin-fuse-m2", "uneven-tp2-pp3-bf16"]

# The tree the defect tests damage: 8 rank files.
DAMAGED = C["gqa-tp4-pp2-f16"]


def verify(shardfs, src, tag, *args):
    return shardfs.run("verify", src, tag, *args, timeout=120)


def verdicts(run) -> dict:
    """path -> status word of the text report (first line of each file)."""
    out = {}
    for line in run.stdout.splitlines():
        m = re.match(r"^(ok|WRONG|MISSING|UNREADABLE|EXTRA)\s+(\S+?)(:.*)?$", line)
        if m:
            out[m.group(2)] = m.group(1).lower()
    return out


def block_of(run, path: str) -> str:
    """The report's lines about `path` (its line and the indented ones after it)."""
    lines = run.stdout.splitlines()
    for i, line in enumerate(lines):
        if re.match(rf"^\S+\s+{re.escape(path)}(:|$)", line):
            out = [line]
            for follow in lines[i + 1:]:
                if not follow.startswith("    "):
                    break
                out.append(follow)
            return "\n".join(out)
    raise AssertionError(f"the report does not name {path}:\n{run.stdout}")


def expect_ok(run, names):
    assert run.returncode == 0, run.describe()
    got = verdicts(run)
    assert got == {n: "ok" for n in names}, f"verdicts {got}\n{run.describe()}"
    assert "verify: OK" in run.stdout, run.describe()


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def rank_names(layout: Layout) -> list[str]:
    return ["model/" + rank_file_name(t, p) for t in range(layout.tp) for p in range(layout.pp)]


# ---------------------------------------------------------------------------
# trees that pass


@pytest.mark.parametrize("case_id", PT_CASES)
def test_converted_pt_tree_passes(shardfs, conversions, ckpts, case_id):
    c = C[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    run = verify(shardfs, ckpts.get(c.ckpt).path, conv.out, *c.plan_args, "--jobs", "2")
    expect_ok(run, rank_names(c.layout))


@pytest.mark.parametrize("case_id", XSER_CASES)
def test_converted_xser_tree_passes(shardfs, conversions, ckpts, case_id):
    c = X[case_id]
    conv = conversions.converted_ok(c.ckpt, c.args)
    run = verify(shardfs, ckpts.get(c.ckpt).path, conv.out, *c.args)
    expect_ok(run, rank_names(c.layout))


def test_nxd_tag_as_source(shardfs, conversions, ckpts):
    """SRC may be an NxD tag (--config): a tree verified against another tree."""
    c = C["gqa-tp4-qkvlin-m2-trn2"]
    conv = conversions.converted_ok(c.ckpt, c.args)
    other = conversions.converted_ok(c.ckpt, ["--tp-size", "2", "--pp-size", "2"])
    run = verify(shardfs, other.out, conv.out, *c.plan_args, "--config", ckpts.get(c.ckpt).path)
    expect_ok(run, rank_names(c.layout))


def test_column_major_o_proj_and_views_pass(shardfs, ckpts, tmp_path):
    """torch.save of the rank state as NxD's converter and a trainer leave it:
    o_proj column-major, q/k/v views into one storage, OrderedDict of
    Parameters with _metadata (real CRCs, of shared and strided records),
    and the empty P.tensors/ folders the converter leaves with --save_xser 1."""
    ck = ckpts.get("gqa")
    lay = Layout(tp=2, pp=2, qkv_linear=True)
    states = trainer_files.rank_states(ck.state_dict, ck.config, lay)
    tag = tmp_path / "tag"
    trainer_files.write_plain_tag(tag, states, empty_tensors_dirs=True, store=lambda key, st: trainer_files.trainer_state(
        st, parameters=True, shared_qkv=True, o_colmajor=True))
    run = verify(shardfs, ck.path, tag, *lay.cli_args())
    expect_ok(run, rank_names(lay))


def test_persisted_tree_and_mount_pass(shardfs, ckpts, mounts, tmp_path):
    """A --persist-to directory (real CRCs, a .shardfs/ manifest beside
    model/) and the mount itself (CRC fields 0) both pass."""
    c = C["gqa-tp4-pp2-f16"]
    src = ckpts.get(c.ckpt).path
    d = tmp_path / "persisted"
    m = mounts.mount(src, new_mnt(tmp_path), *c.plan_args, "--persist-to", d)
    names = rank_names(c.layout)
    deadline = 60
    start = time.time()
    while time.time() - start < deadline:
        if all((d / n).exists() for n in names):
            break
        time.sleep(0.2)
    assert all((d / n).exists() for n in names), f"not persisted after {deadline}s: {files_under(d)}"
    expect_ok(verify(shardfs, src, d, *c.plan_args), names)
    with zipfile.ZipFile(m.mnt / names[0]) as z:
        assert all(i.CRC == 0 for i in z.infolist()), "the mount serves CRC fields"
    expect_ok(verify(shardfs, src, m.mnt, *c.plan_args), names)


# ---------------------------------------------------------------------------
# defects


def patch(path: Path, offset: int, new: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(new)


@pytest.fixture
def damaged(conversions, tmp_path):
    conv = conversions.converted_ok(DAMAGED.ckpt, DAMAGED.args)
    return copy_tree(conv.out, tmp_path / "tag")


def test_missing_extra_truncated_unreadable_files(shardfs, ckpts, damaged):
    names = rank_names(DAMAGED.layout)
    missing, truncated, garbage = names[0], names[3], names[5]
    (damaged / missing).unlink()
    data = (damaged / truncated).read_bytes()
    (damaged / truncated).write_bytes(data[: len(data) // 2])
    (damaged / garbage).write_bytes(b"not a zip file at all" * 100)
    shutil.copy(damaged / names[1], damaged / "model" / rank_file_name(4, 0))
    (damaged / "model" / "notes.txt").write_text("hello")
    (damaged / "done").write_text("")  # not trusted, not needed: ignored

    run = verify(shardfs, ckpts.get(DAMAGED.ckpt).path, damaged, *DAMAGED.plan_args)
    assert run.returncode == 1, run.describe()
    got = verdicts(run)
    want = {n: "ok" for n in names}
    want.update({missing: "missing", truncated: "unreadable", garbage: "unreadable",
                 "model/" + rank_file_name(4, 0): "extra", "model/notes.txt": "extra"})
    assert got == want, run.describe()
    assert "FAILED" in run.stdout and "5 of 8 files ok" in run.stdout, run.describe()
    assert "hint:" not in run.stdout, run.describe()  # a stray file is not another layout
    assert "end" in block_of(run, truncated) or "zip" in block_of(run, truncated), run.describe()


def test_wrong_values_name_key_element_and_crc(shardfs, ckpts, damaged):
    path = damaged / "model" / rank_file_name(1, 0)
    recs = zipdir.of_file(path).by_name()
    archive = rank_file_name(1, 0)[:-3]
    state = torch.load(path, weights_only=True)
    keys = list(state)
    # storage 2 is the third key; set its element 5 to 2.0 (float16 0x4000)
    patch(path, recs[f"{archive}/data/2"].data_offset + 5 * 2, struct.pack("<H", 0x4000))
    cols = state[keys[2]].shape[1]

    run = verify(shardfs, ckpts.get(DAMAGED.ckpt).path, damaged, *DAMAGED.plan_args)
    assert run.returncode == 1, run.describe()
    block = block_of(run, f"model/{rank_file_name(1, 0)}")
    assert block.startswith("WRONG"), block
    assert f"{keys[2]} differs at element [{5 // cols}, {5 % cols}] (index 5)" in block, block
    assert "found 2 (0x4000)" in block, block
    assert "expected " in block, block
    assert f"record {archive}/data/2 (key {keys[2]})" in block and "CRC-32" in block, block
    others = {n: s for n, s in verdicts(run).items() if n != f"model/{rank_file_name(1, 0)}"}
    assert set(others.values()) == {"ok"}, run.describe()


def test_crc_field_damaged_and_crc_zero_skipped(shardfs, ckpts, damaged):
    path = damaged / "model" / rank_file_name(2, 1)
    recs = zipdir.of_file(path).by_name()
    archive = rank_file_name(2, 1)[:-3]
    patch(path, recs[f"{archive}/data/0"].cd_crc_offset, b"\x01\x02\x03\x04")
    patch(path, recs[f"{archive}/data/1"].cd_crc_offset, b"\x00\x00\x00\x00")  # no CRC recorded: not checked

    run = verify(shardfs, ckpts.get(DAMAGED.ckpt).path, damaged, *DAMAGED.plan_args)
    assert run.returncode == 1, run.describe()
    block = block_of(run, f"model/{rank_file_name(2, 1)}")
    assert "0x04030201" in block and f"{archive}/data/0" in block and "damaged after it was written" in block, block
    assert f"{archive}/data/1" not in block, block
    assert "differs at" not in block, block


def test_keys_dtype_shape(shardfs, ckpts, damaged):
    names = rank_names(DAMAGED.layout)

    def rewrite(name, edit):
        p = damaged / name
        st = torch.load(p, weights_only=True)
        torch.save(edit(OrderedDict(st)), p)
        return list(st)

    keys0 = rewrite(names[0], lambda st: OrderedDict(list(st.items())[:-1]))  # last key dropped
    rewrite(names[1], lambda st: OrderedDict(list(st.items()) + [("model.extra.weight", torch.zeros(3))]))
    keys2 = rewrite(names[2], lambda st: OrderedDict([list(st.items())[i] for i in [0, 2, 1] + list(range(3, len(st)))]))
    keys3 = rewrite(names[3], lambda st: OrderedDict(
        (k, v.float() if i == 0 else v.reshape(-1) if i == 1 else v) for i, (k, v) in enumerate(st.items())))

    run = verify(shardfs, ckpts.get(DAMAGED.ckpt).path, damaged, *DAMAGED.plan_args)
    assert run.returncode == 1, run.describe()
    assert f"key {keys0[-1]} is missing" in block_of(run, names[0])
    assert "key model.extra.weight is not one the layout names" in block_of(run, names[1])
    assert f"keys out of order: key #1 is {keys2[2]}, where the layout has {keys2[1]}" in block_of(run, names[2])
    b3 = block_of(run, names[3])
    assert f"{keys3[0]} is float32, the layout wants float16" in b3, b3
    assert re.search(rf"{re.escape(keys3[1])} has shape \[\d+\], the layout wants \[\d+, \d+\]", b3), b3
    assert all(s == "ok" for n, s in verdicts(run).items() if n not in names[:4]), run.describe()


def test_xser_defects(shardfs, conversions, ckpts, tmp_path):
    c = X["gqa-tp4-qkvlin-fuse-m2"]
    tag = copy_tree(conversions.converted_ok(c.ckpt, c.args).out, tmp_path / "tag")
    names = rank_names(c.layout)
    p0, p1, p2 = (tag / n for n in names[:3])
    # p0: tensor 1 gone, a stray tensor file beside the others
    os.unlink(f"{p0}.tensors/tensor_1.pt")
    shutil.copy(f"{p0}.tensors/tensor_0.pt", f"{p0}.tensors/tensor_77.pt")
    # p1: its .info.pt says float32 for tensor 0
    trainer_files.tensor_reference_class()
    info = torch.load(f"{p1}.info.pt", weights_only=False)
    info[0]["dtype"] = torch.float32
    torch.save(info, f"{p1}.info.pt")
    # p2: a tensor file with other values
    t = torch.load(f"{p2}.tensors/tensor_2.pt", weights_only=True)
    torch.save(t + 1, f"{p2}.tensors/tensor_2.pt")

    run = verify(shardfs, ckpts.get(c.ckpt).path, tag, *c.args)
    assert run.returncode == 1, run.describe()
    b0 = block_of(run, names[0])
    assert f"{names[0]}.tensors/tensor_1.pt: missing" in b0 and f"{names[0]}.tensors/tensor_77.pt" in b0, b0
    b1 = block_of(run, names[1])
    assert f"{names[1]}.info.pt: says float32" in b1 and "for tensor 0" in b1, b1
    b2 = block_of(run, names[2])
    assert f"{names[2]}.tensors/tensor_2.pt:" in b2 and "differs at element [0, 0] (index 0)" in b2, b2
    assert verdicts(run)[names[3]] == "ok", run.describe()


def test_another_layout_is_named(shardfs, conversions, ckpts):
    c = C["gqa-tp4-pp2-f16"]
    conv = conversions.converted_ok(c.ckpt, c.args)
    run = verify(shardfs, ckpts.get(c.ckpt).path, conv.out, "--tp-size", "2", "--pp-size", "2", "--dtype", "float16")
    assert run.returncode == 1, run.describe()
    assert "hint: TAG/model holds rank files of tp-size 4 x pp-size 2; the layout checked has tp-size 2 x pp-size 2" in run.stdout, run.describe()
    # the same names but another layout (a dtype): inferred from the files
    run = verify(shardfs, ckpts.get(c.ckpt).path, conv.out, *c.layout.cli_args()[:-2], "--dtype", "float32")
    assert run.returncode == 1, run.describe()
    assert "is float16, the layout wants float32" in run.stdout, run.describe()
    assert "hint: TAG's rank files are of another layout: tp=4 pp=2 vpp=1 kv_mult=1 trn1 float16" in run.stdout, run.describe()
    # the other format
    run = verify(shardfs, ckpts.get(c.ckpt).path, conv.out, *c.plan_args, "--format", "xser")
    assert run.returncode == 1 and "check it without --format xser" in run.stdout, run.describe()


def test_trn2_tiled_kv_heads_fail_naming_them(shardfs, ckpts, tmp_path):
    """NxD's converter on trn2 with kv multiplier 2: Q and O in trn2's order
    but K/V tiled by the trn1 rule. T=4, Hkv=2: rank r wants KV head r // 2,
    holds r % 2, so ranks 1 and 2 are wrong in every layer."""
    ck = ckpts.get("gqa")
    d = Dims.from_config(ck.config)
    trn2 = Layout(tp=4, kv_mult=2, qkv_linear=True, fuse_qkv=True, backend="trn2")
    trn1 = Layout(tp=4, kv_mult=2, qkv_linear=True, fuse_qkv=True, backend="trn1")
    tag = tmp_path / "tag"
    (tag / "model").mkdir(parents=True)
    q_rows = d.Hq // trn2.tp * d.head_dim
    for r in range(trn2.tp):
        st = rank_state(ck.state_dict, d, trn2, r, 0)
        for l in range(d.L):
            p = f"model.layers.{l}."
            qkv = st[p + "self_attn.qkv_proj.weight_qkv"]
            k = _kv(ck.state_dict[p + "self_attn.k_proj.weight"], d, trn1, r).to(qkv.dtype)
            v = _kv(ck.state_dict[p + "self_attn.v_proj.weight"], d, trn1, r).to(qkv.dtype)
            st[p + "self_attn.qkv_proj.weight_qkv"] = torch.cat([qkv[:q_rows], k, v]).contiguous()
        torch.save(dict(st), tag / "model" / rank_file_name(r, 0))

    run = verify(shardfs, ck.path, tag, *trn2.cli_args())
    assert run.returncode == 1, run.describe()
    got = verdicts(run)
    assert got == {"model/" + rank_file_name(r, 0): ("wrong" if r in (1, 2) else "ok") for r in range(4)}, run.describe()
    for r in (1, 2):
        block = block_of(run, "model/" + rank_file_name(r, 0))
        for l in range(d.L):
            assert f"model.layers.{l}.self_attn.qkv_proj.weight_qkv differs" in block, block
        assert f"K and V rows hold KV head {r % 2}, the layout (trn2, kv multiplier 2) wants KV head {r // 2}" in block, block
        assert "tiled as on trn1" in block, block
    # --json names the heads
    run = verify(shardfs, ck.path, tag, *trn2.cli_args(), "--json")
    doc = json.loads(run.stdout)
    bad = [f for f in doc["files"] if f["status"] == "wrong"]
    assert [f["path"] for f in bad] == ["model/" + rank_file_name(r, 0) for r in (1, 2)]
    heads = bad[0]["problems"][0]["kvHeads"]
    assert heads == [{"projection": "K", "row": q_rows, "wanted": 0, "found": 1},
                     {"projection": "V", "row": q_rows + d.head_dim, "wanted": 0, "found": 1}], heads


# ---------------------------------------------------------------------------
# --json and --part


def test_json_says_the_same(shardfs, ckpts, damaged):
    names = rank_names(DAMAGED.layout)
    (damaged / names[2]).unlink()
    path = damaged / names[4]
    recs = zipdir.of_file(path).by_name()
    patch(path, recs[f"{rank_file_name(2, 0)[:-3]}/data/1"].data_offset, b"\x00\x7c")  # float16 inf
    (damaged / "model" / "stray.pt").write_bytes(b"x")
    src = ckpts.get(DAMAGED.ckpt).path
    text = verify(shardfs, src, damaged, *DAMAGED.plan_args)
    run = verify(shardfs, src, damaged, *DAMAGED.plan_args, "--json")
    assert run.returncode == 1 == text.returncode, run.describe()
    doc = json.loads(run.stdout)
    assert doc["ok"] is False
    assert {f["path"]: f["status"] for f in doc["files"]} == verdicts(text)
    assert doc["summary"] == {"files": 8, "ok": 6, "wrong": 1, "missing": 1, "unreadable": 0, "extra": 1,
                              "bytes": doc["summary"]["bytes"]}, doc["summary"]
    wrong = next(f for f in doc["files"] if f["status"] == "wrong")
    values = next(p for p in wrong["problems"] if p["kind"] == "wrongValues")
    assert values["difference"]["index"] == 0 and values["difference"]["found"] == "inf"
    assert values["difference"]["foundBits"] == "0x7c00"
    assert values["message"] in text.stdout


def test_part_splits_files(shardfs, ckpts, damaged):
    names = rank_names(DAMAGED.layout)
    (damaged / "model" / "stray.pt").write_bytes(b"x")
    src = ckpts.get(DAMAGED.ckpt).path
    seen = []
    for i in range(3):
        run = verify(shardfs, src, damaged, *DAMAGED.plan_args, "--part", f"{i}/3", "--json")
        doc = json.loads(run.stdout)
        mine = [f["path"] for f in doc["files"] if f["status"] != "extra"]
        extras = [f["path"] for f in doc["files"] if f["status"] == "extra"]
        assert len(mine) in (2, 3), mine
        assert extras == (["model/stray.pt"] if i == 0 else []), extras
        assert run.returncode == (1 if i == 0 else 0), run.describe()
        seen += mine
    assert seen == names


def test_refusals(shardfs, ckpts, tmp_path):
    """No TAG, --format hf, a bad --part: exit 1 (64 for usage), the culprit named."""
    src = ckpts.get("gqa").path
    run = verify(shardfs, src, tmp_path / "nowhere")
    assert run.returncode == 1 and "nowhere: no such directory" in run.stderr, run.describe()
    run = verify(shardfs, src, tmp_path, "--format", "hf")
    assert run.returncode == 1 and "--format hf" in run.stderr, run.describe()
    run = verify(shardfs, src, tmp_path, "--part", "3/3")
    assert run.returncode == 64 and "--part" in run.stderr, run.describe()
    # a directory without model/: every file missing, and a hint
    run = verify(shardfs, src, tmp_path)
    assert run.returncode == 1 and "MISSING" in run.stdout and "model cannot be listed" in run.stdout, run.describe()
