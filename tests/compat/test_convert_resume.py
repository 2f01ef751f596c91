"""`shardfs convert` never mixes layouts, and resumes (issue 13).

OUT records what convert wrote in the manifest `mount --persist-to` keeps
(OUT/.shardfs/: the layout, the sources, each finished file's size and
CRC-32). A convert into an OUT of another layout or source, or holding rank
files (safetensors, for --format hf) the new layout does not write, is
refused (exit 1, naming OUT, --force and the files) and changes nothing;
--force leaves exactly the new layout. Run again on an OUT it finished or
half finished, convert keeps the files whose size and CRC-32 match their
entries (same inode, same mtime) and writes the rest. A converted OUT is a
finished --persist-to DIR and the reverse. Expected bytes: a fresh convert of
the same layout into an empty directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from checks import files_under
from reference import Layout, expected_files, rank_file_name
from mounting import new_mnt
from test_persist import wait_persist

TP4 = ["--tp-size", "4"]
TP2 = ["--tp-size", "2"]


def snapshot(d: Path) -> dict:
    """Every entry below d (manifest included): kind, and for files the
    bytes' hash, inode and mtime."""
    out = {}
    for p in sorted(d.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(d))
        if p.is_dir():
            out[rel] = ("dir", st.st_ino)
        else:
            out[rel] = (hashlib.sha256(p.read_bytes()).hexdigest(), st.st_ino, st.st_mtime_ns)
    return out


def identities(d: Path, names) -> dict:
    return {n: ((d / n).stat().st_ino, (d / n).stat().st_mtime_ns) for n in names}


def manifest_entries(d: Path) -> dict:
    f = d / ".shardfs" / "finished"
    return {e["path"]: e for e in (json.loads(p.read_text()) for p in f.glob("*.json"))} if f.exists() else {}


def convert(shardfs, src, out, *args, timeout=300):
    return shardfs.run("convert", src, out, *args, timeout=timeout)


def assert_same_files(got: Path, want: Path, names, what: str) -> None:
    for n in names:
        assert (got / n).read_bytes() == (want / n).read_bytes(), f"{what}: {n} differs from a fresh convert's"


def assert_refused(run, out: Path, *names) -> None:
    assert run.returncode == 1, f"expected a refusal (exit 1)\n{run.describe()}"
    for s in (f"OUT {out}", "--force", *names):
        assert s in run.stderr, f"the refusal does not name {s!r}\n{run.describe()}"
    assert "Traceback" not in run.stderr and "Fatal error" not in run.stderr, run.describe()


@pytest.fixture(scope="module")
def gqa(ckpts):
    return ckpts.get("gqa").path


@pytest.fixture(scope="module")
def fresh(shardfs, gqa, tmp_path_factory):
    """Fresh converts of gqa per layout: the expected bytes."""
    cache = {}

    def get(*args) -> Path:
        if args not in cache:
            out = tmp_path_factory.mktemp("fresh") / "out"
            r = convert(shardfs, gqa, out, *args)
            assert r.returncode == 0, r.describe()
            cache[args] = out
        return cache[args]

    return get


# ---------------------------------------------------------------------------
# another layout: refused, nothing changed; --force leaves exactly the new one


def test_another_layout_is_refused_and_force_replaces_it(shardfs, gqa, fresh, tmp_path):
    out = tmp_path / "out"
    assert convert(shardfs, gqa, out, *TP4).returncode == 0
    (out / "optim").mkdir()
    (out / "optim" / "state.pt").write_bytes(b"optimizer")
    (out / "README").write_text("mine")
    before = snapshot(out)

    r = convert(shardfs, gqa, out, *TP2)
    assert_refused(r, out, "another layout", "tp=4", "tp=2", "model/" + rank_file_name(2, 0), "model/" + rank_file_name(3, 0))
    assert snapshot(out) == before, "a refused convert changed OUT"

    r = convert(shardfs, gqa, out, *TP2, "--force")
    assert r.returncode == 0, r.describe()
    want = expected_files(Layout(tp=2))
    assert files_under(out) == sorted(want + ["README", "optim/state.pt"])
    assert sorted(os.listdir(out)) == [".shardfs", "README", "model", "optim"]
    assert snapshot(out)["optim/state.pt"] == before["optim/state.pt"] and snapshot(out)["README"] == before["README"]
    assert_same_files(out, fresh(*TP2), want, "after --force")
    assert sorted(manifest_entries(out)) == want
    for n in ("model/" + rank_file_name(2, 0), "model/" + rank_file_name(3, 0)):
        assert f"removed {n}" in r.stderr, r.describe()


