"""The consumers a DCP folder is judged by, and what they report.

- TorchTitan v0.2.2's own objects (when TORCHTITAN_SRC is set, titan.py):
  its Llama3 `Transformer`, `build_optimizers` (AdamW), `build_lr_schedulers`
  and `CheckpointManager`; without it, a plain torch module with TorchTitan's
  parameter names, torch.optim.AdamW and a LambdaLR.
- FSDP2 as TorchTitan's apply_fsdp applies it (llama3/infra/parallelize.py):
  `fully_shard` on tok_embeddings, each block, [norm, output], then the
  root (apply_fsdp itself imports GPU-only modules).
- One AdamW step with a fixed gradient per parameter (`fixed_grad`), and the
  same step taken by a plain torch.optim.AdamW from expected.py's state
  (`reference_step`).

Everything here is plain torch or TorchTitan; nothing comes from ShardFS.
"""

from __future__ import annotations

import inspect
import zlib
from typing import Optional

import torch
import torch.nn as nn

from expected import Expected, titan_model_args, titan_order
import titan


def titan_modules():
    src = titan.source()
    return titan.load(src) if src else None


# ---------------------------------------------------------------------------
# models


class _Attention(nn.Module):
    def __init__(self, a: dict):
        super().__init__()
        hd = a["dim"] // a["n_heads"]
        self.wq = nn.Linear(a["dim"], a["n_heads"] * hd, bias=False)
        self.wk = nn.Linear(a["dim"], a["n_kv_heads"] * hd, bias=False)
        self.wv = nn.Linear(a["dim"], a["n_kv_heads"] * hd, bias=False)
        self.wo = nn.Linear(a["n_heads"] * hd, a["dim"], bias=False)


