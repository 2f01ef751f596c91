#!/usr/bin/env python3
"""Write a Hugging Face Llama checkpoint with a real model's shapes that costs
(almost) no disk: every safetensors data region is a hole (sparse file), with
a deterministic fill pattern written in a few places so that reads are cheap
to check yet not all zeros.

The directory looks like a `huggingface-cli download` of the model:
config.json (Llama-3-8B's or Llama-3-70B's, as the hub ships them), and
model-0000i-of-0000N.safetensors shards (8B: 4, 70B: 30) split as HF splits a
state dict (greedy in state-dict order, 5 GB per shard), each with a header
as the safetensors library writes it (`__metadata__` first, then tensors
sorted by name, data in that order, header padded to 8 bytes with spaces),
plus model.safetensors.index.json ({"metadata": {"total_size"}, "weight_map"}).

Written bytes (everything else reads as zeros): PATTERN_BYTES (4 KiB) at the
start of every tensor's data and at every multiple of 64 MiB of file offset
inside the data region, each clipped to the region. The pattern is a pure
function of (shard number, file offset): 16-bit little-endian words

    x = (e * 0x9E3779B1 + shard * 0x85EBCA6B) mod 2^32,  e = offset / 2
    x ^= x >> 15
    word = 0x3800 | (x & 0x87FF)

i.e. finite bf16 values of magnitude 2^-15 .. 2 with either sign (no NaN, no
Inf), so bf16 -> fp32 conversion is exercised with real values.
`expected_bytes(shard, offset, n)` gives the expected content of any range;
`--verify` re-reads every written region and a few holes.

    python bench/make_sparse_checkpoint.py --model 8b  --out bench-out/sparse-llama-3-8b
    python bench/make_sparse_checkpoint.py --model 70b --out bench-out/sparse-llama-3-70b
    python bench/make_sparse_checkpoint.py --model 8b  --out DIR --verify   # check an existing one

Only the standard library is needed.
"""
import argparse
import json
import os
import shutil
import struct
import sys
import time
from array import array

PATTERN_BYTES = 4096
PATTERN_EVERY = 64 << 20
SHARD_LIMIT = 5_000_000_000  # HF's max_shard_size="5GB" (10^9)
HUB_SHARDS = {"8b": 4, "70b": 30}

# Meta-Llama-3-8B's config.json as published on the Hugging Face Hub.
LLAMA_3_8B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 8192,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": None,
    "rope_theta": 500000.0,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

# Llama-3-70B's config.json: Llama-3-8B's with the 70B sizes (field for
# field the file the hub ships).
LLAMA_3_70B_CONFIG = dict(LLAMA_3_8B_CONFIG, hidden_size=8192, intermediate_size=28672,
                          num_attention_heads=64, num_hidden_layers=80, num_key_value_heads=8)

GENERATION_CONFIG = {
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "do_sample": True,
    "temperature": 0.6,
    "top_p": 0.9,
    "max_length": 4096,
    "transformers_version": "4.40.0.dev0",
}


def load_config(model):
    return dict(LLAMA_3_8B_CONFIG if model == "8b" else LLAMA_3_70B_CONFIG)


