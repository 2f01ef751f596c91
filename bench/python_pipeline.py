#!/usr/bin/env python3
"""Baseline: the HyperPod tutorial's two-step pipeline, in plain Python.

Step 1 (the tutorial's save-llama3-70B-model.py):
    model = AutoModelForCausalLM.from_pretrained(SRC, dtype=...)
    torch.save(model.state_dict(), WORK/full_state.pt)
Step 2 (NxD's `convert_checkpoints.py --convert_from_full_state`):
    torch.load the full state dict, then for every tp rank, for every pp rank,
    build that rank's dict and torch.save it to
    OUT/model/dp_rank_00_tp_rank_{tt:02d}_pp_rank_{pp:02d}.pt

Step 2 re-implements the converter's behaviour as restated in
docs/formats/nxd-layout.md (class CheckpointConverterBase), including its
costs: each rank is built from the full tensors (K/V repeated, Q/O heads
reshuffled over the whole matrix) and every piece is cloned before saving, as
the converter does. Without torch_xla this writes plain torch.save files
(`--save_xser 0`). The tutorial's trn1 head order is the default.

    python bench/python_pipeline.py --src SRC --out OUT --work WORK \
        --tp_size 8 --pp_size 2 --kv_size_multiplier 1 --qkv_linear --fuse_qkv \
        --dtype bfloat16

Prints the time of each step and the bytes written.

A baseline stands for what a user would write, so it restates the layout on
purpose, in its own code; the project's one reference of the layout, which
the tests and bench/check_layout.py judge by, is tests/compat/reference.py.
"""
import argparse
import gc
import json
import os
import sys
import time

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


# --------------------------------------------------------------------------
# step 1: HF checkpoint -> one full state-dict .pt (the tutorial's script)
# --------------------------------------------------------------------------
def save_full_state(src, full_path, dtype):
    import transformers
    from transformers import AutoModelForCausalLM

    major = int(transformers.__version__.split(".")[0])
    kw = {"dtype": dtype} if major >= 5 else {"torch_dtype": dtype}
    model = AutoModelForCausalLM.from_pretrained(src, **kw)
    os.makedirs(os.path.dirname(os.path.abspath(full_path)), exist_ok=True)
    torch.save(model.state_dict(), full_path)
    del model
    gc.collect()


# --------------------------------------------------------------------------
# step 2: full state dict -> NxD rank files (convert_checkpoints.py)
# --------------------------------------------------------------------------
def layer_to_pp_rank(n_layers, pp_size, virtual_pp_size):
    """Layer index -> pipeline rank. S = P*Vp stages; each stage gets L // S
    layers and the last L % S stages one more; stage s lives on pp rank s % P."""
    stages = pp_size * virtual_pp_size
    if n_layers < stages:
        sys.exit(f"{n_layers} layers cannot be split over {stages} pipeline stages")
    base, extra = divmod(n_layers, stages)
    owner = []
    for s in range(stages):
        count = base + (1 if s >= stages - extra else 0)
        owner += [s % pp_size] * count
    assert len(owner) == n_layers
    return owner


QKV_LINEAR_NAMES = {
    "q_proj": "qkv_proj.weight_q",
    "k_proj": "qkv_proj.weight_k",
    "v_proj": "qkv_proj.weight_v",
}


def is_qkv(name):
    return any(t in name for t in ("q_proj", "k_proj", "v_proj", "qkv_proj"))


def cut(t, dim, tp_rank, tp_size, what):
    size = t.size(dim)
    if size % tp_size:
        sys.exit(f"{what}: dim {dim} of size {size} is not divisible by tp_size {tp_size}")
    k = size // tp_size
    return t.narrow(dim, tp_rank * k, k)


