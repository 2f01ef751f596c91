#!/usr/bin/env python3
"""Baseline for `shardfs convert TAG OUT --format dcp`: the Python way from an
NxD training tag to the PyTorch Distributed Checkpoint folder TorchTitan
v0.2.2 saves (model in fp32 under TorchTitan's Llama3 names, AdamW's
flattened state, one param group, lr_scheduler, train_state).

What a user would write today, with plain torch: torch.load every model rank
file and every ZeRO-1 optimizer file (all in memory at once), merge each
parameter's DP shards (trimmed of ZeRO-1's dim-0 padding) and TP pieces into
full tensors, rename them to TorchTitan's names, permute the rows of wq / wk
(and of their exp_avg / exp_avg_sq) as TorchTitan's
`Llama3StateDictAdapter.from_hf` does, and `torch.distributed.checkpoint.save`
the nested state dict in one process.

Layouts of bench/make_training_tag.py's tags: any TP and PP without
--qkv-linear (q/k/v/gate/up/embed/lm_head cut on dim 0 by heads / rows,
gate_up as [gate_r; up_r], o/down on dim 1, norms replicated: rank 0's
copy). The parameter numbering (optimizer index -> key) comes from
tests/compat/optimizer_tags.py's one definition and the TP merge from
bench/python_optimizer_reshard.py, by import. The hyper-parameters follow
docs/formats/dcp.md ("ShardFS's choices"): lr, betas, eps, weight_decay of
param_groups[0], initial_lr the group's (else lr); lr_scheduler from a
LambdaLR's scheduler.pt, else from the step.

    python bench/python_dcp_export.py --tag TAG --config CONFIG.json --out OUT
    python bench/python_dcp_export.py --out OUT --check-against SHARDFS_DCP_DIR --no-export

`--check-against DIR` then loads OUT and DIR with `dcp.load` into one state
dict built from OUT's `.metadata` (plain tensors, one process) and asserts
that both hold the same keys, dtypes, shapes, every tensor bitwise equal and
every non-tensor value equal.
"""
import argparse
import json
import os
import pickle
import re
import sys
import time
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, TensorStorageMetadata

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "compat"))
from optimizer_tags import optimizer_order  # noqa: E402  (NxD's numbering: one definition)
from python_optimizer_reshard import merge  # noqa: E402  (the baseline's TP merge)

