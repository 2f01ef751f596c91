"""One DP rank of the simulated NxD training run (an xmp.spawn thread on its
own XLA:CPU device): the model pieces, the ZeRO-1 optimizers, one training
step, and saving / loading a tag the way NxD's save_checkpoint and
load_checkpoint do (nxd_io.py).

A DP rank holds every (tp, pp) rank's parameters, each an nn.Parameter
registered in the trainer's order in one nn.Module per (tp, pp) (its
state_dict is the rank's model file), and one ZeroRedundancyOptimizer per
(tp, pp) over that rank's parameters (its state_dict is the rank's optimizer
file). The forward assembles the Hugging Face tensors from all pieces
(pieces.Gather) and runs tiny_llama.loss on this rank's part of the batch.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torch_xla

import decay_groups
import host_collectives as hc
import nxd_io
import optimizers
import tiny_llama
from pieces import Gather, PieceMap, ranks, trainer_state
from reference import Layout

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def module_of(st: "OrderedDict[str, torch.Tensor]") -> torch.nn.Module:
    """An nn.Module tree whose named_parameters() are `st`'s keys, in order."""
    root = torch.nn.Module()
    for key, t in st.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            if part not in mod._modules:
                mod.add_module(part, torch.nn.Module())
            mod = mod._modules[part]
        mod.register_parameter(leaf, torch.nn.Parameter(t))
    assert [n for n, _ in root.named_parameters()] == list(st), "module tree reordered the keys"
    return root


