#!/usr/bin/env python3
"""Check NxD rank files against the HF source, tensor for tensor.

Independent of python_pipeline.py: the expected content of every rank file is
computed straight from the source safetensors with the formulas of
../shared/spec/nxd-layout.md (head group g = j*(T/Hkv) + i for rank
r = i*Hkv + j on trn1, K/V tiled m times, gate_up = [gate; up], fused
weight_qkv appended after lm_head, ...). Checks, per file: key order, dtype,
shape and exact values; and that OUT/model holds exactly the T*P rank files and
OUT no `done`/`checkpoint` marker.

    python bench/check_layout.py --src SRC --out OUT --tp_size 8 --pp_size 2 \
        --kv_size_multiplier 1 --qkv_linear --fuse_qkv --dtype bfloat16

trn2 is checked as ShardFS defines it (K/V heads repeated in place,
repeat_interleave), which differs from the NxD converter when m > 1.
"""
import argparse
import json
import os
import sys
import time

import torch
from safetensors import safe_open

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Source:
    def __init__(self, src, dtype):
        self.dtype = dtype
        idx = os.path.join(src, "model.safetensors.index.json")
        if os.path.exists(idx):
            with open(idx) as f:
                wm = json.load(f)["weight_map"]
        else:
            with safe_open(os.path.join(src, "model.safetensors"), "pt") as f:
                wm = {k: "model.safetensors" for k in f.keys()}
        self.where = {k: os.path.join(src, v) for k, v in wm.items()}
        self.files = {}
        self.cache = {}

    def get(self, name):
        if name == "lm_head.weight" and name not in self.where:
            name = "model.embed_tokens.weight"  # tied
        if name not in self.cache:
            path = self.where[name]
            if path not in self.files:
                self.files[path] = safe_open(path, "pt")
            self.cache[name] = self.files[path].get_tensor(name).to(self.dtype)
        return self.cache[name]

    def drop_layer(self, n):
        for k in [k for k in self.cache if k.startswith(f"model.layers.{n}.")]:
            del self.cache[k]


def split(t, dim, r, T):
    k = t.size(dim) // T
    assert t.size(dim) % T == 0
    return t.narrow(dim, r * k, k)


