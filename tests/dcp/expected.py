"""What a DCP folder made from an NxD training tag must hold: TorchTitan
v0.2.2's full checkpoint of its Llama3 model with AdamW, computed from the
tag with plain torch, independently of ShardFS.

    expect(tag, cfg, layout) -> Expected

1. Every model rank file and optimizer file of the tag is read (plain
   torch.save files, or NxD's xser layout through tests/compat's
   `optimizer_tags.load`; an xser model file whose tensor files were not
   written - master weights kept, `avoid_saving_lower_precision_weights` -
   gives its keys and `.info.pt` shapes only).
2. Per (tp, pp) rank, optimizer index i names the i-th parameter of the
   model file's keys under NxD's examples' grouping (names without "bias" or
   "norm" first, then those), checked against `param_groups` and
   `shape_info`; each kind of state (exp_avg, exp_avg_sq, master weight) of
   a parameter is the concatenation of the DP ranks' ZeRO-1 chunks, trimmed
   to the rank's dim 0.
3. The rank pieces of each kind are put back into Hugging Face tensors by
   pushing element numbers through tests/compat's `reference.rank_state`
   (the project's one statement of the NxD cuts): every element of every
   piece says which Hugging Face element it holds. Copies of one element
   (norms on every TP rank, KV heads replicated by a KV multiplier) must be
   bit-identical in the tag, else the expectation is undefined and this
   raises.
4. Parameters: the fp32 master weights where the tag has them
   (`sharded_master_weights`), else the model weights widened to float32
   (exact). Hugging Face names become TorchTitan's with TorchTitan's own
   `Llama3StateDictAdapter.from_hf` when TORCHTITAN_SRC is set (applied to
   exp_avg and exp_avg_sq too: q/k rows are permuted element for element as
   the weights are), else with `restated_from_hf` below, which
   test_harness.py checks against the adapter whenever it is available.
5. The rest of the folder (the contract, see README.md): `step` (every
   parameter's, one 0-dim float32 tensor of NxD's step); one AdamW param
   group (TorchTitan has one) whose lr, betas (a tuple), eps come from the
   tag's groups (which must agree on them), weight_decay from the decay
   group, every other AdamW key from the tag's group when it has it, else
   torch.optim.AdamW's default, and initial_lr from the group, else the
   scheduler's base_lrs[0], else lr; lr_scheduler from the tag's
   scheduler.pt, its per-group lists cut to the decay group's entry;
   train_state step = int(NxD's step), ntokens_seen = 0 (NxD does not
   record it).
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent / "compat", HERE.parent / "zero1"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import titan  # noqa: E402
from decay_groups import group_order, group_sizes  # noqa: E402
from optimizer_tags import load as load_file  # noqa: E402
import reference  # noqa: E402
from reference import Dims, Layout, rank_state  # noqa: E402
from trainer_files import tensor_reference_class  # noqa: E402

FILE = re.compile(r"dp_rank_(\d+)_tp_rank_(\d+)_pp_rank_(\d+)\.pt")
KINDS = ("exp_avg", "exp_avg_sq")
# TorchTitan's names of the Hugging Face Llama's tensors (Llama3StateDictAdapter.from_hf_map).
TITAN_NAMES = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "self_attn.q_proj.weight": "attention.wq.weight",
    "self_attn.k_proj.weight": "attention.wk.weight",
    "self_attn.v_proj.weight": "attention.wv.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
}
SCHEDULER_KEYS = ("base_lrs", "last_epoch", "_step_count", "_is_initial", "_get_lr_called_within_step", "_last_lr")
SCHEDULER_DEFAULTS = {"_is_initial": False, "_get_lr_called_within_step": False}


class TagError(ValueError):
    """The tag does not define one TorchTitan state (the test's input is wrong)."""


@dataclass(frozen=True)
class Absent:
    """A model tensor whose data the tag does not hold (xser, only .info.pt)."""
    dtype: torch.dtype
    shape: tuple


# ---------------------------------------------------------------------------
# shapes and names


def hf_shapes(d: Dims) -> "OrderedDict[str, tuple]":
    """The Hugging Face Llama's tensors and shapes, in its state_dict order
    (tests/compat's reference.py's one statement of them)."""
    if d.tied:
        raise TagError("tied embeddings: TorchTitan's Llama3 has a separate `output`")
    return reference.hf_shapes(d)


def titan_model_args(cfg: dict) -> dict:
    """TorchTitan TransformerModelArgs keywords for a Hugging Face Llama
    config. TorchTitan sizes the MLP as multiple_of * ceil(int(m * int(2 *
    4 * dim / 3)) / multiple_of); multiple_of = intermediate_size and m =
    intermediate_size / int(8 * dim / 3) make that exactly
    intermediate_size."""
    d = Dims.from_config(cfg)
    if d.head_dim * d.Hq != d.h:
        raise TagError(f"head_dim {d.head_dim} * heads {d.Hq} != hidden {d.h}: TorchTitan's head_dim is dim // n_heads")
    base = int(2 * (4 * d.h) / 3)
    args = dict(dim=d.h, n_layers=d.L, n_heads=d.Hq, n_kv_heads=d.Hkv, vocab_size=d.V, multiple_of=d.I,
                ffn_dim_multiplier=d.I / base, norm_eps=float(cfg.get("rms_norm_eps", 1e-5)),
                rope_theta=float(cfg.get("rope_theta", (cfg.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
                max_seq_len=int(cfg.get("max_position_embeddings", 2048)))
    hidden = int(args["ffn_dim_multiplier"] * base)
    assert args["multiple_of"] * ((hidden + d.I - 1) // d.I) == d.I, "TorchTitan's MLP size would differ"
    return args


def restated_from_hf(hf: dict, cfg: dict) -> "OrderedDict[str, torch.Tensor]":
    """Llama3StateDictAdapter.from_hf restated: the names, and q_proj / k_proj
    rows in TorchTitan's rotary order (_reverse_permute: per head, the rows
    0, 2, 4, ... then 1, 3, 5, ... become rows of the two halves)."""
    d = Dims.from_config(cfg)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for key, value in hf.items():
        m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", key)
        if m:
            rest = m[2]
            name = f"layers.{m[1]}.{TITAN_NAMES[rest]}"
            heads = {"self_attn.q_proj.weight": d.Hq, "self_attn.k_proj.weight": d.Hkv}.get(rest)
            if heads:
                rows, cols = value.shape
                value = value.view(heads, 2, rows // heads // 2, cols).transpose(1, 2).reshape(rows, cols)
        else:
            name = TITAN_NAMES[key]
        out[name] = value.contiguous()
    return out


def adapter_from_hf(hf: dict, cfg: dict, tt) -> "OrderedDict[str, torch.Tensor]":
    """TorchTitan's own Llama3StateDictAdapter.from_hf."""
    adapter = tt.Adapter(tt.ModelArgs(**titan_model_args(cfg)), None)
    return OrderedDict((k, v.contiguous()) for k, v in adapter.from_hf(dict(hf)).items())


def to_titan(hf: dict, cfg: dict) -> "OrderedDict[str, torch.Tensor]":
    src = titan.source()
    return adapter_from_hf(hf, cfg, titan.load(src)) if src else restated_from_hf(hf, cfg)


def titan_order(cfg: dict) -> list:
    """TorchTitan's Transformer.named_parameters() order."""
    d = Dims.from_config(cfg)
    names = ["tok_embeddings.weight"]
    for n in range(d.L):
        names += [f"layers.{n}.{x}" for x in (
            "attention.wq.weight", "attention.wk.weight", "attention.wv.weight", "attention.wo.weight",
            "feed_forward.w1.weight", "feed_forward.w2.weight", "feed_forward.w3.weight",
            "attention_norm.weight", "ffn_norm.weight")]
    return names + ["norm.weight", "output.weight"]


# ---------------------------------------------------------------------------
# reading a tag


def _is_xser(path: Path) -> bool:
    return Path(f"{path}.info.pt").exists()


def read_model_file(path: Path) -> "OrderedDict[str, object]":
    """key -> tensor; Absent for an xser tensor whose file was not written."""
    if not _is_xser(path):
        return OrderedDict(load_file(path, False))
    ref_cls = tensor_reference_class()
    refs = torch.load(path, weights_only=False)
    info = torch.load(f"{path}.info.pt", weights_only=False)
    out: "OrderedDict[str, object]" = OrderedDict()
    for k, ref in refs.items():
        assert isinstance(ref, ref_cls), f"{path.name}: {k} is not a TensorReference"
        f = Path(f"{path}.tensors") / f"tensor_{ref.tid}.pt"
        if f.exists():
            t = torch.load(f, weights_only=True)
            want = info[ref.tid]
            if t.dtype != want["dtype"] or tuple(t.shape) != tuple(want["shape"]):
                raise TagError(f"{f}: {t.dtype} {tuple(t.shape)}, .info.pt says {want['dtype']} {tuple(want['shape'])}")
            out[k] = t
        else:
            out[k] = Absent(info[ref.tid]["dtype"], tuple(info[ref.tid]["shape"]))
    return out


def merge(pieces: dict, d: Dims, lay: Layout, what: str) -> "OrderedDict[str, torch.Tensor]":
    """{(tp, pp): {key: tensor}} -> Hugging Face tensors, each element from
    the piece elements that hold it (found through reference.rank_state);
    all copies of an element must be equal."""
    shapes = hf_shapes(d)
    numbers, off = OrderedDict(), 0
    for k, shape in shapes.items():
        n = torch.Size(shape).numel()
        numbers[k] = torch.arange(off, off + n, dtype=torch.int64).reshape(shape)
        off += n
    lay = dataclasses.replace(lay, dtype=None)  # element numbers stay int64
    dtype = next(iter(next(iter(pieces.values())).values())).dtype
    flat = torch.zeros(off, dtype=dtype)
    filled = torch.zeros(off, dtype=torch.bool)
    for tp in range(lay.tp):
        for pp in range(lay.pp):
            held = rank_state(numbers, d, lay, tp, pp)
            got = pieces[(tp, pp)]
            if set(held) != set(got):
                raise TagError(f"{what} tp {tp} pp {pp}: keys {sorted(got)} are not the layout's {sorted(held)}")
            for k, pos in held.items():
                v = got[k]
                if v.dtype != dtype or tuple(v.shape) != tuple(pos.shape):
                    raise TagError(f"{what} tp {tp} pp {pp} {k}: {v.dtype} {tuple(v.shape)}, "
                                   f"want {dtype} {tuple(pos.shape)}")
                pos, v = pos.reshape(-1), v.reshape(-1)
                again = filled[pos]
                if bool(again.any()) and not torch.equal(flat[pos[again]], v[again]):
                    raise TagError(f"{what} tp {tp} pp {pp} {k}: copies of one element differ between ranks")
                flat[pos] = v
                filled[pos] = True
    if not bool(filled.all()):
        raise TagError(f"{what}: some Hugging Face element is in no rank piece")
    out, off = OrderedDict(), 0
    for k, shape in shapes.items():
        n = torch.Size(shape).numel()
        out[k] = flat[off:off + n].reshape(shape).clone()
        off += n
    return out


@dataclass
class Expected:
    cfg: dict
    params: "OrderedDict[str, torch.Tensor]"  # TorchTitan name -> float32
    exp_avg: "OrderedDict[str, torch.Tensor]"
    exp_avg_sq: "OrderedDict[str, torch.Tensor]"
    step: float  # NxD's step
    param_group: dict  # AdamW key -> value (the same for every parameter)
    lr_scheduler: dict
    train_state: dict
    hf: dict = field(default_factory=dict)  # kind -> Hugging Face tensors (params, exp_avg, exp_avg_sq)
    master: bool = False  # parameters from the master weights
    model_dtypes: tuple = ()  # the tag's model file dtypes

    def step_tensor(self) -> torch.Tensor:
        return torch.tensor(float(self.step), dtype=torch.float32)

    def state(self, fqn: str) -> dict:
        return {"step": self.step_tensor(), "exp_avg": self.exp_avg[fqn], "exp_avg_sq": self.exp_avg_sq[fqn]}

    def titan_state_dict(self) -> dict:
        """The nested state dict TorchTitan's CheckpointManager saves (no
        dataloader): model at the top, `optimizer` flattened as
        get_optimizer_state_dict(flatten_optimizer_state_dict=True) makes it."""
        optim: dict = {}
        for fqn in self.params:
            for k, v in self.state(fqn).items():
                optim[f"state.{fqn}.{k}"] = v.clone()
        for fqn in self.params:
            for k, v in self.param_group.items():
                optim[f"param_groups.{fqn}.{k}"] = v
        sd = {"train_state": dict(self.train_state), "optimizer": optim, "lr_scheduler": dict(self.lr_scheduler)}
        sd.update((k, v.clone()) for k, v in self.params.items())
        return sd


def adamw_defaults() -> dict:
    """torch.optim.AdamW's param group keys and defaults, in its order."""
    g = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]).param_groups[0]
    return {k: v for k, v in g.items() if k != "params"}


def _param_group(groups: list, scheduler: Optional[dict]) -> dict:
    def plain(g):
        return {k: v for k, v in g.items() if k != "params"}

    first = plain(groups[0])
    for g in groups[1:]:
        for k in ("lr", "betas", "eps"):
            a, b = plain(g).get(k), first.get(k)
            if k == "betas":
                a, b = list(a), list(b)
            if a != b:
                raise TagError(f"the tag's param groups disagree on {k}: {a!r} vs {b!r}")
    out = adamw_defaults()
    for k in out:
        if k in first:
            out[k] = first[k]
    out["betas"] = tuple(float(b) for b in first["betas"])
    for k in ("lr", "eps", "weight_decay"):
        out[k] = float(first[k])
    if "initial_lr" in first:
        out["initial_lr"] = float(first["initial_lr"])
    elif scheduler and scheduler.get("base_lrs"):
        out["initial_lr"] = float(scheduler["base_lrs"][0])
    else:
        out["initial_lr"] = out["lr"]
    return out


def _scheduler(sched: Optional[dict]) -> dict:
    if sched is None:
        raise TagError("the tag has no scheduler.pt: TorchTitan's checkpoint needs lr_scheduler state")
    out = {}
    for k in SCHEDULER_KEYS:
        if k in sched:
            v = sched[k]
            out[k] = [v[0]] if k in ("base_lrs", "_last_lr") else v
        elif k in SCHEDULER_DEFAULTS:
            out[k] = SCHEDULER_DEFAULTS[k]
        else:
            raise TagError(f"scheduler.pt has no {k}")
    return out


def read_tag(tag: Path, lay: Layout):
    """-> ({(tp, pp): model dict}, {(tp, pp): [optimizer dict per DP rank]})."""
    found: dict = {}
    for f in (tag / "optim").iterdir():
        m = FILE.fullmatch(f.name)
        if m:
            found.setdefault((int(m[2]), int(m[3])), set()).add(int(m[1]))
    want = {(t, p) for t in range(lay.tp) for p in range(lay.pp)}
    if set(found) != want:
        raise TagError(f"optimizer files for ranks {sorted(found)}, layout has {sorted(want)}")
    dps = {frozenset(v) for v in found.values()}
    if len(dps) != 1 or set(next(iter(dps))) != set(range(len(next(iter(dps))))):
        raise TagError(f"DP ranks differ between (tp, pp) ranks: {found}")
    dp = len(next(iter(dps)))
    models, optims = {}, {}
    for r in sorted(want):
        name = f"tp_rank_{r[0]:02d}_pp_rank_{r[1]:02d}.pt"
        models[r] = read_model_file(tag / "model" / f"dp_rank_00_{name}")
        paths = [tag / "optim" / f"dp_rank_{d:02d}_{name}" for d in range(dp)]
        optims[r] = [load_file(p, _is_xser(p)) for p in paths]
    return models, optims


def expect(tag: Path, cfg: dict, lay: Layout) -> Expected:
    tag = Path(tag)
    d = Dims.from_config(cfg)
    models, optims = read_tag(tag, lay)
    pieces = {k: {} for k in ("model", "master", *KINDS)}
    steps, groups, has_master = [], None, None
    for r, model in models.items():
        keys = list(model)
        names = group_order(keys)
        n_decay = group_sizes(keys)[0]
        for kind in pieces:
            pieces[kind][r] = {}
        for dp_rank, o in enumerate(optims[r]):
            where = f"optim dp {dp_rank} tp {r[0]} pp {r[1]}"
            ids = [list(g["params"]) for g in o["param_groups"]]
            if ids != [list(range(n_decay)), list(range(n_decay, len(keys)))]:
                raise TagError(f"{where}: param groups {ids} are not NxD's decay / no-decay grouping of the model file")
            plain = [{k: v for k, v in g.items() if k != "params"} for g in o["param_groups"]]
            if groups is None:
                groups = o["param_groups"]
            elif plain != [{k: v for k, v in g.items() if k != "params"} for g in groups]:
                raise TagError(f"{where}: hyper-parameters differ from the first optimizer file's")
            master = "sharded_master_weights" in o
            if has_master is None:
                has_master = master
            elif master != has_master:
                raise TagError(f"{where}: master weights in some optimizer files only")
            for i, k in enumerate(names):
                if list(o["shape_info"][i]) != list(model[k].shape):
                    raise TagError(f"{where}: shape_info[{i}] {o['shape_info'][i]} != {k} {tuple(model[k].shape)}")
                steps.append(o["base_state"][i]["step"])
        for i, k in enumerate(names):
            shape = list(optims[r][0]["shape_info"][i])
            for kind in (*KINDS, "master"):
                if kind == "master" and not has_master:
                    continue
                parts = [o["sharded_master_weights"][i] if kind == "master" else o["base_state"][i][kind]
                         for o in optims[r]]
                full = torch.cat(parts)[: shape[0]]
                if list(full.shape) != shape:
                    raise TagError(f"{kind} of {k} (tp {r[0]} pp {r[1]}): {tuple(full.shape)}, shape_info {shape}")
                pieces[kind][r][k] = full
            if not isinstance(model[k], Absent):
                pieces["model"][r][k] = model[k]
    step0 = steps[0]
    for s in steps:
        if type(s) is not type(step0) or float(s) != float(step0):
            raise TagError(f"optimizer steps differ: {s!r} vs {step0!r}")
    hf = {kind: merge(pieces[kind], d, lay, kind) for kind in KINDS}
    model_complete = all(len(pieces["model"][r]) == len(models[r]) for r in models)
    if has_master:
        hf["params"] = merge(pieces["master"], d, lay, "master weights")
    elif model_complete:
        # Widening is exact (bf16 runs keep their norms in fp32 in the same files).
        widened = {r: {k: v.to(torch.float32) for k, v in m.items()} for r, m in pieces["model"].items()}
        hf["params"] = merge(widened, d, lay, "model weights")
    else:
        raise TagError("the model files hold no tensor data and the optimizer files no master weights")
    sched_path = tag / "scheduler.pt"
    sched = torch.load(sched_path, weights_only=True) if sched_path.exists() else None
    order = titan_order(cfg)
    titan_hf = {}
    for kind in ("params", *KINDS):
        named = to_titan(hf[kind], cfg)
        assert sorted(named) == sorted(order), f"{kind}: {sorted(set(named) ^ set(order))}"
        titan_hf[kind] = OrderedDict((k, named[k]) for k in order)
    for kind, sd in titan_hf.items():
        for k, v in sd.items():
            assert v.dtype == torch.float32, f"{kind} {k}: {v.dtype}"
    step_value = int(step0) if not isinstance(step0, torch.Tensor) else step0.item()
    return Expected(
        cfg=cfg, params=titan_hf["params"], exp_avg=titan_hf["exp_avg"], exp_avg_sq=titan_hf["exp_avg_sq"],
        step=step_value, param_group=_param_group(groups, sched), lr_scheduler=_scheduler(sched),
        train_state={"step": int(step_value), "ntokens_seen": 0}, hf=hf, master=bool(has_master),
        model_dtypes=tuple(sorted({str(t.dtype) for m in pieces["model"].values() for t in m.values()})))


def infer_layout(tag: Path, cfg: dict, backend: str = "trn1") -> Layout:
    """The tag's layout from its files (for the command line of
    make_reference_dcp.py; the tests state the layout they made): TP and PP
    from the names, qkv_linear / fuse_qkv from the keys, the KV multiplier
    from weight_k's rows. The hardware backend cannot be seen: given."""
    d = Dims.from_config(cfg)
    ranks = [FILE.fullmatch(f.name) for f in (Path(tag) / "model").iterdir()]
    ranks = [(int(m[2]), int(m[3])) for m in ranks if m]
    tp, pp = max(r[0] for r in ranks) + 1, max(r[1] for r in ranks) + 1
    keys = list(read_model_file(Path(tag) / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt"))
    fused = any(k.endswith("qkv_proj.weight_qkv") for k in keys)
    qkv_linear = fused or any(k.endswith("qkv_proj.weight_q") for k in keys)
    kv_mult = 1
    if qkv_linear:
        model = read_model_file(Path(tag) / "model" / "dp_rank_00_tp_rank_00_pp_rank_00.pt")
        k = next(k for k in keys if k.endswith(("qkv_proj.weight_k", "qkv_proj.weight_qkv")))
        rows = model[k].shape[0]
        if fused:
            rows = (rows - d.Hq * d.head_dim // tp) // 2
        kv_mult = rows * tp // (d.Hkv * d.head_dim)
    return Layout(tp=tp, pp=pp, kv_mult=kv_mult, qkv_linear=qkv_linear, fuse_qkv=fused, backend=backend)
