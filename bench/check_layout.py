#!/usr/bin/env python3
"""Check NxD rank files against the HF source, tensor for tensor.

Independent of python_pipeline.py and of ShardFS: the expected content of
every rank file is the project's one reference of docs/formats/nxd-layout.md,
tests/compat/reference.py (`rank_state`, the same code the compatibility
tests judge ShardFS by), over the source's tensors loaded lazily. Checks, per
file: key order, dtype, shape and exact values; and that OUT/model holds
exactly the T*P rank files and OUT no `done`/`checkpoint` marker.

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

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "compat"))
from reference import Dims, Layout, rank_state  # noqa: E402  (the one reference)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Source:
    """The source's state dict, loaded a tensor at a time as `rank_state`
    asks for it (a tied model's lm_head is its embedding, as in
    `state_dict()`), the tensors of one pipeline stage kept until `clear`."""

    def __init__(self, src):
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

    def __getitem__(self, name):
        if name == "lm_head.weight" and name not in self.where:
            name = "model.embed_tokens.weight"  # tied
        if name not in self.cache:
            path = self.where[name]
            if path not in self.files:
                self.files[path] = safe_open(path, "pt")
            self.cache[name] = self.files[path].get_tensor(name)
        return self.cache[name]

    def clear(self):
        self.cache.clear()


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
    dims = Dims.from_config(cfg)
    layout = Layout(tp=T, pp=P, vpp=a.virtual_pp_size, kv_mult=a.kv_size_multiplier, qkv_linear=a.qkv_linear,
                    fuse_qkv=a.fuse_qkv, backend=a.hw_backend, dtype=a.dtype)
    src = Source(a.src)
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
            exp = list(rank_state(src, dims, layout, r, p).items())
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
        src.clear()
    dt = time.time() - t0
    if errors:
        print(f"FAIL ({len(errors)} problems):")
        for e in errors[:20]:
            print("  " + e)
        sys.exit(1)
    print(f"OK: {len(want)} rank files, {n_tensors} tensors match the spec exactly ({dt:.1f} s)")


if __name__ == "__main__":
    main()