def shuffled_head_group(full_p, tp_rank, a, is_o):
    """Q rows (or O columns) for tp_rank under qkv_linear, as the converter
    computes it: split the heads into T groups of n = Hq/(Hkv*m) heads, reorder
    the groups so that group g = j*(T/Hkv) + i lands at rank r = i*Hkv + j,
    take rank r's group. The whole matrix is reshuffled for every rank, as in
    the converter. For O the matrix is transposed first and the result
    transposed back (so the saved O slice is column-major, as the converter's)."""
    hq, hkv, d, tp, m = a.q_heads, a.kv_heads, a.head_dim, a.tp_size, a.kv_size_multiplier
    w = full_p.transpose(0, 1) if is_o else full_p
    cols = w.size(-1)
    per_group = hq // (hkv * m)
    groups = w.reshape(hq, d, cols).reshape(-1, per_group, d, cols)  # [T, n, d, cols]
    if a.hw_backend == "trn1":
        stride = tp // hkv
        # one gather per i (the Hkv groups j*stride + i), concatenated: a full
        # copy per rank, as in the converter (and like it, torch.cat leaves the
        # result row-major, so O comes out column-major after transposing back)
        splits = [groups[torch.arange(hkv) * stride + i] for i in range(stride)]
        groups = torch.cat(splits, dim=0)
    else:  # trn2: heads keep their order
        groups = groups.contiguous()
    piece = groups[tp_rank].reshape(-1, cols)
    if is_o:
        piece = piece.transpose(0, 1)
    return piece.detach().clone()


def rank_state(full_state, a, tp_rank, pp_rank, owner):
    tp, pp = a.tp_size, a.pp_size
    out = {}
    for name, full_p in full_state.items():
        # ---- pipeline cut
        if "embed_tokens" in name and pp_rank != 0:
            continue
        if ("lm_head" in name or name == "model.norm.weight") and pp_rank != pp - 1:
            continue
        if name.startswith("model.layers."):
            if owner[int(name.split(".")[2])] != pp_rank:
                continue

        # ---- tensor cut
        if a.qkv_linear and (is_qkv(name) or "o_proj" in name):
            new = QKV_LINEAR_NAMES.get(name.rsplit(".", 2)[-2], None)
            new = name.rsplit(".", 2)[0] + "." + new if new else name
            if "q_proj" in name or "o_proj" in name:
                out[new] = shuffled_head_group(full_p, tp_rank, a, "o_proj" in name)
            else:  # k_proj / v_proj: tile m times on dim 0, then cut
                repeated = full_p.repeat(a.kv_size_multiplier, 1)
                out[new] = cut(repeated, 0, tp_rank, tp, name).detach().clone()
        elif "embed_tokens" in name or "lm_head" in name or is_qkv(name):
            out[name] = cut(full_p, 0, tp_rank, tp, name).detach().clone()
        elif "o_proj" in name or "down_proj" in name:
            out[name] = cut(full_p, 1, tp_rank, tp, name).detach().clone()
        elif "gate_proj" in name or "up_proj" in name:
            piece = cut(full_p, 0, tp_rank, tp, name).detach().clone()
            tok = "gate_proj" if "gate_proj" in name else "up_proj"
            key = name.replace(tok, "gate_up_proj")
            if key in out:  # the key keeps its first position (gate's)
                parts = [piece, out[key]] if tok == "gate_proj" else [out[key], piece]
                out[key] = torch.cat(parts, dim=0).detach().clone()
            else:
                out[key] = piece
        else:  # norms: whole tensor on every rank
            out[name] = full_p

    if a.fuse_qkv:
        for n in range(a.n_layers):
            p = f"model.layers.{n}.self_attn.qkv_proj."
            q = out.pop(p + "weight_q", None)
            k = out.pop(p + "weight_k", None)
            v = out.pop(p + "weight_v", None)
            if q is not None:
                out[p + "weight_qkv"] = torch.cat([q, k, v], dim=0).detach().clone()
    return out


