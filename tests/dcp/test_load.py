"""(a) torch.distributed.checkpoint.load in one process into a state dict
shaped like TorchTitan's (its real Transformer and AdamW when TORCHTITAN_SRC
is set, else a plain module with the same names): every parameter and
optimizer state tensor bitwise equal to expected.py's, every param_groups,
lr_scheduler and train_state item equal in type and value."""

from __future__ import annotations

import pytest

import judge
import tags

SPECS = [s.name for s in tags.SPECS]


@pytest.mark.parametrize("spec", SPECS)
def test_dcp_load(store, tt, spec):
    judge.judge_dcp_load(store.folder(spec), store.expected(spec), tt)


def test_dcp_load_from_several_files(store, tt):
    """`--dcp-shards 3`: the same state, spread over three .distcp files."""
    spec = "tp2-pp2-dp3-fp32-pt-nomaster"
    out = store.folder(spec, shards=3)
    judge.judge_dcp_load(out, store.expected(spec), tt)
    files = sorted(p.name for p in out.iterdir() if p.name.endswith(".distcp"))
    assert len(files) == 3, f"--dcp-shards 3 made {files}"


@pytest.mark.parametrize("shards", [None, 3], ids=["one-file", "shards3"])
def test_parts_make_one_folder(store, tt, tmp_path, shards):
    """`convert --part i/2` twice into one OUT (as two Slurm array tasks):
    no .metadata until both ran (it makes the folder a checkpoint), then the
    same judgement as one run's folder. ShardFS only: the reference converter
    has no --part."""
    if store.mode != "shardfs":
        pytest.skip("the reference converter has no --part")
    spec = "tp2-pp2-dp3-fp32-pt-nomaster"
    t = store.tag(spec)
    out = tmp_path / "out"
    for i in range(2):
        run = store.shardfs.run(*store.convert_args(t, out, shards), "--part", f"{i}/2")
        assert run.returncode == 0, run.describe()
        if i == 0:
            assert not (out / ".metadata").exists(), "part 0/2 alone wrote .metadata: the folder looks complete"
    judge.judge_dcp_load(out, store.expected(spec), tt)
    if tt:
        judge.judge_metadata(out, store.yardstick(), shards=shards)
