"""The reference resharder of an NxD training tag with ZeRO-1 optimizer state:
the expectation `shardfs convert TAG_A OUT --config ... <layout B> --dp-size N`
is compared with, value by value. Pure torch (plus tests/compat/reference.py,
the project's one statement of the NxD weight layout); no XLA.

    reshard(tag_a, out, cfg, layout_a, layout_b, dp_b, xser=None)

1. Read tag A (plain, or xser: a TensorReference per tensor, the tensors in
   FILE.tensors/tensor_<tid>.pt; a model file whose tensor files were not
   written - xser, master weights, avoid_saving_lower_precision_weights -
   gives its keys and .info.pt shapes only).
2. Per (tp, pp) rank of A: optimizer index i is the i-th name of the model
   file's keys under the examples' grouping (names without "bias"/"norm",
   then those), checked against shape_info[i] and param_groups; each kind of
   state (exp_avg, exp_avg_sq, master weight) of parameter i is the
   concatenation of the DP ranks' chunks, trimmed to shape_info[i][0].
3. Merge the TP/PP pieces of each kind to Hugging Face tensors (the inverse
   of reference.rank_state: each element from the first piece holding it, so
   TP rank 0's norm and the first copy of a replicated KV head, as NxD's
   converter does), cut them for layout B with reference.rank_state (in the
   trainer's key order), pad dim 0 with zeros to a multiple of DP_B and chunk.
4. Write tag B like NxD: optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt
   {'state': {}, 'param_groups': A's (params renumbered for B),
    'base_state': {i: {'step': A's step, 'exp_avg', 'exp_avg_sq'}},
    'shape_info': {i: [B's TP-local shape]}, 'sharded_master_weights': {i: ...}
    when A has them}; model/dp_rank_00_tp_rank_XX_pp_rank_ZZ.pt (A's model
   tensors, or A's master weights in the model files' dtypes when A's model
   files hold no tensor data); scheduler.pt and user_content.pt copied; the
   `checkpoint` and `done` markers.
"""

from __future__ import annotations

import copy
import re
import shutil
import sys
from collections import OrderedDict
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compat"))
from decay_groups import group_order, group_sizes  # noqa: E402
from reference import Dims, Layout, hf_shapes, rank_state  # noqa: E402
from trainer_files import tensor_reference_class  # noqa: E402

FILE = re.compile(r"dp_rank_(\d+)_tp_rank_(\d+)_pp_rank_(\d+)\.pt")


class Absent:
    """A model tensor whose data the tag does not hold (only .info.pt)."""

    def __init__(self, dtype, shape):
        self.dtype, self.shape = dtype, tuple(shape)


def trainer_state(sd, d: Dims, lay: Layout, tp: int, pp: int) -> "OrderedDict[str, torch.Tensor]":
    """rank_state in the trainer's order: a fused weight_qkv before its o_proj."""
    st = rank_state(sd, d, lay, tp, pp)
    out = OrderedDict()
    for k, v in st.items():
        if k.endswith("qkv_proj.weight_qkv"):
            continue
        qkv = k[: -len("o_proj.weight")] + "qkv_proj.weight_qkv"
        if k.endswith("self_attn.o_proj.weight") and qkv in st:
            out[qkv] = st[qkv]
        out[k] = v
    assert set(out) == set(st)
    return out


# ---------------------------------------------------------------------------
# files


def read(path: Path):
    """torch.load, with an xser file's references replaced by their tensors
    (or Absent when the tensor file was not written)."""
    ref_cls = tensor_reference_class()
    obj = torch.load(path, map_location="cpu", weights_only=False)
    info_path = Path(f"{path}.info.pt")
    info = torch.load(info_path, weights_only=False) if info_path.exists() else None
    folder = Path(f"{path}.tensors")

    def resolve(o):
        if isinstance(o, ref_cls):
            f = folder / f"tensor_{o.tid}.pt"
            if not f.exists():
                return Absent(info[o.tid]["dtype"], info[o.tid]["shape"])
            t = torch.load(f, map_location="cpu", weights_only=True)
            assert t.dtype == info[o.tid]["dtype"] and t.shape == info[o.tid]["shape"], (f, o.tid)
            return t
        if isinstance(o, dict):
            return {k: resolve(v) for k, v in o.items()}
        if isinstance(o, list):
            return [resolve(v) for v in o]
        return o

    return resolve(obj)