class _FeedForward(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w1 = nn.Linear(dim, hidden, bias=False)
        self.w2 = nn.Linear(hidden, dim, bias=False)
        self.w3 = nn.Linear(dim, hidden, bias=False)


class _Block(nn.Module):
    def __init__(self, a: dict, hidden: int):
        super().__init__()
        self.attention = _Attention(a)
        self.feed_forward = _FeedForward(a["dim"], hidden)
        self.attention_norm = nn.RMSNorm(a["dim"])
        self.ffn_norm = nn.RMSNorm(a["dim"])


class PlainTransformer(nn.Module):
    """TorchTitan's Llama3 parameter names and shapes, nothing else."""

    def __init__(self, cfg: dict):
        super().__init__()
        a = titan_model_args(cfg)
        hidden = cfg["intermediate_size"]
        self.tok_embeddings = nn.Embedding(a["vocab_size"], a["dim"])
        self.layers = nn.ModuleDict({str(n): _Block(a, hidden) for n in range(a["n_layers"])})
        self.norm = nn.RMSNorm(a["dim"])
        self.output = nn.Linear(a["dim"], a["vocab_size"], bias=False)


def build_model(cfg: dict, tt=None) -> nn.Module:
    torch.manual_seed(1234)  # whatever it starts with must be overwritten by the load
    model = tt.Transformer(tt.ModelArgs(**titan_model_args(cfg))) if tt else PlainTransformer(cfg)
    names = [n for n, _ in model.named_parameters()]
    assert names == titan_order(cfg), f"the model's parameters are not TorchTitan's: {names}"
    return model


def apply_fsdp(model: nn.Module, mesh) -> nn.Module:
    """TorchTitan's apply_fsdp units (mixed precision off: fp32 training)."""
    from torch.distributed.fsdp import fully_shard

    fully_shard(model.tok_embeddings, mesh=mesh)
    for block in model.layers.values():
        fully_shard(block, mesh=mesh)
    fully_shard([model.norm, model.output], mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


class _ParallelDims:
    ep_enabled = False
    pp_enabled = False


def build_optimizer(model: nn.Module, tt=None):
    """TorchTitan's OptimizersContainer (AdamW, its default hyper-parameters,
    for-loop) or a plain AdamW: either way the load must replace them."""
    if tt:
        return tt.optimizer.build_optimizers([model], tt.config.Optimizer(implementation="for-loop"), _ParallelDims())
    return torch.optim.AdamW(model.parameters())


def build_lr_scheduler(opt, tt=None):
    if tt:
        return tt.lr_scheduler.build_lr_schedulers(opt, tt.config.LRScheduler(warmup_steps=4), 10)
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)


class TrainState:
    """The "train_state" a TorchTitan run checkpoints: its Trainer registers
    itself (train.py: states={"train_state": self}) with exactly these
    state_dict / load_state_dict; the Trainer needs a whole job to build."""

    def __init__(self):
        self.step = -1
        self.ntokens_seen = -1

    def state_dict(self) -> dict:
        return {"step": self.step, "ntokens_seen": self.ntokens_seen}

    def load_state_dict(self, sd: dict) -> None:
        self.step = sd["step"]
        self.ntokens_seen = sd["ntokens_seen"]


# ---------------------------------------------------------------------------
# one step


def fixed_grad(fqn: str, shape) -> torch.Tensor:
    g = torch.Generator().manual_seed(zlib.crc32(fqn.encode()))
    return torch.randn(tuple(shape), generator=g) * 0.01


def set_fixed_grads(model: nn.Module) -> None:
    from torch.distributed.tensor import DTensor, distribute_tensor

    for fqn, p in model.named_parameters():
        g = fixed_grad(fqn, p.shape)
        p.grad = distribute_tensor(g, p.device_mesh, p.placements) if isinstance(p, DTensor) else g


def reference_step(e: Expected) -> "dict[str, torch.Tensor]":
    """Parameters after one step of a plain torch.optim.AdamW holding
    expected.py's state and hyper-parameters, with the fixed gradients."""
    accepted = inspect.signature(torch.optim.AdamW).parameters
    group = {k: v for k, v in e.param_group.items() if k in accepted}
    # decoupled_weight_decay is AdamW's fixed True (not an argument): the folder's must say so.
    assert e.param_group.get("decoupled_weight_decay", True) is True
    params = {fqn: nn.Parameter(t.clone()) for fqn, t in e.params.items()}
    opt = torch.optim.AdamW(list(params.values()), **group)
    for fqn, p in params.items():
        opt.state[p] = {"step": e.step_tensor(), "exp_avg": e.exp_avg[fqn].clone(),
                        "exp_avg_sq": e.exp_avg_sq[fqn].clone()}
        p.grad = fixed_grad(fqn, p.shape)
    opt.step()
    return {fqn: p.detach().clone() for fqn, p in params.items()}


# ---------------------------------------------------------------------------
# what a loaded model and optimizer hold, as full tensors


def full(t) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    if isinstance(t, DTensor):
        t = t.full_tensor()
    return t.detach().clone()


def report(model: nn.Module, opt, lr_scheduler, train_state: Optional[TrainState]) -> dict:
    """Full tensors of the parameters and the optimizer state (by TorchTitan
    name), the optimizer's live param groups, the scheduler's state."""
    optimizers = getattr(opt, "optimizers", [opt])
    assert len(optimizers) == 1, "one model part, one optimizer"
    inner = optimizers[0]
    names = {p: fqn for fqn, p in model.named_parameters()}
    state = {}
    for p, s in inner.state.items():
        state[names[p]] = {k: full(v) if isinstance(v, torch.Tensor) else v for k, v in s.items()}
    schedulers = getattr(lr_scheduler, "schedulers", [lr_scheduler])
    return {
        "params": {fqn: full(p) for fqn, p in model.named_parameters()},
        "state": state,
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in inner.param_groups],
        "lr_scheduler": [s.state_dict() for s in schedulers],
        "train_state": train_state.state_dict() if train_state else None,
    }
