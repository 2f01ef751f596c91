"""Training tags with ZeRO-1 optimizer state (docs/formats/zero1.md), written from Python
with plain torch, and the state any layout must hold, computed
independently of ShardFS.

The state is defined once at the Hugging Face level: for every tensor of
the model, an `exp_avg` and an `exp_avg_sq` of its shape (seeded values),
and the master weight (the tensor in fp32). A layout's rank (tp, pp) holds
each parameter's piece of each, cut by reference.py's `rank_state` exactly
as the weights are (fused QKV and gate_up included); its parameters are
numbered in NxD's Llama `named_parameters()` order, decay group first
(`no_decay = ["bias", "norm"]`), as NxD's examples group them; ZeRO-1 pads
each piece's dim 0 to a multiple of the DP size and gives DP rank d the
d-th of DP equal chunks. The real files of torch_xla's optimizer are judged
in tests/zero1; these tags are for what needs no torch_xla (every layout,
xser, the mount, verify, refusals) in the main suite.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import torch

from decay_groups import group_order, group_sizes
from reference import Dims, Layout, rank_state
from trainer_files import tensor_reference_class

# NxD's training Llama registers its modules in this order (modeling_llama_nxd.py).
LAYER_ORDER = [
    "self_attn.qkv_proj.weight_q", "self_attn.qkv_proj.weight_k", "self_attn.qkv_proj.weight_v",
    "self_attn.qkv_proj.weight_qkv", "self_attn.q_proj.weight", "self_attn.k_proj.weight",
    "self_attn.v_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight",
    "input_layernorm.weight", "post_attention_layernorm.weight",
]
# A fused weight_qkv takes the place of weight_q.
POSITION = {k: (0 if k.endswith("weight_qkv") else i) for i, k in enumerate(LAYER_ORDER)}


def is_norm(key: str) -> bool:
    return key == "model.norm.weight" or key.endswith(("input_layernorm.weight", "post_attention_layernorm.weight"))


def named_parameters_order(keys) -> list:
    def rank(k):
        if k == "model.embed_tokens.weight":
            return (0, 0, 0)
        if k == "model.norm.weight":
            return (2, 0, 0)
        if k == "lm_head.weight":
            return (3, 0, 0)
        _, _, n, rest = k.split(".", 3)
        return (1, int(n), POSITION[rest])
    return sorted(keys, key=rank)


def optimizer_order(keys) -> tuple:
    """(keys by index, group sizes): NxD's examples' two groups."""
    ordered = named_parameters_order(keys)
    return group_order(ordered), group_sizes(ordered)


def shard(t: torch.Tensor, dp_rank: int, dp: int) -> torch.Tensor:
    """ZeroRedundancyOptimizer._shard_tensor: pad dim 0 to a multiple of dp, chunk."""
    pad = (-t.shape[0]) % dp
    if pad:
        t = torch.nn.functional.pad(t, [0, 0] * (t.dim() - 1) + [0, pad])
    return t.chunk(dp)[dp_rank].clone()


class TrainingState:
    """The Hugging Face-level state of a model: weights (fp32), exp_avg,
    exp_avg_sq; and what any layout's files hold of it."""

    def __init__(self, sd: dict, cfg: dict, seed: int = 0, step=7, norms_fp32: bool = False):
        self.weights = {k: v.float() for k, v in sd.items()}
        # NxD's bf16 runs keep the norm weights float32 in their model files
        # (LlamaRMSNorm's weight is made float32, the linear layers in the
        # run's dtype: modeling_llama_nxd.py); True: the model files do so
        # whatever the layout's dtype.
        self.norms_fp32 = norms_fp32
        g = torch.Generator().manual_seed(seed)
        self.exp_avg = {k: torch.randn(v.shape, generator=g) for k, v in self.weights.items()}
        self.exp_avg_sq = {k: torch.rand(v.shape, generator=g) for k, v in self.weights.items()}
        self.dims = Dims.from_config(cfg)
        self.step = step  # an int, or a 0-d tensor

    def groups(self, lr=1e-3):
        # The hyper-parameters torch.optim.AdamW keeps (torch 2.9), in its order.
        base = {"lr": lr, "betas": [0.9, 0.95], "eps": 1e-08, "weight_decay": 0.01, "amsgrad": False,
                "foreach": None, "maximize": False, "capturable": False, "differentiable": False, "fused": None,
                "decoupled_weight_decay": True}
        return [dict(base), dict(base, weight_decay=0.0)]

    def rank(self, lay: Layout, tp: int, pp: int):
        """(model state in named_parameters order, optimizer keys by index, group sizes, pieces per kind)."""
        model = rank_state(self.weights, self.dims, lay, tp, pp)  # in lay.dtype (the model's)
        keys, sizes = optimizer_order(model)
        fp32 = dataclasses.replace(lay, dtype=None)  # the optimizer's state is fp32 whatever the model's dtype
        if self.norms_fp32:
            whole = rank_state(self.weights, self.dims, fp32, tp, pp)
            model = {k: whole[k] if is_norm(k) else v for k, v in model.items()}
        kinds = {"exp_avg": rank_state(self.exp_avg, self.dims, fp32, tp, pp),
                 "exp_avg_sq": rank_state(self.exp_avg_sq, self.dims, fp32, tp, pp),
                 "master": rank_state(self.weights, self.dims, fp32, tp, pp)}
        return {k: model[k] for k in named_parameters_order(model)}, keys, sizes, kinds

    def optimizer_file(self, lay: Layout, tp: int, pp: int, dp_rank: int, dp: int, master: bool = True) -> dict:
        """What optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt holds, as torch.load returns it."""
        _, keys, sizes, kinds = self.rank(lay, tp, pp)
        groups = self.groups()
        first = 0
        for group, size in zip(groups, sizes):
            group["params"] = list(range(first, first + size))
            first += size
        step = self.step.clone() if isinstance(self.step, torch.Tensor) else self.step
        out = {
            "state": {},
            "param_groups": groups,
            "base_state": {i: {"step": step.clone() if isinstance(step, torch.Tensor) else step,
                               "exp_avg": shard(kinds["exp_avg"][k], dp_rank, dp),
                               "exp_avg_sq": shard(kinds["exp_avg_sq"][k], dp_rank, dp)}
                           for i, k in enumerate(keys)},
            "shape_info": {i: list(kinds["master"][k].shape) for i, k in enumerate(keys)},
        }
        if master:
            out["sharded_master_weights"] = {i: shard(kinds["master"][k], dp_rank, dp) for i, k in enumerate(keys)}
        return out

    def write_tag(self, tag: Path, lay: Layout, dp: int, xser: bool = False, master: bool = True,
                  model_data: bool = True) -> Path:
        """A tag as NxD's save_checkpoint writes it. `model_data=False` (xser
        with master weights): the model's reference files and .info.pt, no
        tensor files (avoid_saving_lower_precision_weights)."""
        shutil.rmtree(tag, ignore_errors=True)
        (tag / "model").mkdir(parents=True)
        (tag / "optim").mkdir()
        for tp in range(lay.tp):
            for pp in range(lay.pp):
                model, *_ = self.rank(lay, tp, pp)
                name = f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"
                save(model, tag / "model" / name, xser, tensors=model_data)
                for d in range(dp):
                    save(self.optimizer_file(lay, tp, pp, d, dp, master),
                         tag / "optim" / f"dp_rank_{d:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt", xser)
        torch.save({"base_lrs": [1e-3, 1e-3], "last_epoch": 7, "_step_count": 8, "_is_initial": False,
                    "_get_lr_called_within_step": False, "_last_lr": [7e-4, 7e-4], "lr_lambdas": [None, None]},
                   tag / "scheduler.pt")
        torch.save({"epoch": 0, "global_step": 7}, tag / "user_content.pt")
        (tag / "checkpoint").write_text("1")
        (tag / "done").write_text("1")
        return tag