def expected_rank(src, cfg, a, r, p, owner):
    L = cfg["num_hidden_layers"]
    Hq = cfg["num_attention_heads"]
    Hkv = cfg.get("num_key_value_heads", Hq)
    d = cfg["hidden_size"] // Hq
    T, m = a.tp_size, a.kv_size_multiplier
    exp = []
    if p == 0:
        exp.append(("model.embed_tokens.weight", split(src.get("model.embed_tokens.weight"), 0, r, T)))
    fused = []
    for n in range(L):
        if owner[n] != p:
            continue
        pre = f"model.layers.{n}."
        q = src.get(pre + "self_attn.q_proj.weight")
        k = src.get(pre + "self_attn.k_proj.weight")
        v = src.get(pre + "self_attn.v_proj.weight")
        o = src.get(pre + "self_attn.o_proj.weight")
        if a.qkv_linear:
            nh = Hq // T
            if a.hw_backend == "trn1":
                i, j = divmod(r, Hkv)
                g = j * (T // Hkv) + i
                kk, vv = k.repeat(m, 1), v.repeat(m, 1)
            else:
                g = r
                kk = k.reshape(Hkv, d, -1).repeat_interleave(m, dim=0).reshape(Hkv * m * d, -1)
                vv = v.reshape(Hkv, d, -1).repeat_interleave(m, dim=0).reshape(Hkv * m * d, -1)
            rows = slice(g * nh * d, (g + 1) * nh * d)
            qr, kr, vr = q[rows], split(kk, 0, r, T), split(vv, 0, r, T)
            a_ = pre + "self_attn.qkv_proj."
            if a.fuse_qkv:
                fused.append((a_ + "weight_qkv", torch.cat([qr, kr, vr], 0)))
            else:
                exp += [(a_ + "weight_q", qr), (a_ + "weight_k", kr), (a_ + "weight_v", vr)]
            exp.append((pre + "self_attn.o_proj.weight", o[:, rows]))
        else:
            exp += [
                (pre + "self_attn.q_proj.weight", split(q, 0, r, T)),
                (pre + "self_attn.k_proj.weight", split(k, 0, r, T)),
                (pre + "self_attn.v_proj.weight", split(v, 0, r, T)),
                (pre + "self_attn.o_proj.weight", split(o, 1, r, T)),
            ]
        gate = split(src.get(pre + "mlp.gate_proj.weight"), 0, r, T)
        up = split(src.get(pre + "mlp.up_proj.weight"), 0, r, T)
        exp.append((pre + "mlp.gate_up_proj.weight", torch.cat([gate, up], 0)))
        exp.append((pre + "mlp.down_proj.weight", split(src.get(pre + "mlp.down_proj.weight"), 1, r, T)))
        exp.append((pre + "input_layernorm.weight", src.get(pre + "input_layernorm.weight")))
        exp.append((pre + "post_attention_layernorm.weight", src.get(pre + "post_attention_layernorm.weight")))
    if p == a.pp_size - 1:
        exp.append(("model.norm.weight", src.get("model.norm.weight")))
        exp.append(("lm_head.weight", split(src.get("lm_head.weight"), 0, r, T)))
    return exp + fused


def owners(L, P, Vp):
    S = P * Vp
    base, extra = divmod(L, S)
    out = []
    for s in range(S):
        out += [s % P] * (base + (1 if s >= S - extra else 0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True)
    ap.add_argument("--out", required=True, help="root holding model/")
    ap.add_argument("--tp_size", type=int, default=1)
    ap.add_argument("--pp_size", type=int, default=1)
    ap.add_argument("--virtual_pp_size", type=int, default=1)
    ap.add_argument("--kv_size_multiplier", type=int, default=1)
    ap.add_argument("--qkv_linear", action="store_true")
    ap.add_argument("--fuse_qkv", action="store_true")
    ap.add_argument("--hw_backend", choices=["trn1", "trn2"], default="trn1")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    ap.add_argument("--show", action="store_true", help="print every key and shape of the first and last file")
    a = ap.parse_args()

    t0 = time.time()
    with open(os.path.join(a.src, "config.json")) as f:
        cfg = json.load(f)
    T, P = a.tp_size, a.pp_size
    owner = owners(cfg["num_hidden_layers"], P, a.virtual_pp_size)
    src = Source(a.src, DTYPES[a.dtype])
    model_dir = os.path.join(a.out, "model")
    want = {f"dp_rank_00_tp_rank_{r:02d}_pp_rank_{p:02d}.pt" for r in range(T) for p in range(P)}
    have = set(os.listdir(model_dir))
    errors = []
    if have != want:
        errors.append(f"model/ holds {sorted(have - want)[:5]} extra, {sorted(want - have)[:5]} missing")
    for marker in ("done", "checkpoint"):
        if os.path.exists(os.path.join(a.out, marker)):
            errors.append(f"{a.out}/{marker} must not exist")

    n_tensors = 0
    for p in range(P):  # pp-major so that one stage's source layers stay cached
        for r in range(T):
            fname = f"dp_rank_00_tp_rank_{r:02d}_pp_rank_{p:02d}.pt"
            path = os.path.join(model_dir, fname)
            if not os.path.exists(path):
                continue
            got = torch.load(path, weights_only=True, mmap=True)
            exp = expected_rank(src, cfg, a, r, p, owner)
            if not isinstance(got, dict):
                errors.append(f"{fname}: holds a {type(got).__name__}, not a dict")
                continue
            if list(got.keys()) != [k for k, _ in exp]:
                gk, ek = list(got.keys()), [k for k, _ in exp]
                first = next((i for i, (x, y) in enumerate(zip(gk, ek)) if x != y), min(len(gk), len(ek)))
                errors.append(f"{fname}: key order differs at #{first}: got {gk[first:first + 2]}, "
                              f"expected {ek[first:first + 2]} ({len(gk)} vs {len(ek)} keys)")
            for name, e in exp:
                g = got.get(name)
                if g is None:
                    continue
                n_tensors += 1
                if g.dtype != e.dtype or tuple(g.shape) != tuple(e.shape):
                    errors.append(f"{fname}: {name} is {g.dtype} {list(g.shape)}, expected {e.dtype} {list(e.shape)}")
                elif not torch.equal(g, e):
                    errors.append(f"{fname}: {name} values differ")
            if a.show and (r, p) in ((0, 0), (T - 1, P - 1)):
                print(f"--- {fname}")
                for k, t in got.items():
                    print(f"  {k} {list(t.shape)} {str(t.dtype).replace('torch.', '')}"
                          f"{'' if t.is_contiguous() else ' (non-contiguous)'}")
            del got
            if len(errors) > 20:
                break
        src.cache.clear()
    dt = time.time() - t0
    if errors:
        print(f"FAIL ({len(errors)} problems):")
        for e in errors[:20]:
            print("  " + e)
        sys.exit(1)
    print(f"OK: {len(want)} rank files, {n_tensors} tensors match the spec exactly ({dt:.1f} s)")


if __name__ == "__main__":
    main()
