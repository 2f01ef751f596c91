#!/usr/bin/env python3
"""Writes the seed corpus of the ShardFS fuzz targets into fuzz/corpus/<target>/.

Seeds are real inputs (headers, index and config of examples/tiny-llama) plus
hand-made edge cases; the fuzzer mutates from them. Run again after changing
this file; the outputs are committed, so CI needs nothing but this tree.
Inputs that once crashed a target are kept in fuzz/corpus/<target>/ too
(named regression-*), and are not written by this script."""

import json
import struct
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "examples" / "tiny-llama"
CORPUS = ROOT / "fuzz" / "corpus"


def write(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def st(header_json, data_len=0):
    """A safetensors file prefix: the length, the header; data_len zero bytes."""
    h = header_json.encode() if isinstance(header_json, str) else header_json
    return struct.pack("<Q", len(h)) + h + b"\0" * data_len


def header_only(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return raw[: 8 + n]


# header: real headers alone (the target supplies the data region), and edge cases
for p in sorted(TINY.glob("*.safetensors")):
    write("header", p.stem + ".header", header_only(p))
write("header", "empty-object", st("{}"))
write("header", "metadata-only", st('{"__metadata__":{"format":"pt"}}'))
write("header", "scalar-and-empty", st(
    '{"s":{"dtype":"F64","shape":[],"data_offsets":[0,8]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[8,8]}}', 8))
write("header", "all-dtypes", st(
    '{"a":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"b":{"dtype":"F16","shape":[2],"data_offsets":[4,8]},'
    '"c":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},"d":{"dtype":"F64","shape":[1],"data_offsets":[12,20]}}', 20))
write("header", "huge-length", struct.pack("<Q", 2**64 - 1) + b"{}")
write("header", "length-over-limit", struct.pack("<Q", 100_000_001) + b"{}")
write("header", "shape-overflow", st('{"x":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,0]}}'))
write("header", "offsets-near-max", st('{"x":{"dtype":"BF16","shape":[1],"data_offsets":[9223372036854775806,9223372036854775807]}}'))
write("header", "deep-nesting", st("[" * 100 + "]" * 100))
write("header", "escapes", st('{"\\u00e9\\ud83d\\ude00":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4))
write("header", "duplicate-key", st('{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"x":{}}', 4))
write("header", "numbers", st('{"x":{"dtype":"F32","shape":[1e0,-0,1.5,99999999999999999999],"data_offsets":[0,4]}}', 4))

# index: the real index and names that try to leave the model directory
write("index", "tiny-llama.index.json", (TINY / "model.safetensors.index.json").read_bytes())
for i, name in enumerate(["../outside.safetensors", "/etc/passwd", "..", ".", "", "a/b.safetensors",
                          "nul\u0000.safetensors", "..\\windows", "ok.safetensors"]):
    write("index", f"name-{i}.json", json.dumps({"metadata": {}, "weight_map": {"model.norm.weight": name}}))
write("index", "no-weight-map.json", '{"metadata":{"total_size":0}}')
write("index", "weight-map-not-string.json", '{"weight_map":{"a":1,"b":null,"c":["x"]}}')

# config: the real config and awkward values
config = json.loads((TINY / "config.json").read_text())
write("config", "tiny-llama.json", json.dumps(config))
for i, (field, value) in enumerate([("num_hidden_layers", 0), ("hidden_size", 2**63 - 1), ("num_attention_heads", -1),
                                    ("num_key_value_heads", 3), ("head_dim", 2**40), ("vocab_size", 1.5),
                                    ("torch_dtype", "int8"), ("tie_word_embeddings", "yes"), ("architectures", []),
                                    ("intermediate_size", 1e300)]):
    write("config", f"field-{i}.json", json.dumps({**config, field: value}))

# dcpmetadata: hand-made protocol-4 pickles that must be refused. Real ones
# (torch's, and the writer's) come from
# Tests/ShardFSTests/Fixtures/generate_dcp_metadata_fixtures.py, which needs torch.
def frame(body):
    return b"\x80\x04\x95" + struct.pack("<Q", len(body)) + body


def short_unicode(s):
    return b"\x8c" + bytes([len(s)]) + s.encode()


DCP = short_unicode("torch.distributed.checkpoint.metadata") + b"\x94"
write("dcpmetadata", "os-system", frame(short_unicode("os") + b"\x94" + short_unicode("system") + b"\x94\x93\x94"
                                        + short_unicode("ls") + b"\x85R."))
write("dcpmetadata", "frame-past-end", b"\x80\x04\x95" + struct.pack("<Q", 2**63) + b"N.")
write("dcpmetadata", "frame-in-frame", frame(b"\x95" + struct.pack("<Q", 2) + b"N."))
# Metadata() with no state, and one whose state_dict_metadata is itself (memo 3)
write("dcpmetadata", "no-state", frame(DCP + short_unicode("Metadata") + b"\x94\x93\x94)\x81\x94."))
write("dcpmetadata", "holds-itself", frame(DCP + short_unicode("Metadata") + b"\x94\x93\x94)\x81\x94}\x94"
                                           + short_unicode("state_dict_metadata") + b"\x94h\x03sb."))

# planner: 6 flag bytes (tp, pp, vpp, kv multiplier, bits qkv_linear|fuse_qkv|trn2, dtype), 1 defect byte, config
def planner(name, flags, defect, cfg):
    write("planner", name, bytes(flags) + bytes([defect]) + json.dumps(cfg).encode())


planner("tp2", [2, 1, 1, 1, 0, 0], 0, config)
planner("tp4-pp2-vpp2-bf16", [4, 2, 2, 1, 0, 1], 0, config)
planner("qkv-trn1-tp4-m2", [4, 1, 1, 2, 1, 0], 0, config)
planner("qkv-fused-trn2-tp2", [2, 1, 1, 1, 7, 3], 0, config)
planner("missing-tensor", [1, 1, 1, 1, 0, 0], 4, config)
planner("wrong-shape", [1, 1, 1, 1, 0, 0], 6, config)
planner("tied-no-head-dim", [2, 1, 1, 1, 0, 0], 0,
        {k: v for k, v in {**config, "tie_word_embeddings": True}.items() if k != "head_dim"})
planner("extreme-pp", [1, 0xF2, 0xF2, 1, 0, 0], 0, config)
planner("extreme-heads", [1, 1, 1, 1, 0, 0], 0, {**config, "num_attention_heads": 2**32, "num_key_value_heads": 2**32,
                                                  "head_dim": 2**32})


# tag: NxD tags shardfs convert wrote from a micro Llama (2 layers, hidden 8),
# packed as the target's archive: [name length][name][data length, 4 bytes LE][data].
# Needs a shardfs binary (SHARDFS_BIN, or .build/debug/shardfs); skipped without one.
def tag_seeds():
    import os
    import shutil
    import subprocess
    import tempfile

    binary = os.environ.get("SHARDFS_BIN") or str(ROOT / ".build" / "debug" / "shardfs")
    if not Path(binary).exists():
        print(f"make_seeds: no shardfs binary at {binary}: tag seeds not written")
        return
    micro = {**config, "hidden_size": 8, "head_dim": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
             "intermediate_size": 8, "vocab_size": 8, "num_hidden_layers": 2, "tie_word_embeddings": False,
             "dtype": "bfloat16"}
    h, i, v, q, kv = 8, 8, 8, 8, 4
    shapes = {"model.embed_tokens.weight": [v, h], "model.norm.weight": [h], "lm_head.weight": [v, h]}
    for n in range(2):
        p = f"model.layers.{n}."
        shapes.update({p + "self_attn.q_proj.weight": [q, h], p + "self_attn.k_proj.weight": [kv, h],
                       p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, q],
                       p + "mlp.gate_proj.weight": [i, h], p + "mlp.up_proj.weight": [i, h],
                       p + "mlp.down_proj.weight": [h, i], p + "input_layernorm.weight": [h],
                       p + "post_attention_layernorm.weight": [h]})
    header, data = {}, b""
    for name, shape in shapes.items():
        count = 1
        for d in shape:
            count *= d
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [len(data), len(data) + 2 * count]}
        data += bytes((len(data) + k) % 251 for k in range(2 * count))
    with tempfile.TemporaryDirectory() as work:
        model = Path(work) / "micro"
        model.mkdir()
        (model / "config.json").write_text(json.dumps(micro))
        (model / "model.safetensors").write_bytes(st(json.dumps(header)) + data)
        layouts = {"xser-tp2": ["--tp-size", "2", "--format", "xser"],
                   "pt-tp2-pp2": ["--tp-size", "2", "--pp-size", "2"],
                   "xser-qkv-fused-tp2": ["--tp-size", "2", "--qkv-linear", "--fuse-qkv", "--format", "xser"]}
        for seed, flags in layouts.items():
            out = Path(work) / seed
            subprocess.run([binary, "convert", str(model), str(out)] + flags, check=True, capture_output=True)
            shutil.rmtree(out / ".shardfs")
            packed = b""
            entries = [("config.json", json.dumps(micro).encode())]
            entries += [("tag/" + str(f.relative_to(out)), f.read_bytes()) for f in sorted(out.rglob("*")) if f.is_file()]
            for name, blob in entries:
                packed += bytes([len(name)]) + name.encode() + struct.pack("<I", len(blob)) + blob
            write("tag", seed, packed)
        optimizer_seeds(micro, shapes, Path(work))


# tag with ZeRO-1 optimizer state (docs/formats/zero1.md): the micro Llama's training tag
# written by tests/compat/optimizer_tags.py (needs torch: skipped without).
def optimizer_seeds(micro, shapes, work):
    import sys

    try:
        import torch
    except ImportError:
        print("make_seeds: no torch: optimizer tag seeds not written")
        return
    sys.path.insert(0, str(ROOT / "tests" / "compat"))
    from optimizer_tags import TrainingState
    from reference import Layout

    g = torch.Generator().manual_seed(0)
    sd = {name: torch.randn(shape, generator=g).to(torch.bfloat16) for name, shape in shapes.items()}
    state = TrainingState(sd, micro)
    # pt only: an xser tag is hundreds of files, past the target's 64 and 128 KiB.
    for seed, lay, dp, kw, step in (("optim-pt-tp2-pp2-dp2", Layout(tp=2, pp=2), 2, {}, torch.tensor(7.0)),
                                    ("optim-pt-tp1-dp3-int-step-no-master", Layout(), 3, {"master": False}, 7)):
        state.step = step
        out = state.write_tag(work / seed, lay, dp, **kw)
        packed = b""
        entries = [("config.json", json.dumps(micro).encode())]
        entries += [("tag/" + str(f.relative_to(out)), f.read_bytes()) for f in sorted(out.rglob("*")) if f.is_file()]
        for name, blob in entries:
            packed += bytes([len(name)]) + name.encode() + struct.pack("<I", len(blob)) + blob
        write("tag", seed, packed)


tag_seeds()
