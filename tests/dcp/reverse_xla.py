"""Resuming a converted TorchTitan checkpoint in NxD's real ZeRO-1 optimizer
(test_reverse.py, part 2), run with `.venv-xla` (torch_xla 2.9):

    PJRT_DEVICE=CPU CPU_NUM_DEVICES=<dp> .venv-xla/bin/python reverse_xla.py JOBS.json

It reuses tests/zero1's simulated NxD run unchanged (nxd_run.Rank: the
tiny Llama's rank pieces, one torch_xla ZeroRedundancyOptimizer per (tp, pp)
over the DP ranks, NxD's load steps from nxd_io.py, the host collectives;
worker.py's per-job barriers), with one job of its own, `fixed_step`:

1. a fresh run in the tag's layout (seed + 1000: whatever a load misses
   shows) loads the tag, in NxD's load_checkpoint order (`"order": "nxd"`,
   nxd_run.Rank.load without the scheduler: ShardFS writes no
   scheduler.pt and says to resume with scheduler=None) or the model before
   the optimizer (`"order": "model-first"`, as older NxD releases load);
2. snapshot: parameters, fp32 master shards, and the optimizer's loaded
   state (exp_avg, exp_avg_sq, step), as Hugging Face tensors;
3. one optimizer step with a FIXED gradient (job["grad"]: Hugging Face
   tensors; every rank piece holding an element gets the element's whole
   gradient, as NxD's all-reduce of replicated parameters gives it). DP rank
   0 holds DP x the gradient and the other ranks 0, so ZeRO-1's
   reduce-scatter (sum, then x 1/DP) gives exactly the gradient, in fp32 and
   bf16 alike (powers of two); no scheduler step;
4. snapshot again.

DP rank 0 writes {"params_before", "masters_before", "state_before",
"params", "masters", "lrs"} to job["out"].
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve().parent
ZERO1 = HERE.parent / "zero1"
for _p in (ZERO1, HERE.parent / "compat"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import worker  # noqa: E402  (tests/zero1/worker.py: sets XLA's optimisation level, per-job barriers)

import torch  # noqa: E402


def _load(rank, tag: Path, order: str) -> None:
    import nxd_io

    if order == "nxd":
        # nxd_run.Rank.load, scheduler=None (no scheduler.pt in the tag)
        rank.load_models(tag, ignore_tensor_data=rank.load_optimizers(tag))
    elif order == "model-first":
        rank.load_models(tag, ignore_tensor_data=False)
        rank.load_optimizers(tag)
    else:
        raise ValueError(order)
    nxd_io.barrier()


def _optimizer_state(rank) -> dict:
    """Collective: the loaded exp_avg / exp_avg_sq (ZeRO-1 shards of every DP
    rank joined, padding trimmed) as Hugging Face tensors, and the steps."""
    import decay_groups
    import host_collectives as hc

    mine = {}
    for r, o in rank.opts.items():
        params = [p for g in o.base_optimizer.param_groups for p in g["params"]]
        st = o.base_optimizer.state
        mine[r] = [{k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in st[p].items()}
                   for p in params]
    everyone = hc.hub().exchange(tuple(range(rank.dp)), rank.dp_rank, mine, lambda values, me: values)
    if rank.dp_rank != 0:
        return {}
    out, steps = {}, set()
    for kind in ("exp_avg", "exp_avg_sq"):
        pieces = {}
        for r, keys in rank.map.keys.items():
            names = decay_groups.group_order(keys)
            full = {k: torch.cat([of[r][i][kind] for of in everyone])[: keys[k][0]] for i, k in enumerate(names)}
            pieces[r] = OrderedDict((k, full[k]) for k in keys)
        out[kind] = rank.map.assemble(pieces)
    for of in everyone:
        for states in of.values():
            for s in states:
                steps.add(repr(s["step"]) if not isinstance(s["step"], int) else s["step"])
    out["steps"] = sorted(steps, key=repr)
    return out


def fixed_step(job: dict, dp_rank: int, dp: int) -> dict:
    import torch_xla

    import nxd_run
    from pieces import trainer_state

    rank = nxd_run.Rank(job, dp_rank, dp, seed=job["seed"] + 1000)
    _load(rank, Path(job["tag"]), job["order"])
    before = rank.snapshot()
    state_before = _optimizer_state(rank)
    grad = torch.load(job["grad"], weights_only=True)
    for o in rank.opts.values():
        o.zero_grad(set_to_none=True)
    for r, m in rank.models.items():
        pieces = trainer_state(grad, rank.d, rank.lay, *r)
        for k, p in m.named_parameters():
            g = pieces[k].to(p.dtype) * dp if dp_rank == 0 else torch.zeros(p.shape, dtype=p.dtype)
            p.grad = g.to(rank.device)
    torch_xla.sync()
    lrs = [g["lr"] for g in rank.opts[(0, 0)].param_groups]
    for o in rank.opts.values():
        o.step()
    torch_xla.sync()
    after = rank.snapshot()
    if dp_rank != 0:
        return {}
    return {"params_before": before["params"], "masters_before": before["masters"], "state_before": state_before,
            "params": after["params"], "masters": after["masters"], "lrs": lrs,
            "replica_spread": after["replica_spread"]}


JOBS = {"fixed_step": fixed_step}


def _run(job: dict, rank: int, world: int):
    return JOBS[job["kind"]](job, rank, world)


def _rank_main(index: int, jobs_file: str) -> None:
    """worker._rank_main, with this file's job kinds."""
    worker.run_jobs(jobs_file, _run)


def main() -> None:
    import torch_xla.distributed.xla_multiprocessing as xmp

    xmp.spawn(_rank_main, args=(sys.argv[1],))


if __name__ == "__main__":
    main()
