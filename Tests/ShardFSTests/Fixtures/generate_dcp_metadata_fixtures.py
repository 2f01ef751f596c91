#!/usr/bin/env python3
"""Generates ../DCPMetadataFixtureData.swift: DCP `.metadata` files, embedded
as base64 literals, for DCPMetadataTests.swift. Also writes the seed corpus
of the `dcpmetadata` fuzz target, fuzz/corpus/dcpmetadata/.

Run with the project's venv (torch 2.13 cpu), from the repository root:

    .venv/bin/python Tests/ShardFSTests/Fixtures/generate_dcp_metadata_fixtures.py

- `torchSmall`: what torch.distributed.checkpoint.save writes (protocol 4)
  for a dict holding a 2-d float32 tensor, a 0-dim bfloat16 tensor, a float,
  a tuple and a nested dict with a float16 tensor and an int, saved to the
  relative folder `ckpt` (so storage_meta.checkpoint_id is PosixPath('ckpt'))
  with the save id pinned to SAVE_ID (it is a random UUID otherwise).
  DCPMetadataTests restates what it holds, read with pickletools.
- `pythonPickled`, `pythonPickledBare`: `pickle.dumps(..., protocol=2)` of
  Metadata objects built here, every string interned (one object per
  value, as DCPMetadata.pickled() shares them). DCPMetadataTests builds the
  same content in Swift and expects pickled() to write these very bytes.
- `torchSmallProtocol5`: torchSmall's Metadata as Python 3.14's pickle.dump
  writes it by default (protocol 5); `pythonTransformed`: python_pickled_bare()
  with its item stored through a transform (`transform_descriptors`), refused.
- `torchList`, `torchInt64`: torch's metadata of a list of tensors (a
  planner path with list indices) and of an int64 tensor, both refused by
  the reader naming the item.
"""

import base64
import os
import pickle
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
import torch.distributed.checkpoint.filesystem as dcp_filesystem
from torch.distributed.checkpoint.filesystem import _StorageInfo
from torch.distributed.checkpoint.metadata import (BytesStorageMetadata, ChunkStorageMetadata, Metadata,
                                                   MetadataIndex, StorageMeta, TensorProperties,
                                                   TensorStorageMetadata)

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "DCPMetadataFixtureData.swift"
ROOT = HERE.parent.parent.parent
CORPUS = ROOT / "fuzz" / "corpus" / "dcpmetadata"
SAVE_ID = "00000000-0000-4000-8000-000000000001"


def torch_saved(state_dict):
    """The .metadata dcp.save writes for state_dict, in one process without a
    process group, into ./ckpt of a fresh directory."""
    dcp_filesystem._generate_uuid = lambda: SAVE_ID
    cwd = os.getcwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
                dcp.save(state_dict, checkpoint_id="ckpt")
            return Path("ckpt/.metadata").read_bytes()
        finally:
            os.chdir(cwd)


def small_state_dict():
    return {
        "w": torch.arange(6, dtype=torch.float32).reshape(2, 3),
        "s": torch.tensor(1.5, dtype=torch.bfloat16),
        "lr": 0.5,
        "t": (1, "a"),
        "opt": {"state": {"x": torch.ones(2, dtype=torch.float16)}, "step": 3},
    }


def metadata(entries, planner, locations, save_id, version):
    """A Metadata with every string interned. entries: (fqn, None for a bytes
    item or (dtype, size, [(offsets, sizes)])); locations: (fqn, offsets or
    None, index or None, relative path, offset, length)."""
    i = sys.intern
    state = {}
    for fqn, tensor in entries:
        if tensor is None:
            state[i(fqn)] = BytesStorageMetadata()
        else:
            dtype, size, chunks = tensor
            state[i(fqn)] = TensorStorageMetadata(
                properties=TensorProperties(dtype=dtype), size=torch.Size(size),
                chunks=[ChunkStorageMetadata(offsets=torch.Size(o), sizes=torch.Size(s)) for o, s in chunks])
    storage = {MetadataIndex(i(fqn), offsets, index): _StorageInfo(i(path), offset, length)
               for fqn, offsets, index, path, offset, length in locations}
    return Metadata(state_dict_metadata=state,
                    planner_data={i(fqn): tuple(i(p) for p in path) for fqn, path in planner},
                    storage_data=storage,
                    storage_meta=None if save_id is None else StorageMeta(save_id=i(save_id)),
                    version=None if version is None else i(version))