def convert_from_full_state(full_path, config, a):
    a.q_heads = config["num_attention_heads"]
    a.kv_heads = config.get("num_key_value_heads", a.q_heads)
    a.head_dim = config["hidden_size"] // a.q_heads
    a.n_layers = config["num_hidden_layers"]
    if a.qkv_linear:
        if a.q_heads % a.tp_size:
            sys.exit(f"num_attention_heads {a.q_heads} is not divisible by tp_size {a.tp_size}")
        if a.kv_heads * a.kv_size_multiplier != a.tp_size:
            sys.exit(
                f"qkv_linear needs num_key_value_heads * kv_size_multiplier == tp_size "
                f"({a.kv_heads} * {a.kv_size_multiplier} != {a.tp_size}); the converter "
                f"crashes or drops heads otherwise"
            )

    full_state = torch.load(full_path)
    layer_ids = sorted({int(k.split(".")[2]) for k in full_state if k.startswith("model.layers.")})
    if layer_ids != list(range(a.n_layers)):
        sys.exit(f"state dict holds layers {layer_ids[:3]}..., config says {a.n_layers}")
    owner = layer_to_pp_rank(a.n_layers, a.pp_size, a.virtual_pp_size)

    model_dir = os.path.join(a.out, "model")
    os.makedirs(model_dir, exist_ok=True)
    for tp_rank in range(a.tp_size):
        for pp_rank in range(a.pp_size):
            part = rank_state(full_state, a, tp_rank, pp_rank, owner)
            fname = os.path.join(model_dir, f"dp_rank_00_tp_rank_{tp_rank:02d}_pp_rank_{pp_rank:02d}.pt")
            if not a.quiet:
                print(f"Saving to {fname}", flush=True)
            torch.save(part, fname)
            del part


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            total += os.path.getsize(os.path.join(root, f))
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="HF checkpoint directory (config.json + safetensors)")
    ap.add_argument("--out", required=True, help="output root; rank files go to OUT/model/")
    ap.add_argument("--work", default=None, help="directory for the full state dict .pt (default: OUT/..)")
    ap.add_argument("--keep_full", action="store_true", help="keep WORK/full_state.pt afterwards")
    ap.add_argument("--tp_size", type=int, default=1)
    ap.add_argument("--pp_size", type=int, default=1)
    ap.add_argument("--virtual_pp_size", type=int, default=1)
    ap.add_argument("--kv_size_multiplier", type=int, default=1)
    ap.add_argument("--qkv_linear", action="store_true")
    ap.add_argument("--fuse_qkv", action="store_true")
    ap.add_argument("--hw_backend", choices=["trn1", "trn2"], default="trn1",
                    help="trn2 keeps Q/O head order and, like the converter, tiles K/V")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--quiet", action="store_true", help="do not print one line per rank file")
    a = ap.parse_args()

    if a.fuse_qkv and not a.qkv_linear:
        sys.exit("--fuse_qkv has no effect without --qkv_linear (the converter ignores it); refusing")
    with open(os.path.join(a.src, "config.json")) as f:
        config = json.load(f)
    work = a.work or os.path.dirname(os.path.abspath(a.out.rstrip("/")))
    full_path = os.path.join(work, f"full_state_{a.dtype}.pt")
    if os.path.exists(os.path.join(a.out, "model")) and os.listdir(os.path.join(a.out, "model")):
        sys.exit(f"{a.out}/model is not empty")

    torch.set_grad_enabled(False)
    t0 = time.time()
    save_full_state(a.src, full_path, DTYPES[a.dtype])
    t1 = time.time()
    full_bytes = os.path.getsize(full_path)
    print(f"step 1 from_pretrained + torch.save(state_dict): {t1 - t0:.1f} s, "
          f"{full_path} {full_bytes / 1e9:.3f} GB", flush=True)
    convert_from_full_state(full_path, config, a)
    t2 = time.time()
    out_bytes = dir_bytes(a.out)
    print(f"step 2 convert_from_full_state: {t2 - t1:.1f} s, "
          f"{a.tp_size * a.pp_size} files, {out_bytes / 1e9:.3f} GB", flush=True)
    print(f"total {t2 - t0:.1f} s (full state {full_bytes} bytes, rank files {out_bytes} bytes)")
    if not a.keep_full:
        os.remove(full_path)


if __name__ == "__main__":
    main()
