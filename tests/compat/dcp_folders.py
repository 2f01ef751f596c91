"""TorchTitan-shaped training states, saved with torch's own
`torch.distributed.checkpoint.save` (plain torch, no TorchTitan): for the
DCP-source tests (test_dcp_source.py).

The state is what TorchTitan v0.2.2's CheckpointManager saves for its
Llama3 with AdamW (docs/formats/dcp.md):
the model's parameters at the top level under TorchTitan's names,
`optimizer.state.<fqn>.{step, exp_avg, exp_avg_sq}` and
`optimizer.param_groups.<fqn>.<key>` as torch's flattened optimizer state
dict names them, `lr_scheduler.*` (a LambdaLR's state without its lambdas),
`train_state.{step, ntokens_seen}`, and per data-parallel rank
`dataloader.dp_rank_<r>`. Saved by WORLD processes (gloo), every parameter
and moment a DTensor cut in row chunks (`Shard(0)`, torch.chunk's uneven
cuts) over them, as FSDP2 holds them: one `__<rank>_0.distcp` file per
process, the small items in any of them.

Run as a script: `python dcp_folders.py STATE.pt OUT WORLD` saves the
state `torch.load`s from STATE.pt into the folder OUT.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import torch


def parameters(cfg: dict) -> list:
    """(TorchTitan name, Hugging Face name, shape, heads whose RoPE rows are
    interleaved or None), in TorchTitan's named_parameters() order."""
    h, heads, kv, inter, vocab = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"],
                                  cfg["intermediate_size"], cfg["vocab_size"])
    d = h // heads
    out = [("tok_embeddings.weight", "model.embed_tokens.weight", (vocab, h), None)]
    for n in range(cfg["num_hidden_layers"]):
        t, p = f"layers.{n}.", f"model.layers.{n}."
        out += [
            (t + "attention.wq.weight", p + "self_attn.q_proj.weight", (heads * d, h), heads),
            (t + "attention.wk.weight", p + "self_attn.k_proj.weight", (kv * d, h), kv),
            (t + "attention.wv.weight", p + "self_attn.v_proj.weight", (kv * d, h), None),
            (t + "attention.wo.weight", p + "self_attn.o_proj.weight", (h, heads * d), None),
            (t + "feed_forward.w1.weight", p + "mlp.gate_proj.weight", (inter, h), None),
            (t + "feed_forward.w2.weight", p + "mlp.down_proj.weight", (h, inter), None),
            (t + "feed_forward.w3.weight", p + "mlp.up_proj.weight", (inter, h), None),
            (t + "attention_norm.weight", p + "input_layernorm.weight", (h,), None),
            (t + "ffn_norm.weight", p + "post_attention_layernorm.weight", (h,), None),
        ]
    out += [("norm.weight", "model.norm.weight", (h,), None), ("output.weight", "lm_head.weight", (vocab, h), None)]
    return out


GROUP = {"lr": 7e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1, "amsgrad": False, "maximize": False,
         "foreach": None, "capturable": False, "differentiable": False, "fused": None, "decoupled_weight_decay": True,
         "initial_lr": 8e-4}


def titan_state(cfg: dict, seed: int = 0, step: int = 3) -> dict:
    """The nested state dict CheckpointManager hands to dcp.save (without
    the per-rank data loader entries), random fp32 values."""
    g = torch.Generator().manual_seed(seed)
    state: dict = {}
    opt_state, groups = {}, {}
    for name, _, shape, _ in parameters(cfg):
        state[name] = torch.randn(shape, generator=g)
        opt_state[name] = {"step": torch.tensor(float(step)), "exp_avg": torch.randn(shape, generator=g),
                           "exp_avg_sq": torch.rand(shape, generator=g)}
        groups[name] = dict(GROUP)
    state["optimizer"] = {"state": opt_state, "param_groups": groups}
    state["lr_scheduler"] = {"base_lrs": [8e-4], "last_epoch": step, "_step_count": step + 1, "_is_initial": False,
                             "_get_lr_called_within_step": False, "_last_lr": [7e-4]}
    state["train_state"] = {"step": step, "ntokens_seen": 96 * step}
    return state


def _worker(rank: int, world: int, port: int, state_path: str, out: str) -> None:
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import Shard, distribute_tensor

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    state = torch.load(state_path, weights_only=True)

    def shard(t):
        return distribute_tensor(t, mesh, [Shard(0)]) if t.dim() > 0 else t

    for k, v in list(state.items()):
        if isinstance(v, torch.Tensor):
            state[k] = shard(v)
    for per in state["optimizer"]["state"].values():
        for k in ("exp_avg", "exp_avg_sq"):
            per[k] = shard(per[k])
    state["dataloader"] = {f"dp_rank_{rank}": b"position " + str(rank).encode(), "world_size": world}
    dcp.save(state, checkpoint_id=out)
    dist.barrier()
    dist.destroy_process_group()


def save(state: dict, out: Path, world: int, scratch: Path) -> Path:
    """dcp.save of `state` by `world` processes into `out` (world 1: one
    process, no process group, every tensor whole)."""
    if world == 1:
        import warnings

        import torch.distributed.checkpoint as dcp
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")  # one process, as intended
            dcp.save(dict(state, dataloader={"dp_rank_0": b"position 0", "world_size": 1}), checkpoint_id=str(out))
        return out
    path = scratch / "state.pt"
    torch.save(state, path)
    import subprocess
    run = subprocess.run([sys.executable, __file__, str(path), str(out), str(world)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"dcp.save by {world} processes failed:\n{run.stderr[-4000:]}"
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


if __name__ == "__main__":
    import torch.multiprocessing as mp

    state_path, out, world = sys.argv[1], sys.argv[2], int(sys.argv[3])
    mp.spawn(_worker, args=(world, _free_port(), state_path, out), nprocs=world, join=True)