def write(obj, path: Path, xser: bool) -> None:
    """torch.save; xser as NxD's _xser_save_data: every tensor, in walk order,
    becomes TensorReference(tid), saved alone; .info.pt holds its dtype and
    shape."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not xser:
        torch.save(obj, path)
        return
    ref_cls = tensor_reference_class()
    tensors = []

    def walk(o):
        if isinstance(o, torch.Tensor):
            tensors.append(o)
            return ref_cls(len(tensors) - 1)
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items()}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    refs = walk(obj)
    folder = Path(f"{path}.tensors")
    folder.mkdir(exist_ok=True)
    for tid, t in enumerate(tensors):
        torch.save(t, folder / f"tensor_{tid}.pt")
    torch.save(refs, path)
    torch.save({tid: {"dtype": t.dtype, "shape": t.shape, "expert_model_parallel": False}
                for tid, t in enumerate(tensors)}, f"{path}.info.pt")


def name(kind: str, dp: int, tp: int, pp: int) -> str:
    return f"{kind}/dp_rank_{dp:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"


# ---------------------------------------------------------------------------
# Hugging Face tensors <-> rank pieces


def merge(pieces: dict, d: Dims, lay: Layout) -> "OrderedDict[str, torch.Tensor]":
    """{(tp, pp): {key: tensor}} -> Hugging Face tensors: each element from
    the first piece (TP rank 0 first) holding it, the holders found by
    pushing element numbers through reference.rank_state. Each tensor in its
    pieces' dtype (a bf16 run's norms float32); an Absent piece (no data)
    gives zeros of its dtype."""
    shapes = hf_shapes(d)
    numbers, ranges, out, off = {}, [], OrderedDict(), 0
    for k, shape in shapes.items():
        n = torch.Size(shape).numel()
        numbers[k] = torch.arange(off, off + n).reshape(shape)
        ranges.append((k, off, off + n))
        off += n
    flat = torch.zeros(off, dtype=torch.float64)  # every dtype here widens to it exactly
    dtypes: dict = {}
    filled = torch.zeros(off, dtype=torch.bool)
    for tp in range(lay.tp):
        for pp in range(lay.pp):
            held = trainer_state(numbers, d, lay, tp, pp)
            assert list(held) == list(pieces[(tp, pp)]), f"rank {tp},{pp}: keys differ from the layout's"
            for k, pos in held.items():
                v = pieces[(tp, pp)][k]
                assert tuple(v.shape) == tuple(pos.shape), (tp, pp, k, v.shape, pos.shape)
                pos = pos.reshape(-1)
                for name, lo, hi in ranges:  # the tensors the piece holds elements of
                    if bool(((pos >= lo) & (pos < hi)).any()):
                        assert dtypes.setdefault(name, v.dtype) == v.dtype, f"{name}: pieces of {dtypes[name]} and {v.dtype}"
                new = ~filled[pos]
                if not isinstance(v, Absent):
                    flat[pos[new]] = v.reshape(-1)[new].double()
                filled[pos] = True
    assert bool(filled.all()), "some Hugging Face element is in no piece"
    off = 0
    for k, shape in shapes.items():
        n = torch.Size(shape).numel()
        out[k] = flat[off : off + n].reshape(shape).to(dtypes[k])
        off += n
    return out


def chunks(t: torch.Tensor, dp: int) -> list:
    """ZeroRedundancyOptimizer._shard_tensor for every DP rank: pad dim 0 with
    zeros to a multiple of dp, cut into dp equal chunks (owned copies)."""
    if t.shape[0] % dp:
        t = F.pad(t, [0, 0] * (t.dim() - 1) + [0, dp - t.shape[0] % dp])
    return [c.clone() for c in t.chunk(dp)]


# ---------------------------------------------------------------------------
# the resharder


def _read_a(tag: Path, lay: Layout):
    """-> (dp_a, {(tp, pp): (model dict, [optim dicts by dp])})."""
    found = {}
    for f in (tag / "optim").iterdir():
        m = FILE.fullmatch(f.name)
        if m:
            found.setdefault((int(m[2]), int(m[3])), set()).add(int(m[1]))
    assert set(found) == {(t, p) for t in range(lay.tp) for p in range(lay.pp)}, sorted(found)
    dps = {len(v) for v in found.values()}
    assert len(dps) == 1 and all(v == set(range(len(v))) for v in found.values()), found
    dp_a = dps.pop()
    return dp_a, {r: (read(tag / name("model", 0, *r)), [read(tag / name("optim", dp, *r)) for dp in range(dp_a)])
                  for r in sorted(found)}


def reshard(tag_a: Path, out: Path, cfg: dict, lay_a: Layout, lay_b: Layout, dp_b: int,
            xser: Optional[bool] = None) -> None:
    d = Dims.from_config(cfg)
    tag_a, out = Path(tag_a), Path(out)
    if xser is None:
        xser = any(p.name.endswith(".tensors") for p in (tag_a / "optim").iterdir())
    # 1. tag A
    dp_a, ranks_a = _read_a(tag_a, lay_a)

    # 2. every kind of state of every A rank, whole along DP, by parameter name
    first_optim = ranks_a[(0, 0)][1][0]
    # the optimizer's state entries in A's order ('step', 'exp_avg', 'exp_avg_sq' for AdamW)
    entry_keys = list(first_optim["base_state"][0])
    kinds = [e for e in entry_keys if e != "step"]
    has_master = "sharded_master_weights" in first_optim
    if has_master:
        kinds.append("master")
    pieces = {kind: {} for kind in ("param", *kinds)}
    groups_a = [{k: v for k, v in g.items() if k != "params"} for g in first_optim["param_groups"]]
    step, absent = None, False
    for r, (model, optims) in ranks_a.items():
        keys = list(model)
        names = group_order(keys)
        o0 = optims[0]
        n0 = group_sizes(keys)[0]
        assert [g["params"] for g in o0["param_groups"]] == [list(range(n0)), list(range(n0, len(keys)))], r
        assert [{k: v for k, v in g.items() if k != "params"} for g in o0["param_groups"]] == groups_a, r
        assert sorted(o0["shape_info"]) == list(range(len(keys))), r
        assert o0["state"] == {}, r
        for p in ("param", *kinds):
            pieces[p][r] = OrderedDict()
        for i, k in enumerate(names):
            shape = list(model[k].shape)
            assert list(o0["shape_info"][i]) == shape, (r, i, k, o0["shape_info"][i], shape)
            for o in optims:
                s = o["base_state"][i]["step"]
                step = s if step is None else step
                assert type(s) is type(step) and bool(s == step), (r, i, s, step)
                assert list(o["base_state"][i]) == entry_keys, (r, i)
            for kind in kinds:
                parts = [o["sharded_master_weights"][i] if kind == "master" else o["base_state"][i][kind]
                         for o in optims]
                full = torch.cat(parts)[: shape[0]]
                assert list(full.shape) == shape, (r, k, kind, full.shape, shape)
                pieces[kind][r][k] = full
            pieces["param"][r][k] = model[k]
            absent = absent or isinstance(model[k], Absent)
        for p in ("param", *kinds):  # back to the model file's key order
            pieces[p][r] = OrderedDict((k, pieces[p][r][k]) for k in keys)

    # 3. Hugging Face tensors of every kind
    hf = {kind: merge(pieces[kind], d, lay_a) for kind in kinds}
    hf["param"] = merge(pieces["param"], d, lay_a)
    if absent:
        # each tensor in the dtype the model files name (their .info.pt)
        assert has_master, "model files hold no tensor data and there are no master weights"
        hf["param"] = OrderedDict((k, v.to(hf["param"][k].dtype)) for k, v in hf["master"].items())

    # 4. tag B
    for tp in range(lay_b.tp):
        for pp in range(lay_b.pp):
            cut = {kind: trainer_state(hf[kind], d, lay_b, tp, pp) for kind in ("param", *kinds)}
            keys = list(cut["param"])
            names = group_order(keys)
            n0 = group_sizes(keys)[0]
            shards = {kind: {k: chunks(cut[kind][k], dp_b) for k in keys} for kind in kinds}
            for dp in range(dp_b):
                groups = []
                for g, ids in zip(groups_a, (range(n0), range(n0, len(keys)))):
                    groups.append({**copy.deepcopy(g), "params": list(ids)})
                base = {}
                for i, k in enumerate(names):
                    entry = {}
                    for e in entry_keys:
                        entry[e] = (step.clone() if isinstance(step, torch.Tensor) else step) if e == "step" \
                            else shards[e][k][dp]
                    base[i] = entry
                optim = {"state": {}, "param_groups": groups, "base_state": base,
                         "shape_info": {i: list(cut["param"][k].shape) for i, k in enumerate(names)}}
                if has_master:
                    optim["sharded_master_weights"] = {i: shards["master"][k][dp] for i, k in enumerate(names)}
                write(optim, out / name("optim", dp, tp, pp), xser)
            write(dict(cut["param"]), out / name("model", 0, tp, pp), xser)
    for f in ("scheduler.pt", "user_content.pt"):
        if (tag_a / f).exists():
            shutil.copyfile(tag_a / f, out / f)
    (out / "checkpoint").write_text("1")
    (out / "done").write_text("1")
