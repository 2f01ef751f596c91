#!/usr/bin/env python3
"""Baseline for `shardfs convert TAG OUT` of a training tag's ZeRO-1
optimizer state: what a user would write today. NxD's
`convert_zero_checkpoints.py` changes only the DP size, so: torch.load every
rank's optimizer file (all in memory), merge each parameter's DP shards and
TP pieces into full tensors, cut them again for the new TP, PP and DP, and
torch.save every new file.

Layouts without --qkv-linear only (q/k/v/gate/up/embed/lm_head cut on
dim 0, gate_up as [gate_r; up_r], o/down on dim 1, norms replicated: rank
0's copy); parameters numbered in NxD's Llama `named_parameters()` order in
NxD's examples' two groups (optimizer_tags.py's definition). A baseline restates the layout on purpose, in
its own code; the project's one reference is tests/compat/reference.py.

    python bench/python_optimizer_reshard.py --tag TAG --out OUT --layers 16 \
        --tp 4 --pp 1 --dp 2 --new-tp 2 --new-pp 2 --new-dp 4
"""
import argparse
import os
import sys

import torch

# The parameter numbering (NxD's Llama named_parameters() order, NxD's
# examples' two groups) has one definition, tests/compat/optimizer_tags.py,
# as for bench/make_training_tag.py; the cutting below is the baseline's own.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "compat"))
from optimizer_tags import optimizer_order  # noqa: E402

# A layer's keys in a rank file without --qkv-linear.
POSITION = {"self_attn.q_proj.weight": 0, "self_attn.k_proj.weight": 1, "self_attn.v_proj.weight": 2,
            "self_attn.o_proj.weight": 3, "mlp.gate_up_proj.weight": 4, "mlp.down_proj.weight": 5,
            "input_layernorm.weight": 6, "post_attention_layernorm.weight": 7}
ROWS = ("embed_tokens", "lm_head", "q_proj", "k_proj", "v_proj")
COLUMNS = ("o_proj", "down_proj")


def numbered(keys):
    """(keys by optimizer index, size of the decay group)."""
    ordered, (decay, _) = optimizer_order(keys)
    return ordered, decay


def stage_layers(layers, pp):
    base, extra = divmod(layers, pp)
    out, start = [], 0
    for s in range(pp):
        n = base + (1 if s >= pp - extra else 0)
        out.append(list(range(start, start + n)))
        start += n
    return out


def keys_of(layers, pp_rank, pp):
    keys = ["model.embed_tokens.weight"] if pp_rank == 0 else []
    for n in stage_layers(layers, pp)[pp_rank]:
        keys += [f"model.layers.{n}.{k}" for k in POSITION]
    if pp_rank == pp - 1:
        keys += ["model.norm.weight", "lm_head.weight"]
    return keys


def merge(pieces, key):
    """TP pieces (tp order) -> the full tensor."""
    if "norm" in key:
        return pieces[0]
    if "gate_up" in key:
        halves = [p.chunk(2) for p in pieces]
        return torch.cat([h[0] for h in halves] + [h[1] for h in halves])
    return torch.cat(pieces, dim=1 if any(c in key for c in COLUMNS) else 0)


def cut(full, key, r, tp):
    if "norm" in key:
        return full
    if "gate_up" in key:
        gate, up = full.chunk(2)
        return torch.cat([gate.chunk(tp)[r], up.chunk(tp)[r]])
    return full.chunk(tp, dim=1 if any(c in key for c in COLUMNS) else 0)[r].contiguous()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tag", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, required=True)
    for name in ("tp", "pp", "dp", "new-tp", "new-pp", "new-dp"):
        ap.add_argument("--" + name, type=int, required=True)
    a = ap.parse_args()
    # Load everything, as a user's script does.
    files = {}
    for tp in range(a.tp):
        for pp in range(a.pp):
            for dp in range(a.dp):
                files[tp, pp, dp] = torch.load(os.path.join(a.tag, "optim", f"dp_rank_{dp:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"),
                                               weights_only=True)
    first = files[0, 0, 0]
    # Full tensors per (key, kind).
    full = {}
    for pp in range(a.pp):
        keys, _ = numbered(keys_of(a.layers, pp, a.pp))
        for i, key in enumerate(keys):
            for kind in ("exp_avg", "exp_avg_sq", "master"):
                pieces = []
                for tp in range(a.tp):
                    rows = files[tp, pp, 0]["shape_info"][i][0]
                    if kind == "master":
                        if "sharded_master_weights" not in first:
                            break
                        shards = [files[tp, pp, dp]["sharded_master_weights"][i] for dp in range(a.dp)]
                    else:
                        shards = [files[tp, pp, dp]["base_state"][i][kind] for dp in range(a.dp)]
                    pieces.append(torch.cat(shards)[:rows])
                if pieces:
                    full[key, kind] = merge(pieces, key)
    step = first["base_state"][0]["step"]
    os.makedirs(os.path.join(a.out, "optim"), exist_ok=True)
    for tp in range(a.new_tp):
        for pp in range(a.new_pp):
            keys, decay = numbered(keys_of(a.layers, pp, a.new_pp))
            groups = [dict(first["param_groups"][0], params=list(range(decay))),
                      dict(first["param_groups"][1], params=list(range(decay, len(keys))))]
            for dp in range(a.new_dp):
                def shard(t):
                    t = cut(t, key, tp, a.new_tp)
                    pad = (-t.shape[0]) % a.new_dp
                    if pad:
                        t = torch.nn.functional.pad(t, [0, 0] * (t.dim() - 1) + [0, pad])
                    return t.chunk(a.new_dp)[dp].clone()
                state, shapes, masters = {}, {}, {}
                for i, key in enumerate(keys):
                    state[i] = {"step": step.clone(), "exp_avg": shard(full[key, "exp_avg"]),
                                "exp_avg_sq": shard(full[key, "exp_avg_sq"])}
                    shapes[i] = list(cut(full[key, "exp_avg"], key, tp, a.new_tp).shape)
                    if (key, "master") in full:
                        masters[i] = shard(full[key, "master"])
                sd = {"state": {}, "param_groups": groups, "base_state": state, "shape_info": shapes}
                if masters:
                    sd["sharded_master_weights"] = masters
                torch.save(sd, os.path.join(a.out, "optim", f"dp_rank_{dp:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"))


if __name__ == "__main__":
    main()