def python_pickled():
    # Keep in step with DCPMetadataTests.handBuilt.
    return pickle.dumps(metadata(
        entries=[
            ("model.w", (torch.float32, [4, 6], [([0, 0], [2, 6]), ([2, 0], [2, 6])])),
            ("model.s", (torch.bfloat16, [], [([], [])])),
            ("optimizer.state.model.w.exp_avg", (torch.float64, [70000], [([0], [70000])])),
            ("optimizer.param_groups.lr", None),
            ("h", (torch.float16, [0, 3], [([0, 0], [0, 3])])),
        ],
        planner=[
            ("model.w", ["model", "w"]),
            ("model.s", ["model", "s"]),
            ("optimizer.state.model.w.exp_avg", ["optimizer", "state", "model.w", "exp_avg"]),
            ("optimizer.param_groups.lr", ["optimizer", "param_groups.lr"]),
            ("h", ["h"]),
        ],
        locations=[
            ("optimizer.param_groups.lr", None, None, "__0_0.distcp", 0, 1261),
            ("model.w", [0, 0], 0, "__0_0.distcp", 1261, 1000),
            ("model.w", [2, 0], 1, "__1_0.distcp", 0, 1000),
            ("model.s", [], 0, "__0_0.distcp", 2261, 800),
            ("optimizer.state.model.w.exp_avg", [0], 0, "__1_0.distcp", 1000, 3_000_000_000),
            ("h", [0, 0], 0, "__0_0.distcp", 3061, 700),
        ],
        save_id="7d2f0f6e-5a38-4c71-9a55-1b0c0e3d9a42", version="1.0.0"), protocol=2)


def python_pickled_bare():
    # Keep in step with DCPMetadataTests.bare: one item everywhere (SETITEM),
    # no storage_meta, no version.
    return pickle.dumps(metadata(entries=[("x", None)], planner=[("x", ["x"])],
                                 locations=[("x", None, None, "__0_0.distcp", 0, 5)],
                                 save_id=None, version=None), protocol=2)


def python_transformed():
    m = pickle.loads(python_pickled_bare())
    for info in m.storage_data.values():
        info.transform_descriptors = ["zstd"]
    return pickle.dumps(m, protocol=4)


def main():
    small = torch_saved(small_state_dict())
    fixtures = [
        ("torchSmall", small, "dcp.save (protocol 4) of small_state_dict()"),
        ("pythonPickled", python_pickled(), "pickle.dumps(protocol=2) of python_pickled()'s Metadata"),
        ("pythonPickledBare", python_pickled_bare(), "pickle.dumps(protocol=2) of python_pickled_bare()'s Metadata"),
        ("torchList", torch_saved({"x": [torch.ones(1), torch.zeros(2)], "e": torch.empty(0, 3)}),
         "dcp.save (protocol 4) of {'x': [ones(1), zeros(2)], 'e': empty(0, 3)}"),
        ("torchInt64", torch_saved({"i": torch.arange(3)}), "dcp.save (protocol 4) of {'i': arange(3)} (int64)"),
        ("torchSmallProtocol5", pickle.dumps(pickle.loads(small), protocol=5), "torchSmall's Metadata, pickle.dumps(protocol=5)"),
        ("pythonTransformed", python_transformed(), "python_pickled_bare() with transform_descriptors ['zstd'], protocol 4"),
    ]
    lines = [
        "// Generated by Fixtures/generate_dcp_metadata_fixtures.py with torch "
        + torch.__version__ + ". Do not edit.",
        "// Each literal is the base64 of a DCP .metadata file.",
        "",
        "enum DCPMetadataFixtureData {",
    ]
    for name, data, what in fixtures:
        lines.append(f"    /// {what}: {len(data)} bytes.")
        lines.append(f"    static let {name} = \"{base64.b64encode(data).decode('ascii')}\"")
    lines.append("}")
    OUT.write_text("\n".join(lines) + "\n")

    CORPUS.mkdir(parents=True, exist_ok=True)
    seeds = {
        "torch-small.metadata": fixtures[0][1],
        # byte for byte what DCPMetadata.pickled() writes (DCPMetadataTests checks it)
        "writer.metadata": fixtures[1][1],
        "writer-bare.metadata": fixtures[2][1],
        "torch-list.metadata": fixtures[3][1],
        "torch-int64.metadata": fixtures[4][1],
        "protocol5.metadata": fixtures[5][1],
        "transformed.metadata": fixtures[6][1],
    }
    for name, data in seeds.items():
        (CORPUS / name).write_bytes(data)
    print(f"wrote {OUT} and {CORPUS}", file=sys.stderr)


if __name__ == "__main__":
    main()
