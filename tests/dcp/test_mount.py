"""`shardfs mount TAG MNT --format dcp --config CONFIG.json`: the mounted
folder is judged as a converted one, (a) dcp.load, (c) one AdamW step and
(d) .metadata, read through the mount. Uses tests/compat's mounting.Mounts
(always unmounts). Not for the reference converter, which has no mount."""

from __future__ import annotations

import pytest

import judge

SPEC = "tp2-qkvlin-dp2-bf16-xser-master"


@pytest.mark.mount
def test_mount_serves_a_folder_torchtitan_loads(store, tt, tmp_path):
    if store.mode != "shardfs":
        pytest.skip("the reference converter has no mount")
    from mounting import Mounts, require_fuse

    require_fuse(store.shardfs)
    t = store.tag(SPEC)
    e = store.expected(SPEC)
    mounts = Mounts(store.shardfs, tmp_path)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        mounts.mount(t.path, mnt, "--format", "dcp", "--config", t.config, *t.spec.source_args)
        judge.judge_dcp_load(mnt, e, tt)
        judge.judge_step(mnt, e, store.reference_step(SPEC), tt)
        if tt:
            judge.judge_metadata(mnt, store.yardstick())
    finally:
        mounts.cleanup()
    assert not mounts.problems, "\n".join(mounts.problems)
