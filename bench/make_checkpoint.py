#!/usr/bin/env python3
"""Write a random Hugging Face Llama checkpoint with Llama-3.2-1B's shapes.

The directory looks like a `huggingface-cli download` of a sharded model:
config.json (the real Llama-3.2-1B config, or a scaled-down one when
overrides are given), generation_config.json, model-0000i-of-0000N.safetensors
shards of about --shard-mb MB each, and model.safetensors.index.json in HF's
format ({"metadata": {"total_size": ...}, "weight_map": {...}}).

Weights are random bf16 (normal, std 0.02; norms around 1). Tensors are
generated one shard at a time, so peak memory is about one shard, never the
whole model.

    python bench/make_checkpoint.py --out bench-out/llama-3.2-1b
    python bench/make_checkpoint.py --out /tmp/tiny --layers 4 --hidden 256 \
        --heads 8 --kv-heads 2 --intermediate 512 --vocab 1024 --shard-mb 1
"""
import argparse
import json
import os
import shutil
import sys
import time

import torch
from safetensors.torch import save_file

# Llama-3.2-1B's config.json as published by Meta on the Hugging Face Hub.
LLAMA_32_1B_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": False,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": 128001,
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "initializer_range": 0.02,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
    "mlp_bias": False,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
        "factor": 32.0,
        "high_freq_factor": 4.0,
        "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192,
        "rope_type": "llama3",
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.45.0.dev0",
    "use_cache": True,
    "vocab_size": 128256,
}

GENERATION_CONFIG = {
    "_from_model_config": True,
    "bos_token_id": 128000,
    "do_sample": True,
    "eos_token_id": 128001,
    "temperature": 0.6,
    "top_p": 0.9,
    "transformers_version": "4.45.0.dev0",
}


def tensor_plan(cfg):
    """(name, shape) in HF state_dict order."""
    h = cfg["hidden_size"]
    hq = cfg["num_attention_heads"]
    hkv = cfg["num_key_value_heads"]
    d = cfg["head_dim"]
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
    if not cfg["tie_word_embeddings"]:
        plan.append(("lm_head.weight", (vocab, h)))
    return plan


def numel(shape):
    n = 1
    for s in shape:
        n *= s
    return n


def pack(plan, max_bytes, itemsize=2):
    """Greedy packing in state-dict order, as HF's shard splitter does: start
    a new shard when the next tensor would push the current one past the
    limit (a tensor larger than the limit gets a shard of its own)."""
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


def make_tensor(name, shape, gen):
    t = torch.empty(shape, dtype=torch.bfloat16)
    if name.endswith("norm.weight"):
        # RMSNorm weights sit around 1; keep them distinct so tests can tell
        # layers and ranks apart.
        t.normal_(1.0, 0.05, generator=gen)
    else:
        t.normal_(0.0, 0.02, generator=gen)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="checkpoint directory to write")
    ap.add_argument("--shard-mb", type=float, default=500, help="target shard size in MB (1e6 bytes), default 500")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    g = ap.add_argument_group("shape overrides (default: Llama-3.2-1B)")
    g.add_argument("--layers", type=int, help="num_hidden_layers (16)")
    g.add_argument("--hidden", type=int, help="hidden_size (2048)")
    g.add_argument("--heads", type=int, help="num_attention_heads (32)")
    g.add_argument("--kv-heads", type=int, help="num_key_value_heads (8)")
    g.add_argument("--intermediate", type=int, help="intermediate_size (8192)")
    g.add_argument("--vocab", type=int, help="vocab_size (128256)")
    g.add_argument("--untied", action="store_true", help="tie_word_embeddings false (writes lm_head.weight)")
    args = ap.parse_args()

    cfg = json.loads(json.dumps(LLAMA_32_1B_CONFIG))
    for key, val in [
        ("num_hidden_layers", args.layers),
        ("hidden_size", args.hidden),
        ("num_attention_heads", args.heads),
        ("num_key_value_heads", args.kv_heads),
        ("intermediate_size", args.intermediate),
        ("vocab_size", args.vocab),
    ]:
        if val is not None:
            cfg[key] = val
    if args.untied:
        cfg["tie_word_embeddings"] = False
    if cfg["hidden_size"] % cfg["num_attention_heads"]:
        sys.exit("hidden_size must be a multiple of num_attention_heads")
    if cfg["num_attention_heads"] % cfg["num_key_value_heads"]:
        sys.exit("num_attention_heads must be a multiple of num_key_value_heads")
    cfg["head_dim"] = cfg["hidden_size"] // cfg["num_attention_heads"]

    out = args.out
    if os.path.exists(out):
        if not args.force:
            sys.exit(f"{out} exists (use --force to overwrite)")
        shutil.rmtree(out)
    tmp = out.rstrip("/") + ".partial"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)

    plan = tensor_plan(cfg)
    shards = pack(plan, int(args.shard_mb * 1e6))
    nshards = len(shards)
    gen = torch.Generator().manual_seed(args.seed)
    weight_map = {}
    total = 0
    t0 = time.time()
    for i, shard in enumerate(shards, 1):
        fname = f"model-{i:05d}-of-{nshards:05d}.safetensors"
        tensors = {}
        for name, shape in shard:
            tensors[name] = make_tensor(name, shape, gen)
            weight_map[name] = fname
            total += tensors[name].numel() * tensors[name].element_size()
        save_file(tensors, os.path.join(tmp, fname), metadata={"format": "pt"})
        os.chmod(os.path.join(tmp, fname), 0o644)  # as a download leaves them
        size = os.path.getsize(os.path.join(tmp, fname))
        del tensors
        print(f"  {fname}: {len(shard)} tensors, {size / 1e6:.1f} MB", flush=True)

    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
        f.write("\n")
    with open(os.path.join(tmp, "generation_config.json"), "w") as f:
        json.dump(GENERATION_CONFIG, f, indent=2)
        f.write("\n")
    os.rename(tmp, out)
    dt = time.time() - t0
    print(f"wrote {out}: {len(plan)} tensors, {nshards} shards, {total / 1e9:.3f} GB of weights in {dt:.1f} s")


if __name__ == "__main__":
    main()