def save(obj, path: Path, xser: bool, tensors: bool = True) -> None:
    """torch.save, or NxD's xser save: every tensor, in traversal order,
    replaced by TensorReference(tid) and saved alone in path.tensors/."""
    if not xser:
        torch.save(obj, path)
        return
    ref_cls = tensor_reference_class()
    folder = Path(f"{path}.tensors")
    folder.mkdir(parents=True, exist_ok=True)
    info = {}

    def rewrite(v):
        if isinstance(v, torch.Tensor):
            tid = len(info)
            info[tid] = {"dtype": v.dtype, "shape": v.shape, "expert_model_parallel": False}
            if tensors:
                torch.save(v.clone(), folder / f"tensor_{tid}.pt")
            return ref_cls(tid)
        if isinstance(v, dict):
            return {k: rewrite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [rewrite(x) for x in v]
        return v

    torch.save(rewrite(obj), path)
    torch.save(info, f"{path}.info.pt")


def load(path: Path, xser: bool):
    """torch.load (weights_only), or NxD's xser load: the reference file,
    then each TensorReference replaced by its tensor file."""
    if not xser:
        return torch.load(path, weights_only=True)
    ref_cls = tensor_reference_class()
    refs = torch.load(path, weights_only=False)

    def resolve(v):
        if isinstance(v, ref_cls):
            return torch.load(f"{path}.tensors/tensor_{v.tid}.pt", weights_only=True)
        if isinstance(v, dict):
            return {k: resolve(x) for k, x in v.items()}
        if isinstance(v, list):
            return [resolve(x) for x in v]
        return v

    return resolve(refs)


def assert_same(got, want, where: str) -> None:
    """Equal structure, types and values; tensors bitwise (dtype, shape, bytes)."""
    if isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{where}: {type(got).__name__}, not a tensor"
        assert got.dtype == want.dtype and got.shape == want.shape, f"{where}: {got.dtype} {tuple(got.shape)}, want {want.dtype} {tuple(want.shape)}"
        assert torch.equal(got.view(torch.uint8) if got.dim() else got, want.view(torch.uint8) if want.dim() else want), f"{where}: values differ"
        return
    assert type(got) is type(want), f"{where}: {type(got).__name__}, want {type(want).__name__}"
    if isinstance(want, dict):
        assert list(got) == list(want), f"{where}: keys {list(got)[:8]}, want {list(want)[:8]}"
        for k in want:
            assert_same(got[k], want[k], f"{where}[{k!r}]")
    elif isinstance(want, list):
        assert len(got) == len(want), f"{where}: {len(got)} items, want {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want, f"{where}: {got!r}, want {want!r}"
