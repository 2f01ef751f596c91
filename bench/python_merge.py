#!/usr/bin/env python3
"""Baseline for `shardfs convert TAG OUT --format hf`: the Python way back
from NxD rank files to a Hugging Face checkpoint.

torch.load every rank file (all in memory at once, as NxD's
`convert_checkpoints.py --convert_to_full_state` does), merge them into the
full state dict by inverting docs/formats/nxd-layout.md (Q/O head order, fused qkv split by
the real per-rank sizes, K/V of each replica set the first copy, gate_up
split, row- and column-parallel concatenation), then write it with
`safetensors.torch.save_file(..., metadata={"format": "pt"})` as
`OUT/model.safetensors` and copy config.json.

    python bench/python_merge.py --tag TAG --config SRC/config.json --out OUT \
        --tp_size 8 --pp_size 2 --kv_size_multiplier 1 --qkv_linear --fuse_qkv [--hw_backend trn1]

A baseline stands for what a user would write, so it restates the layout on
purpose, in its own code; the project's one reference of the layout is
tests/compat/reference.py.
"""
import argparse
import json
import os
import re
import shutil
import time

import torch
from safetensors.torch import save_file


def first_query_head(r, T, Hq, Hkv, backend):
    n = Hq // T
    if backend == "trn1":
        return ((r % Hkv) * (T // Hkv) + r // Hkv) * n
    return r * n


def kv_source_rows(r, rows_per_rank, kv_rows, d, m, backend):
    out = []
    for x in range(r * rows_per_rank, (r + 1) * rows_per_rank):
        out.append(x % kv_rows if backend == "trn1" else (x // d // m) * d + x % d)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tp_size", type=int, default=1)
    ap.add_argument("--pp_size", type=int, default=1)
    ap.add_argument("--kv_size_multiplier", type=int, default=1)
    ap.add_argument("--qkv_linear", action="store_true")
    ap.add_argument("--fuse_qkv", action="store_true")
    ap.add_argument("--hw_backend", default="trn1")
    a = ap.parse_args()
    cfg = json.load(open(a.config))
    T, P, m = a.tp_size, a.pp_size, a.kv_size_multiplier
    h, Hq = cfg["hidden_size"], cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads") or Hq
    d = cfg.get("head_dim") or h // Hq
    L = cfg["num_hidden_layers"]
    tied = cfg.get("tie_word_embeddings", False)

    t0 = time.time()
    ranks = {}
    for tp in range(T):
        for pp in range(P):
            path = os.path.join(a.tag, "model", f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt")
            ranks[tp, pp] = torch.load(path, weights_only=True)
    t_load = time.time() - t0

    def pieces(key):
        """The tensor `key` from each tp rank, of whichever pp rank holds it."""
        for pp in range(P):
            if key in ranks[0, pp]:
                return [ranks[tp, pp][key] for tp in range(T)]
        raise KeyError(key)

    out = {}
    out["model.embed_tokens.weight"] = torch.cat(pieces("model.embed_tokens.weight"), 0)
    n = Hq // T
    for layer in range(L):
        p = f"model.layers.{layer}."
        if a.qkv_linear:
            if a.fuse_qkv:
                fused = pieces(p + "self_attn.qkv_proj.weight_qkv")
                c = (fused[0].shape[0] - n * d) // 2
                qs = [f[: n * d] for f in fused]
                ks = [f[n * d: n * d + c] for f in fused]
                vs = [f[n * d + c:] for f in fused]
            else:
                qs, ks, vs = (pieces(p + "self_attn.qkv_proj.weight_" + x) for x in "qkv")
            q = torch.empty(Hq * d, h, dtype=qs[0].dtype)
            o_pieces = pieces(p + "self_attn.o_proj.weight")
            o = torch.empty(h, Hq * d, dtype=o_pieces[0].dtype)
            k = torch.empty(Hkv * d, h, dtype=ks[0].dtype)
            v = torch.empty(Hkv * d, h, dtype=vs[0].dtype)
            seen = set()
            for r in range(T):
                g = first_query_head(r, T, Hq, Hkv, a.hw_backend)
                q[g * d:(g + n) * d] = qs[r]
                o[:, g * d:(g + n) * d] = o_pieces[r]
                rows = kv_source_rows(r, ks[r].shape[0], Hkv * d, d, m, a.hw_backend)
                for i, row in enumerate(rows):
                    if row not in seen:  # of each replica set, the first copy
                        seen.add(row)
                        k[row] = ks[r][i]
                        v[row] = vs[r][i]
            out[p + "self_attn.q_proj.weight"], out[p + "self_attn.k_proj.weight"] = q, k
            out[p + "self_attn.v_proj.weight"], out[p + "self_attn.o_proj.weight"] = v, o
        else:
            for x in "qkv":
                out[p + f"self_attn.{x}_proj.weight"] = torch.cat(pieces(p + f"self_attn.{x}_proj.weight"), 0)
            out[p + "self_attn.o_proj.weight"] = torch.cat(pieces(p + "self_attn.o_proj.weight"), 1)
        gate_up = pieces(p + "mlp.gate_up_proj.weight")
        half = gate_up[0].shape[0] // 2
        out[p + "mlp.gate_proj.weight"] = torch.cat([g[:half] for g in gate_up], 0)
        out[p + "mlp.up_proj.weight"] = torch.cat([g[half:] for g in gate_up], 0)
        out[p + "mlp.down_proj.weight"] = torch.cat(pieces(p + "mlp.down_proj.weight"), 1)
        out[p + "input_layernorm.weight"] = pieces(p + "input_layernorm.weight")[0]
        out[p + "post_attention_layernorm.weight"] = pieces(p + "post_attention_layernorm.weight")[0]
    out["model.norm.weight"] = pieces("model.norm.weight")[0]
    if not tied:
        out["lm_head.weight"] = torch.cat(pieces("lm_head.weight"), 0)
    out = {k: v.contiguous() for k, v in out.items()}
    t_merge = time.time() - t0 - t_load

    os.makedirs(a.out, exist_ok=True)
    save_file(out, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(a.config, os.path.join(a.out, "config.json"))
    t_total = time.time() - t0
    print(f"load {t_load:.2f} s, merge {t_merge:.2f} s, save {t_total - t_load - t_merge:.2f} s, total {t_total:.2f} s")


if __name__ == "__main__":
    main()
