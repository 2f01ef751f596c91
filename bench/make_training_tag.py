#!/usr/bin/env python3
"""Write an NxD training tag with ZeRO-1 optimizer state of a model's real
shapes and synthetic values, as NxD's `save_checkpoint` lays it out
(docs/formats/zero1.md): model/ (by `shardfs convert` of a Hugging Face checkpoint, in a
layout without --fuse-qkv, whose key order is the trainer's), optim/ with one
file per (dp, tp, pp), scheduler.pt, user_content.pt and the markers.

Per parameter, in NxD's Llama `named_parameters()` order split into NxD's
examples' two groups (no_decay = ["bias", "norm"]): a tensor `step`, random
`exp_avg` and `exp_avg_sq` (and with --master, the fp32 master weight) of the
rank file's piece, padded along dim 0 to a multiple of --dp and cut in --dp
shards. One optimizer file is in memory at a time.

    bench/make_training_tag.py --src bench-out/llama-3.2-1b --out bench-out/train-tag --layout "--tp-size 4" --dp 2
"""
import argparse
import os
import shlex
import shutil
import subprocess
import sys

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The numbering of tests/compat/optimizer_tags.py (NxD's Llama
# named_parameters() order, NxD's examples' two groups): one definition.
sys.path.insert(0, os.path.join(REPO, "tests", "compat"))
from optimizer_tags import optimizer_order  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--src", required=True, help="Hugging Face checkpoint")
    ap.add_argument("--out", required=True)
    ap.add_argument("--layout", default="--tp-size 4", help='layout flags of the tag (no --fuse-qkv); default "--tp-size 4"')
    ap.add_argument("--dp", type=int, default=2)
    ap.add_argument("--master", action="store_true", help="keep fp32 master weights (sharded_master_weights)")
    ap.add_argument("--shardfs", default=os.environ.get("SHARDFS_BIN", os.path.join(REPO, ".build/release/shardfs")))
    a = ap.parse_args()
    assert "--fuse-qkv" not in a.layout, "the trainer's key order puts weight_qkv first; convert writes it last"
    shutil.rmtree(a.out, ignore_errors=True)
    subprocess.run([a.shardfs, "convert", a.src, a.out, *shlex.split(a.layout)], check=True, stdout=subprocess.DEVNULL)
    shutil.rmtree(os.path.join(a.out, ".shardfs"), ignore_errors=True)
    os.makedirs(os.path.join(a.out, "optim"))
    g = torch.Generator().manual_seed(0)
    for name in sorted(os.listdir(os.path.join(a.out, "model"))):
        model = torch.load(os.path.join(a.out, "model", name), weights_only=True, mmap=True)
        keys, (decay, no_decay) = optimizer_order(model)
        groups = [{"lr": 3e-4, "betas": [0.9, 0.95], "eps": 1e-08, "weight_decay": wd, "amsgrad": False, "foreach": None,
                   "maximize": False, "capturable": False, "differentiable": False, "fused": None,
                   "decoupled_weight_decay": True, "params": list(range(first, first + n))}
                  for wd, first, n in ((0.01, 0, decay), (0.0, decay, no_decay))]
        for d in range(a.dp):
            def shard(t):
                rows = -(-t.shape[0] // a.dp)
                out = torch.zeros((rows, *t.shape[1:]), dtype=torch.float32)
                part = t[d * rows:(d + 1) * rows]
                out[:part.shape[0]] = part
                return out
            state = {}
            for i, k in enumerate(keys):
                shape = (-(-model[k].shape[0] // a.dp), *model[k].shape[1:])
                state[i] = {"step": torch.tensor(1000.0), "exp_avg": torch.randn(shape, generator=g) * 1e-3,
                            "exp_avg_sq": torch.rand(shape, generator=g) * 1e-6}
            sd = {"state": {}, "param_groups": groups, "base_state": state,
                  "shape_info": {i: list(model[k].shape) for i, k in enumerate(keys)}}
            if a.master:
                sd["sharded_master_weights"] = {i: shard(model[k].float()) for i, k in enumerate(keys)}
            torch.save(sd, os.path.join(a.out, "optim", name.replace("dp_rank_00", f"dp_rank_{d:02d}", 1)))
            print(f"optim/{name.replace('dp_rank_00', f'dp_rank_{d:02d}', 1)}", file=sys.stderr, flush=True)
    torch.save({"base_lrs": [3e-4, 3e-4], "last_epoch": 1000, "_step_count": 1001}, os.path.join(a.out, "scheduler.pt"))
    torch.save({"epoch": 1, "global_step": 1000}, os.path.join(a.out, "user_content.pt"))
    for marker in ("checkpoint", "done"):
        with open(os.path.join(a.out, marker), "w") as f:
            f.write("1")


if __name__ == "__main__":
    main()