class Rank:
    """The state of one DP rank for one job."""

    def __init__(self, job: dict, dp_rank: int, dp: int, seed: int):
        self.job, self.dp_rank, self.dp = job, dp_rank, dp
        self.lay = Layout(**job["layout"])
        self.cfg = tiny_llama.MODELS[job["model"]]
        self.d = tiny_llama.dims(self.cfg)
        self.dtype = DTYPES[job["dtype"]]
        self.device = torch_xla.device()
        self.map = PieceMap(self.d, self.lay)
        sd = tiny_llama.init_state(self.d, seed, self.dtype, DTYPES[job["norms"]] if job["norms"] else None)
        # each Hugging Face tensor's dtype (a bf16 run's norms float32)
        self.hf_dtypes = {k: v.dtype for k, v in sd.items()}
        self.models = OrderedDict(
            (r, module_of(OrderedDict((k, v.to(self.device)) for k, v in
                                      trainer_state(sd, self.d, self.lay, *r).items())))
            for r in ranks(self.lay))
        # Gather takes the pieces in the map's order
        assert [(r, [n for n, _ in m.named_parameters()]) for r, m in self.models.items()] == \
            [(r, list(keys)) for r, keys in self.map.keys.items()]
        self.opts = OrderedDict(
            (r, optimizers.zero1(list(m.named_parameters()), job["opt"], dp, job["master"]))
            for r, m in self.models.items())
        self.scheds = OrderedDict((r, optimizers.scheduler(o)) for r, o in self.opts.items())
        toks = tiny_llama.tokens(self.d)
        n = toks.shape[0] // dp
        assert n * dp == toks.shape[0], "the global batch must split evenly over DP"
        self.tokens = toks[dp_rank * n : (dp_rank + 1) * n].to(self.device)

    # -- training -------------------------------------------------------------

    def pieces(self) -> list:
        return [p for m in self.models.values() for p in m.parameters()]

    def typed(self, hf: dict) -> "OrderedDict[str, torch.Tensor]":
        """Hugging Face tensors in the run's dtype each (pieces of mixed
        dtypes are gathered in the widest)."""
        return OrderedDict((k, v.to(self.hf_dtypes[k])) for k, v in hf.items())

    def forward(self) -> torch.Tensor:
        hf = self.typed(self.map.split_hf(Gather.apply(self.map, self.device, *self.pieces())))
        return tiny_llama.loss(hf, self.tokens, self.d, self.cfg)

    def step(self) -> float:
        """One training step, as the examples do it: zero_grad, forward,
        backward, optimizer.step (ZeRO-1: reduce-scatter, AdamW on the shard,
        all-gather), scheduler.step."""
        for o in self.opts.values():
            # set_to_none: the examples zero the gradients in place; None
            # gives the same sums and keeps one backward graph for every step
            o.zero_grad(set_to_none=True)
        loss = self.forward()
        loss.backward()
        torch_xla.sync()
        for o in self.opts.values():
            o.step()
        for s in self.scheds.values():
            s.step()
        torch_xla.sync()
        return float(loss.detach().cpu())

    # -- a tag ------------------------------------------------------------------

    def save(self, tag: Path, user_content: dict) -> None:
        """save_checkpoint(checkpoint_dir, tag, model, optimizer, scheduler,
        user_content, use_xser, zero1_optimizer=True,
        avoid_saving_lower_precision_weights)."""
        use_xser, avoid = self.job["xser"], self.job["avoid_lower"]
        first = self.dp_rank == 0
        if first:
            tag.mkdir(parents=True, exist_ok=True)
            nxd_io.write_text(tag / "checkpoint")
            (tag / "optim").mkdir(exist_ok=True)
            (tag / "model").mkdir(exist_ok=True)
        nxd_io.barrier()
        ignore = False
        for r, o in self.opts.items():
            sd = o.state_dict()
            if avoid and "sharded_master_weights" in sd:
                ignore = True  # "weights in model will not be saved" (xser only)
            nxd_io.save(sd, str(tag / nxd_io.rank_path("optim", self.dp_rank, *r)), use_xser=use_xser,
                        grouped=False, dp_rank=self.dp_rank, dp_size=self.dp)
        nxd_io.barrier()
        for r, m in self.models.items():
            nxd_io.save(m.state_dict(), str(tag / nxd_io.rank_path("model", 0, *r)), use_xser=use_xser,
                        grouped=True, dp_rank=self.dp_rank, dp_size=self.dp, ignore_tensor_data=ignore)
        if first:
            torch.save(self.scheds[(0, 0)].state_dict(), tag / "scheduler.pt")
            torch.save(user_content, tag / "user_content.pt")
        nxd_io.barrier()
        if first:
            nxd_io.write_text(tag / "done")
        nxd_io.barrier()

    def load(self, tag: Path):
        """load_checkpoint(checkpoint_dir, tag, model, optimizer, scheduler):
        the optimizer first (ZeRO-1's load_state_dict re-shards the current
        parameters, then copies master weights in and all-gathers them when
        the file has them), then the model, unless the tag is xser and the
        optimizer keeps master weights (then the model's tensor data is
        ignored), then the scheduler; returns user_content."""
        self.load_models(tag, ignore_tensor_data=self.load_optimizers(tag))
        sched = torch.load(tag / "scheduler.pt", map_location="cpu", weights_only=False)
        for s in self.scheds.values():
            s.load_state_dict(sched)
        uc = tag / "user_content.pt"
        user_content = torch.load(uc, map_location="cpu", weights_only=False) if uc.exists() else None
        nxd_io.barrier()
        return user_content

    def load_optimizers(self, tag: Path) -> bool:
        """load_checkpoint's optimizer part; whether the optimizer keeps
        master weights (then an xser model's tensor data is ignored)."""
        use_xser = nxd_io.is_checkpoint_xser(tag)
        ignore = False
        for r, o in self.opts.items():
            # NxD asks the optimizer object it was given (NxDOptimizer.state_dict())
            if "sharded_master_weights" in o.state_dict():
                ignore = True
            path = str(tag / nxd_io.rank_path("optim", self.dp_rank, *r))
            if use_xser:
                ck = nxd_io.move_step_to_cpu(
                    nxd_io.xser_load_data(path, grouped=False, dp_rank=self.dp_rank, dp_size=self.dp))
            else:
                ck = torch.load(path, map_location="cpu", weights_only=False)
            o.load_state_dict(ck)
        return ignore

    def load_models(self, tag: Path, ignore_tensor_data: bool) -> None:
        """load_checkpoint's model part."""
        use_xser = nxd_io.is_checkpoint_xser(tag)
        for r, m in self.models.items():
            path = str(tag / nxd_io.rank_path("model", 0, *r))
            if use_xser:
                ck = nxd_io.move_step_to_cpu(nxd_io.xser_load_data(
                    path, grouped=True, dp_rank=self.dp_rank, dp_size=self.dp, ignore_tensor_data=ignore_tensor_data))
                if ignore_tensor_data:
                    continue
            else:
                ck = torch.load(path, map_location="cpu", weights_only=False)
            m.load_state_dict(ck, strict=True)

    # -- what the judge compares ----------------------------------------------

    def snapshot(self) -> dict:
        """Collective: every DP rank calls it; DP rank 0 gets the parameters
        and the fp32 master weights (the ZeRO shards of all DP ranks,
        concatenated and trimmed) as Hugging Face tensors, and the largest
        difference between replicas of one element."""
        shards = {r: [p.detach().cpu() for g in o.base_optimizer.param_groups for p in g["params"]]
                  for r, o in self.opts.items()}
        everyone = hc.hub().exchange(tuple(range(self.dp)), self.dp_rank, shards, lambda values, me: values)
        if self.dp_rank != 0:
            return {}
        pieces = {r: OrderedDict((k, p.detach().cpu()) for k, p in m.named_parameters())
                  for r, m in self.models.items()}
        masters = {}
        for r, keys in self.map.keys.items():
            names = decay_groups.group_order(keys)
            full = {k: torch.cat([of[r][i] for of in everyone])[: keys[k][0]] for i, k in enumerate(names)}
            masters[r] = OrderedDict((k, full[k]) for k in keys)
        return {"params": self.typed(self.map.assemble(pieces)), "masters": self.map.assemble(masters),
                "replica_spread": self.map.replica_spread(pieces)}

    def last_step(self) -> dict:
        """The step the judge compares: the state before it, the loss of the
        global batch (the mean of the DP ranks' losses), the state after it."""
        before = self.snapshot()
        step_lrs = [g["lr"] for g in self.opts[(0, 0)].param_groups]
        loss = self.step()
        losses = hc.hub().exchange(tuple(range(self.dp)), self.dp_rank, loss, lambda values, me: values)
        after = self.snapshot()
        if self.dp_rank != 0:
            return {}
        o = self.opts[(0, 0)]
        return {
            "loss": sum(losses) / self.dp,
            "rank_losses": losses,
            **after,
            "params_before": before["params"],
            "masters_before": before["masters"],
            "step_lrs": step_lrs,
            "lrs": [g["lr"] for g in o.param_groups],
            "scheduler": self.scheds[(0, 0)].state_dict(),
        }


def train(job: dict, dp_rank: int, dp: int) -> dict:
    """Train `steps` steps from the seeded init, save the tag, then train one
    more step in the same process (the uninterrupted run)."""
    rank = Rank(job, dp_rank, dp, seed=job["seed"])
    losses = [rank.step() for _ in range(job["steps"])]
    rank.save(Path(job["tag"]), {"epoch": 0, "global_step": job["steps"]})
    res = rank.last_step()
    if dp_rank == 0:
        res["train_losses"] = losses
    return res


def resume(job: dict, dp_rank: int, dp: int) -> dict:
    """A fresh run (different init: a load that misses a tensor shows) that
    loads the tag as NxD does and trains one step."""
    rank = Rank(job, dp_rank, dp, seed=job["seed"] + 1000)
    user_content = rank.load(Path(job["tag"]))
    res = rank.last_step()
    if dp_rank == 0:
        res["user_content"] = user_content
    return res
