"""`shardfs verify TAG FOLDER --format dcp`: a DCP folder against a tag's
plan (entries, values, every element), and the reverse, a tag against a DCP
folder as its source. A damaged element is named with both values; a
folder TorchTitan saved itself is read, its differences named."""

from __future__ import annotations

import io
import pickle
import shutil
import struct
import zipfile

import pytest

SPEC = "tp2-qkvlin-dp2-bf16-xser-master"


def _shardfs(store):
    if store.mode != "shardfs":
        pytest.skip("verify is ShardFS's")
    return store.shardfs


def _data_offset(archive: bytes) -> int:
    """Where the tensor's bytes start in a torch.save archive: after the
    local header of its `data/0` record (30 bytes, the name, the extra)."""
    record = next(i for i in zipfile.ZipFile(io.BytesIO(archive)).infolist() if i.filename.endswith("/data/0"))
    name_length, extra_length = struct.unpack_from("<HH", archive, record.header_offset + 26)
    return record.header_offset + 30 + name_length + extra_length


def test_a_converted_folder_verifies_and_a_damaged_element_is_named(store, tmp_path):
    shardfs = _shardfs(store)
    t = store.tag(SPEC)
    folder = tmp_path / "dcp"
    shutil.copytree(store.folder(SPEC), folder)
    args = [t.path, folder, "--config", t.config, *t.spec.source_args, "--format", "dcp"]
    run = shardfs.run("verify", *args)
    assert run.returncode == 0 and "OK" in run.stdout, run.describe()

    # Element 5 of chunk 1 of one moment: its lowest mantissa bit flipped.
    meta = pickle.load(open(folder / ".metadata", "rb"))
    fqn = "optimizer.state.layers.1.attention.wk.weight.exp_avg_sq"
    index, info = next((k, v) for k, v in meta.storage_data.items() if k.fqn == fqn and k.index == 1)
    path = folder / info.relative_path
    archive = path.read_bytes()[info.offset:info.offset + info.length]
    at = info.offset + _data_offset(archive) + 5 * 4
    with open(path, "r+b") as f:
        f.seek(at)
        byte = f.read(1)
        f.seek(at)
        f.write(bytes([byte[0] ^ 0x01]))
    run = shardfs.run("verify", *args)
    assert run.returncode == 1, run.describe()
    chunk = meta.state_dict_metadata[fqn].chunks[1]
    row, column = divmod(5, chunk.sizes[1])
    want = f"{fqn} differs at element [{chunk.offsets[0] + row}, {column}]"
    assert "WRONG      layers.1.attention.wk.weight" in run.stdout and want in run.stdout, run.describe()


def test_the_tag_verifies_against_the_folder_as_its_source(store, tmp_path):
    shardfs = _shardfs(store)
    t = store.tag(SPEC)
    folder = store.folder(SPEC)
    out = tmp_path / "back"
    layout = [*t.spec.layout.cli_args(), "--dp-size", str(t.spec.dp), "--format", "xser", "--dtype", "bfloat16"]
    run = shardfs.run("convert", folder, out, "--config", t.config, *layout)
    assert run.returncode == 0, run.describe()
    run = shardfs.run("verify", folder, out, "--config", t.config, *layout)
    assert run.returncode == 0 and "OK" in run.stdout, run.describe()


@pytest.mark.titan
def test_torchtitans_own_folder_of_other_values_is_read_and_every_difference_named(store, yardstick):
    """TorchTitan's own save (the same model's shapes, its own run's values,
    a dataloader entry): its .metadata matches the plan's entries (the
    dataloader aside), and every value that differs is named."""
    shardfs = _shardfs(store)
    t = store.tag(SPEC)
    run = shardfs.run("verify", t.path, yardstick, "--config", t.config, *t.spec.source_args, "--format", "dcp")
    assert run.returncode == 1, run.describe()
    assert "ok         .metadata" in run.stdout, run.describe()
    for wrong in ("WRONG      train_state", "WRONG      lr_scheduler", "WRONG      layers.0.attention.wq.weight"):
        assert wrong in run.stdout, run.describe()