def tensor_plan(cfg):
    """(name, shape) in HF state_dict order (the order the shard splitter sees)."""
    h = cfg["hidden_size"]
    hq = cfg["num_attention_heads"]
    hkv = cfg.get("num_key_value_heads", hq)
    d = cfg.get("head_dim", h // hq)
    inter = cfg["intermediate_size"]
    vocab = cfg["vocab_size"]
    plan = [("model.embed_tokens.weight", (vocab, h))]
    for n in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{n}."
        plan += [
            (p + "self_attn.q_proj.weight", (hq * d, h)),
            (p + "self_attn.k_proj.weight", (hkv * d, h)),
            (p + "self_attn.v_proj.weight", (hkv * d, h)),
            (p + "self_attn.o_proj.weight", (h, hq * d)),
            (p + "mlp.gate_proj.weight", (inter, h)),
            (p + "mlp.up_proj.weight", (inter, h)),
            (p + "mlp.down_proj.weight", (h, inter)),
            (p + "input_layernorm.weight", (h,)),
            (p + "post_attention_layernorm.weight", (h,)),
        ]
    plan.append(("model.norm.weight", (h,)))
    if not cfg.get("tie_word_embeddings", False):
        plan.append(("lm_head.weight", (vocab, h)))
    return plan


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def pack(plan, max_bytes, itemsize=2):
    """HF's shard splitter: greedy in state-dict order, a new shard when the
    next tensor would push the current one past the limit."""
    shards, cur, cur_bytes = [], [], 0
    for name, shape in plan:
        nbytes = numel(shape) * itemsize
        if cur and cur_bytes + nbytes > max_bytes:
            shards.append(cur)
            cur, cur_bytes = [], 0
        cur.append((name, shape))
        cur_bytes += nbytes
    if cur:
        shards.append(cur)
    return shards


def safetensors_header(tensors, itemsize=2):
    """(header bytes incl. the 8-byte length, {name: (begin, end)} relative to
    the data region), as safetensors writes it for same-dtype tensors: sorted
    by name, `__metadata__` first, JSON without spaces, padded to 8 bytes."""
    entries = sorted(tensors)
    offsets = {}
    pos = 0
    meta = {"__metadata__": {"format": "pt"}}
    for name, shape in entries:
        n = numel(shape) * itemsize
        offsets[name] = (pos, pos + n)
        meta[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [pos, pos + n]}
        pos += n
    text = json.dumps(meta, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text, offsets, pos


def expected_bytes(shard, offset, n):
    """The pattern's bytes for file offsets [offset, offset + n) of shard
    number `shard` (1-based); offset and n must be even."""
    assert offset % 2 == 0 and n % 2 == 0
    e0 = offset // 2
    mul, add = 0x9E3779B1, (shard * 0x85EBCA6B) & 0xFFFFFFFF
    words = array("H", bytes(n))
    for i in range(n // 2):
        x = ((e0 + i) * mul + add) & 0xFFFFFFFF
        x ^= x >> 15
        words[i] = 0x3800 | (x & 0x87FF)
    if sys.byteorder != "little":
        words.byteswap()
    return words.tobytes()


def pattern_regions(data_start, offsets, data_end):
    """Sorted, merged (offset, length) file ranges that hold pattern bytes."""
    regions = []
    for begin, end in offsets.values():
        if end > begin:
            regions.append((data_start + begin, min(PATTERN_BYTES, end - begin)))
    o = -(-data_start // PATTERN_EVERY) * PATTERN_EVERY
    while o < data_end:
        regions.append((o, min(PATTERN_BYTES, data_end - o)))
        o += PATTERN_EVERY
    regions.sort()
    merged = []
    for off, n in regions:
        if merged and off <= merged[-1][0] + merged[-1][1]:
            last_off, last_n = merged[-1]
            merged[-1] = (last_off, max(last_n, off + n - last_off))
        else:
            merged.append((off, n))
    return merged


def shard_layout(cfg, nshards_wanted):
    plan = tensor_plan(cfg)
    shards = pack(plan, SHARD_LIMIT)
    if len(shards) != nshards_wanted:
        sys.exit(f"packing gave {len(shards)} shards, the hub has {nshards_wanted}")
    return plan, shards


def write(out, model, force):
    cfg = load_config(model)
    plan, shards = shard_layout(cfg, HUB_SHARDS[model])
    if os.path.exists(out):
        if not force:
            sys.exit(f"{out} exists (use --force to overwrite)")
        shutil.rmtree(out)
    tmp = out.rstrip("/") + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    nshards = len(shards)
    weight_map, total, written = {}, 0, 0
    t0 = time.time()
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{nshards:05d}.safetensors"
        header, offsets, data_bytes = safetensors_header(shard)
        path = os.path.join(tmp, fname)
        data_start = len(header)
        data_end = data_start + data_bytes
        with open(path, "wb") as f:
            f.write(header)
            f.truncate(data_end)
            for off, n in pattern_regions(data_start, offsets, data_end):
                f.seek(off)
                f.write(expected_bytes(i, off, n))
                written += n
        os.chmod(path, 0o644)
        for name, _ in shard:
            weight_map[name] = fname
        total += data_bytes
        print(f"  {fname}: {len(shard)} tensors, {data_end / 1e9:.3f} GB", flush=True)
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    for name, obj in [("model.safetensors.index.json", index), ("config.json", cfg),
                      ("generation_config.json", GENERATION_CONFIG)]:
        with open(os.path.join(tmp, name), "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
    os.rename(tmp, out)
    used = sum(os.stat(os.path.join(out, n)).st_blocks * 512 for n in os.listdir(out))
    print(f"wrote {out}: {len(plan)} tensors, {nshards} shards, {total / 1e9:.3f} GB of weights "
          f"({written / 1e6:.1f} MB pattern written, {used / 1e6:.1f} MB on disk) in {time.time() - t0:.1f} s")


def verify(out, model):
    """Re-reads every pattern region and one 4 KiB probe per tensor middle
    (expected zeros unless it falls in a pattern region)."""
    cfg = load_config(model)
    _, shards = shard_layout(cfg, HUB_SHARDS[model])
    with open(os.path.join(out, "model.safetensors.index.json")) as f:
        wm = json.load(f)["weight_map"]
    bad = 0
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
        header, offsets, data_bytes = safetensors_header(shard)
        path = os.path.join(out, fname)
        if os.path.getsize(path) != len(header) + data_bytes:
            print(f"{fname}: size {os.path.getsize(path)}, expected {len(header) + data_bytes}")
            bad += 1
            continue
        regions = pattern_regions(len(header), offsets, len(header) + data_bytes)
        with open(path, "rb") as f:
            if f.read(len(header)) != header:
                print(f"{fname}: header differs")
                bad += 1
            for off, n in regions:
                f.seek(off)
                if f.read(n) != expected_bytes(i, off, n):
                    print(f"{fname}: pattern differs at {off}")
                    bad += 1
            for name, (b, e) in offsets.items():
                if wm.get(name) != fname:
                    print(f"{name}: index says {wm.get(name)}, expected {fname}")
                    bad += 1
                mid = len(header) + ((b + e) // 2 // 4096) * 4096
                if e - b < 3 * PATTERN_BYTES or any(o <= mid < o + n or mid <= o < mid + 4096 for o, n in regions):
                    continue
                f.seek(mid)
                if f.read(4096) != bytes(4096):
                    print(f"{fname}: {name}: hole at {mid} is not zeros")
                    bad += 1
    print(f"verify {out}: {'OK' if not bad else f'{bad} problems'}")
    return bad == 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=sorted(HUB_SHARDS), required=True, help="Llama-3 shapes: 8b or 70b")
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    ap.add_argument("--verify", action="store_true", help="check an existing --out instead of writing")
    args = ap.parse_args()
    if args.verify:
        sys.exit(0 if verify(args.out, args.model) else 1)
    write(args.out, args.model, args.force)


if __name__ == "__main__":
    main()
