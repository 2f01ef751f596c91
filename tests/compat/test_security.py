"""A model directory (SRC) cannot make ShardFS read a file outside it: an
index naming a shard with `..` or an absolute path, or a shard or config
that is a symlink resolving outside SRC, is refused with exit status 1, a
message naming that file, and nothing written. Links that stay inside SRC
still work."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from checks import assert_no_output, files_under

SINGLE = "mha"  # one model.safetensors
SHARDED = "gqa"  # model.safetensors.index.json and shards
INDEX = "model.safetensors.index.json"


def _rename_in_index(src: Path, new_name_of) -> str:
    """Points every tensor of the first shard at new_name_of(shard); returns the new name."""
    idx = json.loads((src / INDEX).read_text())
    wm = idx["weight_map"]
    shard = sorted(set(wm.values()))[0]
    new = new_name_of(shard)
    for k, v in wm.items():
        if v == shard:
            wm[k] = new
    (src / INDEX).write_text(json.dumps(idx, indent=2))
    return new


def _refused(shardfs, src: Path, out: Path, name: str, *words: str):
    for command in (("convert", src, out), ("plan", src, "--json")):
        run = shardfs.run(*command, "--tp-size", "2", timeout=300)
        assert run.returncode == 1, run.describe()
        for w in (name,) + words:
            assert w in run.stderr, f"stderr does not name {w!r}\n{run.describe()}"
        assert "Fatal error" not in run.stderr, run.describe()
    assert_no_output(out, run)


@pytest.mark.parametrize("how", ["dotdot", "absolute"])
def test_index_name_leaving_src(shardfs, ckpts, tmp_path, how):
    shardfs.require()
    src = ckpts.get(SHARDED).copy_to(tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    # The named file really exists outside, so only the name is at fault.
    shard = sorted(set(json.loads((src / INDEX).read_text())["weight_map"].values()))[0]
    shutil.copy(src / shard, outside / shard)
    if how == "dotdot":
        name = _rename_in_index(src, lambda s: f"../outside/{s}")
    else:
        name = _rename_in_index(src, lambda s: str(outside / s))
    _refused(shardfs, src, tmp_path / "out", name, "plain file names")


def test_shard_symlink_outside_src(shardfs, ckpts, tmp_path):
    shardfs.require()
    src = ckpts.get(SHARDED).copy_to(tmp_path / "src")
    outside = tmp_path / "outside"
    outside.mkdir()
    shard = sorted(set(json.loads((src / INDEX).read_text())["weight_map"].values()))[-1]
    shutil.move(src / shard, outside / shard)
    os.symlink(outside / shard, src / shard)
    _refused(shardfs, src, tmp_path / "out", shard, "outside the model directory")


def test_single_file_relative_symlink_outside_src(shardfs, ckpts, tmp_path):
    shardfs.require()
    src = ckpts.get(SINGLE).copy_to(tmp_path / "src")
    (tmp_path / "outside").mkdir()
    shutil.move(src / "model.safetensors", tmp_path / "outside" / "model.safetensors")
    os.symlink("../outside/model.safetensors", src / "model.safetensors")
    _refused(shardfs, src, tmp_path / "out", "model.safetensors", "outside the model directory")


def test_config_symlink_outside_src(shardfs, ckpts, tmp_path):
    shardfs.require()
    src = ckpts.get(SINGLE).copy_to(tmp_path / "src")
    (tmp_path / "outside").mkdir()
    shutil.move(src / "config.json", tmp_path / "outside" / "config.json")
    os.symlink(tmp_path / "outside" / "config.json", src / "config.json")
    _refused(shardfs, src, tmp_path / "out", "config.json", "outside the model directory")


def test_symlink_inside_src_converts(shardfs, ckpts, tmp_path):
    """Control: the same link, pointing inside SRC, is accepted."""
    shardfs.require()
    src = ckpts.get(SINGLE).copy_to(tmp_path / "src")
    (src / "blobs").mkdir()
    shutil.move(src / "model.safetensors", src / "blobs" / "model.safetensors")
    os.symlink("blobs/model.safetensors", src / "model.safetensors")
    out = tmp_path / "out"
    run = shardfs.run("convert", src, out, "--tp-size", "2", timeout=300)
    assert run.returncode == 0, run.describe()
    assert len(files_under(out / "model")) == 2