def test_another_source_is_refused(shardfs, ckpts, tmp_path):
    src = ckpts.get("gqa").copy_to(tmp_path / "src")
    out = tmp_path / "out"
    assert convert(shardfs, src, out, *TP2).returncode == 0
    before = snapshot(out)
    shard = sorted(p for p in src.iterdir() if p.suffix == ".safetensors")[0]
    os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    r = convert(shardfs, src, out, *TP2)
    assert_refused(r, out, "another source", shard.name, "modified")
    assert snapshot(out) == before


# ---------------------------------------------------------------------------
# resume


def test_second_run_keeps_every_file(shardfs, gqa, tmp_path):
    out = tmp_path / "out"
    assert convert(shardfs, gqa, out, *TP2, "--pp-size", "2").returncode == 0
    names = expected_files(Layout(tp=2, pp=2))
    before = identities(out, names)
    r = convert(shardfs, gqa, out, *TP2, "--pp-size", "2")
    assert r.returncode == 0, r.describe()
    assert identities(out, names) == before, "a finished file was rewritten"
    assert f"kept {len(names)} files" in r.stderr and "wrote 0 files" in r.stderr, r.describe()


def test_deleted_and_corrupted_files_are_rewritten(shardfs, gqa, fresh, tmp_path):
    out = tmp_path / "out"
    assert convert(shardfs, gqa, out, *TP4).returncode == 0
    names = expected_files(Layout(tp=4))
    gone, bad = names[0], names[2]
    (out / gone).unlink()
    with open(out / bad, "r+b") as f:  # one byte, same size: only the CRC-32 tells
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    stat = (out / bad).stat()
    os.utime(out / bad, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    tmp = out / "model" / f".{Path(names[1]).name}.shardfs-tmp-4242"  # a killed run's
    tmp.write_bytes(b"partial")
    kept = identities(out, [n for n in names if n not in (gone, bad)])
    r = convert(shardfs, gqa, out, *TP4)
    assert r.returncode == 0, r.describe()
    assert identities(out, kept) == kept, "an intact file was rewritten"
    assert f"rewriting {bad}: its CRC-32 is" in r.stderr and f"rewriting {gone}: it is missing" in r.stderr, r.describe()
    assert "kept 2 files" in r.stderr and "wrote 2 files" in r.stderr, r.describe()
    assert not tmp.exists(), "a temporary was left"
    assert files_under(out) == names
    assert_same_files(out, fresh(*TP4), names, "after the resume")


@pytest.fixture(scope="module")
def big(ckpts, tmp_path_factory) -> Path:
    """A Llama of 112M parameters (bf16, 2 shards): its float32 TP=4 PP=4
    files take long enough to kill a convert mid-way."""
    base = json.loads((ckpts.get("gqa").path / "config.json").read_text())
    h, inter, v, layers = 1024, 2048, 16384, 8
    base.update(hidden_size=h, intermediate_size=inter, vocab_size=v, num_hidden_layers=layers,
                num_attention_heads=8, num_key_value_heads=8, tie_word_embeddings=False)
    base.pop("head_dim", None)
    d = tmp_path_factory.mktemp("big")
    (d / "config.json").write_text(json.dumps(base))
    g = torch.Generator().manual_seed(13)

    def t(*shape):
        return torch.randn(*shape, generator=g).to(torch.bfloat16)

    first = {"model.embed_tokens.weight": t(v, h)}
    second = {"lm_head.weight": t(v, h), "model.norm.weight": t(h)}
    for i in range(layers):
        p = f"model.layers.{i}."
        layer = {p + "self_attn.q_proj.weight": t(h, h), p + "self_attn.k_proj.weight": t(h, h),
                 p + "self_attn.v_proj.weight": t(h, h), p + "self_attn.o_proj.weight": t(h, h),
                 p + "mlp.gate_proj.weight": t(inter, h), p + "mlp.up_proj.weight": t(inter, h),
                 p + "mlp.down_proj.weight": t(h, inter),
                 p + "input_layernorm.weight": t(h), p + "post_attention_layernorm.weight": t(h)}
        (first if i < layers // 2 else second).update(layer)
    shards = {"model-00001-of-00002.safetensors": first, "model-00002-of-00002.safetensors": second}
    for name, tensors in shards.items():
        save_file(tensors, str(d / name), metadata={"format": "pt"})
    index = {"metadata": {"total_size": sum(x.numel() * 2 for s in shards.values() for x in s.values())},
             "weight_map": {k: name for name, s in shards.items() for k in s}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    return d


BIG = ["--tp-size", "4", "--pp-size", "4", "--dtype", "float32"]


def test_killed_convert_is_completed(shardfs, big, tmp_path):
    names = expected_files(Layout(tp=4, pp=4))
    ref = tmp_path / "ref"
    assert convert(shardfs, big, ref, *BIG).returncode == 0
    out = tmp_path / "out"
    finished = out / ".shardfs" / "finished"
    p = subprocess.Popen([str(shardfs.require()), "convert", str(big), str(out), *BIG, "--jobs", "1"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while p.poll() is None and time.monotonic() < deadline:
        if finished.exists() and len(os.listdir(finished)) >= 3:
            break
        time.sleep(0.002)
    p.send_signal(signal.SIGKILL)
    p.wait()
    entries = manifest_entries(out)
    assert 3 <= len(entries) < len(names), f"the kill did not land mid-way: {len(entries)} of {len(names)} files done"
    # Only temporaries and complete files: each under a final name is the
    # fresh convert's, and every entry's file is there with its size.
    present = files_under(out)
    for f in present:
        if ".shardfs-tmp-" not in f:
            assert f in names and (out / f).read_bytes() == (ref / f).read_bytes(), f"{f} is not complete after SIGKILL"
    for path, e in entries.items():
        assert (out / path).stat().st_size == e["size"], f"entry {path} without its file"
    kept = identities(out, entries)

    r = convert(shardfs, big, out, *BIG)
    assert r.returncode == 0, r.describe()
    assert identities(out, entries) == kept, "a file finished before the kill was rewritten"
    assert files_under(out) == names, "temporaries left, or files missing"
    assert_same_files(out, ref, names, "after the resume")
    assert f"kept {len(entries)} files" in r.stderr, r.describe()


# ---------------------------------------------------------------------------
# one mechanism with `mount --persist-to`


def test_convert_then_persist_and_persist_then_convert(shardfs, gqa, mounts, tmp_path):  # noqa: F811
    args = [*TP2, "--pp-size", "2"]
    names = expected_files(Layout(tp=2, pp=2))
    converted = tmp_path / "converted"
    assert convert(shardfs, gqa, converted, *args).returncode == 0
    before = identities(converted, names)
    m = mounts.mount(gqa, new_mnt(tmp_path, "m1"), *args, "--persist-to", converted)
    p = wait_persist(shardfs, m)
    assert p["filesResumed"] == p["filesDone"] == len(names), p
    assert identities(converted, names) == before, "--persist-to rewrote a converted file"
    assert mounts.unmount(m.mnt).returncode == 0

    persisted = tmp_path / "persisted"
    m = mounts.mount(gqa, new_mnt(tmp_path, "m2"), *args, "--persist-to", persisted)
    assert wait_persist(shardfs, m)["filesResumed"] == 0
    assert mounts.unmount(m.mnt).returncode == 0
    before = identities(persisted, names)
    r = convert(shardfs, gqa, persisted, *args)
    assert r.returncode == 0, r.describe()
    assert identities(persisted, names) == before, "convert rewrote a persisted file"
    assert f"kept {len(names)} files" in r.stderr, r.describe()
    # The same bytes, the same manifest.
    assert_same_files(persisted, converted, names, "persisted")
    assert (persisted / ".shardfs/layout.json").read_bytes() == (converted / ".shardfs/layout.json").read_bytes()
    assert manifest_entries(persisted) == manifest_entries(converted)

    # --persist-to refuses a converted DIR of another layout too, by its name.
    m = mounts.try_mount(gqa, new_mnt(tmp_path, "m3"), *TP4, "--persist-to", converted)
    assert m.run.returncode != 0 and f"--persist-to {converted}" in m.run.stderr and "--force" in m.run.stderr, m.run.describe()


def test_parts_run_concurrently_into_one_out(shardfs, ckpts, tmp_path):
    src = ckpts.get("r64x8").path
    args = ["--tp-size", "8", "--pp-size", "2", "--qkv-linear", "--fuse-qkv", "--dtype", "float32"]
    ref = tmp_path / "ref"
    assert convert(shardfs, src, ref, *args).returncode == 0
    out = tmp_path / "out"
    exe = str(shardfs.require())
    procs = [subprocess.Popen([exe, "convert", str(src), str(out), *args, "--part", f"{i}/2", "--jobs", "2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(2)]
    errs = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    names = expected_files(Layout(tp=8, pp=2))
    assert files_under(out) == names
    assert_same_files(out, ref, names, "--part 0/2 + 1/2")
    assert sorted(manifest_entries(out)) == names


# ---------------------------------------------------------------------------
# --format hf


def test_hf_refusal_and_resume(shardfs, gqa, fresh, tmp_path):
    tag = fresh(*TP2)
    back = ["--config", gqa, "--format", "hf"]
    out = tmp_path / "hf"
    assert convert(shardfs, tag, out, *back, "--max-shard-size", "40KB").returncode == 0
    shards = [f for f in files_under(out) if f.endswith(".safetensors")]
    assert len(shards) > 1 and "model.safetensors.index.json" in files_under(out), files_under(out)
    (out / "tokenizer.json").write_text("{}")
    before = identities(out, files_under(out))
    r = convert(shardfs, tag, out, *back, "--max-shard-size", "40KB")
    assert r.returncode == 0 and identities(out, files_under(out)) == before, r.describe()

    snap = snapshot(out)
    r = convert(shardfs, tag, out, *back)  # one model.safetensors, another layout
    assert_refused(r, out, "another layout", "max_shard_size", *shards, "model.safetensors.index.json")
    assert snapshot(out) == snap
    r = convert(shardfs, tag, out, *back, "--force")
    assert r.returncode == 0, r.describe()
    assert files_under(out) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (out / ".shardfs/layout.json").exists()


# ---------------------------------------------------------------------------
# files NxD's converter (or anyone) left, without a manifest


def test_rank_files_without_manifest(shardfs, gqa, fresh, tmp_path):
    """TP=4 rank files as NxD's converter writes them (torch.save), the
    older per-rank folder, and an empty P.tensors folder (the converter's
    --save_xser): a TP=2 convert names them all and changes nothing; --force
    removes exactly them. Files the new layout names are rewritten."""
    out = tmp_path / "out"
    model = out / "model"
    model.mkdir(parents=True)
    for t in range(4):
        torch.save({"w": torch.full((4,), float(t))}, model / rank_file_name(t, 0))
    (model / "tp_rank_00_pp_rank_00").mkdir()
    torch.save({"w": torch.zeros(2)}, model / "tp_rank_00_pp_rank_00" / "checkpoint.pt")
    (model / (rank_file_name(1, 0) + ".tensors")).mkdir()
    (out / "optim").mkdir()
    (out / "optim" / "x.pt").write_bytes(b"x")
    before = snapshot(out)
    stale = ["model/" + rank_file_name(1, 0) + ".tensors/", "model/" + rank_file_name(2, 0), "model/" + rank_file_name(3, 0),
             "model/tp_rank_00_pp_rank_00/checkpoint.pt"]

    r = convert(shardfs, gqa, out, *TP2)
    assert_refused(r, out, "4 files of another layout", *stale)
    assert "model/" + rank_file_name(0, 0) + "," not in r.stderr, "a file the new layout rewrites was named"
    assert snapshot(out) == before, "a refused convert changed OUT"

    r = convert(shardfs, gqa, out, *TP2, "--force")
    assert r.returncode == 0, r.describe()
    want = expected_files(Layout(tp=2))
    assert files_under(out) == sorted(want + ["optim/x.pt"])
    assert sorted(os.listdir(model)) == [Path(n).name for n in want], "a folder of the old layout was left"
    assert_same_files(out, fresh(*TP2), want, "after --force")


def test_converting_into_the_source_is_refused(shardfs, gqa, fresh, tmp_path):
    tag = tmp_path / "tag"
    assert convert(shardfs, gqa, tag, *TP2).returncode == 0
    before = snapshot(tag)
    for args in (TP2, [*TP2, "--force"], ["--force"]):
        r = convert(shardfs, tag, tag, "--config", gqa, *args)
        assert r.returncode == 1 and "the source's" in r.stderr and f"OUT {tag}" in r.stderr, r.describe()
    assert snapshot(tag) == before