FILE = re.compile(r"dp_rank_(\d+)_tp_rank_(\d+)_pp_rank_(\d+)\.pt")
# TorchTitan's names of the Hugging Face / NxD Llama tensors (Llama3StateDictAdapter.from_hf_map).
LAYER_NAMES = {
    "self_attn.q_proj.weight": "attention.wq.weight", "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight", "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight", "mlp.down_proj.weight": "feed_forward.w2.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight", "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
TOP_NAMES = {"model.embed_tokens.weight": "tok_embeddings.weight", "model.norm.weight": "norm.weight",
             "lm_head.weight": "output.weight"}


def titan_name(key):
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
    return f"layers.{m[1]}.{LAYER_NAMES[m[2]]}" if m else TOP_NAMES[key]


def permute(w, heads):
    """Llama3StateDictAdapter.from_hf's q/k row order (TorchTitan's interleaved RoPE pairs)."""
    rows, dim = w.shape
    return w.view(heads, 2, rows // heads // 2, dim).transpose(1, 2).reshape(rows, dim)


def titan_order(layers):
    """TorchTitan's Llama3 Transformer.named_parameters() order."""
    names = ["tok_embeddings.weight"]
    for n in range(layers):
        names += [f"layers.{n}.{x}" for x in ("attention.wq.weight", "attention.wk.weight", "attention.wv.weight",
                                               "attention.wo.weight", "feed_forward.w1.weight", "feed_forward.w2.weight",
                                               "feed_forward.w3.weight", "attention_norm.weight", "ffn_norm.weight")]
    return names + ["norm.weight", "output.weight"]


def export(tag, cfg, out):
    t0 = time.time()
    ranks = {}
    for f in os.listdir(os.path.join(tag, "optim")):
        m = FILE.fullmatch(f)
        if m:
            ranks.setdefault((int(m[2]), int(m[3])), set()).add(int(m[1]))
    tp, pp = max(r[0] for r in ranks) + 1, max(r[1] for r in ranks) + 1
    dp = len(ranks[0, 0])
    # Load everything, as a user's script does.
    models, optims = {}, {}
    for t in range(tp):
        for p in range(pp):
            name = f"tp_rank_{t:02d}_pp_rank_{p:02d}.pt"
            models[t, p] = torch.load(os.path.join(tag, "model", f"dp_rank_00_{name}"), weights_only=True)
            optims[t, p] = [torch.load(os.path.join(tag, "optim", f"dp_rank_{d:02d}_{name}"), weights_only=True)
                            for d in range(dp)]
    t_load = time.time() - t0

    # Full Hugging Face-named tensors per kind.
    full = {"param": {}, "exp_avg": {}, "exp_avg_sq": {}}
    for p in range(pp):
        keys = list(models[0, p])
        if any("qkv_proj" in k for k in keys):
            sys.exit("python_dcp_export.py: layouts with --qkv-linear are not handled (bench/make_training_tag.py's default has none)")
        ordered, _ = optimizer_order(keys)
        master = "sharded_master_weights" in optims[0, p][0]
        for i, key in enumerate(ordered):
            for kind in ("exp_avg", "exp_avg_sq", "master"):
                if kind == "master" and not master:
                    continue
                pieces = []
                for t in range(tp):
                    rows = optims[t, p][0]["shape_info"][i][0]
                    shards = [o["sharded_master_weights"][i] if kind == "master" else o["base_state"][i][kind]
                              for o in optims[t, p]]
                    pieces.append(torch.cat(shards)[:rows])  # ZeRO-1: DP shards in order, padding cut
                full["param" if kind == "master" else kind][key] = merge(pieces, key)
            if not master:  # the trained weights widened (bf16 -> fp32 is exact)
                full["param"][key] = merge([models[t, p][key].float() for t in range(tp)], key)
    # gate_up -> gate, up; names; q/k permuted (weights and moments alike).
    heads = {"attention.wq.weight": cfg["num_attention_heads"],
             "attention.wk.weight": cfg.get("num_key_value_heads") or cfg["num_attention_heads"]}
    titan = {}
    for kind, tensors in full.items():
        named = {}
        for key, v in tensors.items():
            if key.endswith("mlp.gate_up_proj.weight"):
                gate, up = v.chunk(2)
                base = key[: -len("gate_up_proj.weight")]
                named[titan_name(base + "gate_proj.weight")] = gate.contiguous()
                named[titan_name(base + "up_proj.weight")] = up.contiguous()
                continue
            name = titan_name(key)
            if name.endswith(("attention.wq.weight", "attention.wk.weight")):
                v = permute(v, heads[name.split(".", 2)[2]])
            named[name] = v.contiguous()
        titan[kind] = named
    t_merge = time.time() - t0 - t_load

    # Hyper-parameters, scheduler, train state (docs/formats/dcp.md, "ShardFS's choices").
    o0 = optims[0, 0][0]
    step = o0["base_state"][0]["step"]
    step = int(step.item() if isinstance(step, torch.Tensor) else step)
    g = o0["param_groups"][0]
    lr = float(g["lr"])
    group = {"lr": lr, "betas": tuple(float(b) for b in g["betas"]), "eps": float(g["eps"]),
             "weight_decay": float(g["weight_decay"]), "amsgrad": False, "maximize": False, "foreach": None,
             "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": True,
             "initial_lr": float(g.get("initial_lr", lr))}
    sched_path = os.path.join(tag, "scheduler.pt")
    sched = torch.load(sched_path, weights_only=True) if os.path.exists(sched_path) else {}
    if all(k in sched for k in ("base_lrs", "_last_lr", "last_epoch", "_step_count")):  # a LambdaLR's, its first group
        base, last_lr, last_epoch, count = float(sched["base_lrs"][0]), float(sched["_last_lr"][0]), sched["last_epoch"], sched["_step_count"]
    else:
        base, last_lr, last_epoch, count = group["initial_lr"], lr, step, step + 1
    lr_scheduler = {"base_lrs": [base], "last_epoch": last_epoch, "_step_count": count, "_is_initial": False,
                    "_get_lr_called_within_step": False, "_last_lr": [last_lr]}

    order = titan_order(cfg["num_hidden_layers"])
    assert sorted(order) == sorted(titan["param"]), sorted(set(order) ^ set(titan["param"]))
    optimizer = {}
    for fqn in order:
        optimizer[f"state.{fqn}.step"] = torch.tensor(float(step), dtype=torch.float32)
        optimizer[f"state.{fqn}.exp_avg"] = titan["exp_avg"][fqn]
        optimizer[f"state.{fqn}.exp_avg_sq"] = titan["exp_avg_sq"][fqn]
    for fqn in order:
        for k, v in group.items():
            optimizer[f"param_groups.{fqn}.{k}"] = v
    sd = {"train_state": {"step": step, "ntokens_seen": 0}, "optimizer": optimizer, "lr_scheduler": lr_scheduler}
    sd.update((fqn, titan["param"][fqn]) for fqn in order)
    os.makedirs(out, exist_ok=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(sd, checkpoint_id=out)
    t_total = time.time() - t0
    print(f"load {t_load:.2f} s, merge {t_merge:.2f} s, save {t_total - t_load - t_merge:.2f} s, total {t_total:.2f} s")


def read_metadata(folder):
    with open(os.path.join(folder, ".metadata"), "rb") as f:
        return pickle.load(f)


def set_path(sd, path, value):
    for p in path[:-1]:
        sd = sd.setdefault(p, {})
    sd[path[-1]] = value


def get_path(sd, path):
    for p in path:
        sd = sd[p]
    return sd


def load_all(folder, md):
    """dcp.load of `folder` (one process) into a state dict built from `md`: {flat name: value}."""
    sd = {}
    for fqn, m in md.state_dict_metadata.items():
        path = (md.planner_data or {}).get(fqn, (fqn,))
        value = torch.zeros(tuple(m.size), dtype=m.properties.dtype) if isinstance(m, TensorStorageMetadata) else None
        set_path(sd, path, value)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(sd, checkpoint_id=folder)
    return {fqn: get_path(sd, (md.planner_data or {}).get(fqn, (fqn,))) for fqn in md.state_dict_metadata}


def check(mine, theirs):
    """Both folders loaded with dcp.load into the same state dict: every entry equal."""
    a, b = read_metadata(mine), read_metadata(theirs)
    ka, kb = set(a.state_dict_metadata), set(b.state_dict_metadata)
    assert ka == kb, f"keys differ: only in {mine}: {sorted(ka - kb)[:8]}, only in {theirs}: {sorted(kb - ka)[:8]}"
    for fqn, m in a.state_dict_metadata.items():
        n = b.state_dict_metadata[fqn]
        assert type(m) is type(n), f"{fqn}: {type(m).__name__} vs {type(n).__name__}"
        if isinstance(m, TensorStorageMetadata):
            assert m.size == n.size and m.properties.dtype == n.properties.dtype, \
                f"{fqn}: {m.properties.dtype} {tuple(m.size)} vs {n.properties.dtype} {tuple(n.size)}"
        assert a.planner_data.get(fqn) == b.planner_data.get(fqn), f"{fqn}: path {a.planner_data.get(fqn)} vs {b.planner_data.get(fqn)}"
    got_a = load_all(mine, a)
    tensors = values = nbytes = 0
    got_b = load_all(theirs, a)  # the same state dict (built from OUT's metadata) for both
    for fqn in sorted(got_a):
        x, y = got_a[fqn], got_b[fqn]
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and x.dtype == y.dtype and x.shape == y.shape, fqn
            assert torch.equal(x.reshape(-1).view(torch.uint8), y.reshape(-1).view(torch.uint8)), f"{fqn}: values differ"
            tensors += 1
            nbytes += x.numel() * x.element_size()
        else:
            assert type(x) is type(y) and x == y, f"{fqn}: {x!r} vs {y!r}"
            values += 1
    print(f"check: {mine} and {theirs} hold the same {tensors} tensors ({nbytes / 1e9:.2f} GB, bitwise) and {values} values")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tag", help="the NxD training tag")
    ap.add_argument("--config", help="the model's config.json")
    ap.add_argument("--out", required=True, help="the DCP folder to write (must not exist)")
    ap.add_argument("--check-against", metavar="DIR", help="then check OUT against the DCP folder DIR (e.g. shardfs's)")
    ap.add_argument("--no-export", action="store_true", help="only the check (OUT exists)")
    a = ap.parse_args()
    if not a.no_export:
        if not (a.tag and a.config):
            ap.error("--tag and --config are needed to export")
        with open(a.config) as f:
            export(a.tag, json.load(f), a.out)
    if a.check_against:
        check(a.out, a.check_against)


if __name__ == "__main__":
    main()
