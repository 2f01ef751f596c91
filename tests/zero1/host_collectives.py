"""Host implementations of the three XLA collectives torch_xla's
ZeroRedundancyOptimizer calls (xm.reduce_scatter, xm.all_gather,
xm.all_reduce), for DP ranks that are xmp.spawn threads of one process on
XLA:CPU.

Why: XLA:CPU pairs the ranks of a real collective only when every rank runs
the very same compiled graph; ranks that are threads compile concurrently,
and a compile race makes a rank's graph differ, after which the collective
waits forever ("Termination timeout for reduce scatter RendezvousKey ...").
So each rank copies its tensor to the host (`.cpu()`), deposits it, meets the
other ranks of its group at a threading.Barrier, computes the result (sum in
rank order, times `scale`; scatter or concatenate along the given dim), meets
them again (so that nobody overwrites a deposit still being read) and returns
the result on its own XLA device. These collectives only move gradients and
parameter shards between ranks; the optimizer's own code (sharding, padding,
state_dict, load_state_dict) stays torch_xla's.

`install()` replaces the functions on the torch_xla.core.xla_model module
object, which zero_redundancy_optimizer.py imports as `xm`. The barriers of
the job a thread runs come from `use(hub)` (thread-local), so that one job's
failure (an aborted barrier) cannot wedge the next job.
"""

from __future__ import annotations

import threading

import torch
import torch_xla.core.xla_model as xm
import torch_xla.runtime as xr

TIMEOUT_S = 300.0

_local = threading.local()


class Hub:
    """Barriers and deposit slots of one job, per replica group."""

    def __init__(self, world: int):
        self.world = world
        self._lock = threading.Lock()
        self._groups: dict = {}

    def group(self, members: tuple):
        with self._lock:
            g = self._groups.get(members)
            if g is None:
                g = (threading.Barrier(len(members), timeout=TIMEOUT_S), {})
                self._groups[members] = g
            return g

    def barrier(self, members: tuple = None):
        self.group(members or tuple(range(self.world)))[0].wait()

    def abort(self):
        with self._lock:
            groups = list(self._groups.values())
        for barrier, _ in groups:
            barrier.abort()

    def exchange(self, members: tuple, rank: int, value, compute):
        """Every member deposits `value`; returns compute(values in group
        order, my index in the group)."""
        barrier, slots = self.group(members)
        slots[rank] = value
        barrier.wait()
        result = compute([slots[r] for r in members], members.index(rank))
        barrier.wait()
        return result


def use(hub: Hub) -> None:
    _local.hub = hub


def hub() -> Hub:
    return _local.hub


def _members(groups) -> tuple:
    rank = xr.global_ordinal()
    if not groups:
        return tuple(range(xr.world_size()))
    for g in groups:
        if rank in g:
            return tuple(g)
    raise ValueError(f"rank {rank} in no group of {groups}")


def _sum(values):
    acc = values[0].clone()
    for v in values[1:]:
        acc += v
    return acc


def reduce_scatter(reduce_type, input, scale, scatter_dim, shard_count, groups=None,
                   output=None, pin_layout=True, channel_id=None, use_global_device_ids=None):
    assert reduce_type == xm.REDUCE_SUM, reduce_type
    assert isinstance(input, torch.Tensor) and output is None, "only the single-tensor form is used"
    members = _members(groups)
    assert shard_count == len(members), (shard_count, members)

    def compute(values, me):
        total = _sum(values) * scale
        return total.chunk(shard_count, dim=scatter_dim)[me].contiguous()

    return hub().exchange(members, xr.global_ordinal(), input.cpu(), compute).to(input.device)


def all_gather(value, dim=0, groups=None, output=None, pin_layout=True, channel_id=None,
               use_global_device_ids=None):
    assert isinstance(value, torch.Tensor) and output is None, "only the single-tensor form is used"
    members = _members(groups)

    def compute(values, me):
        return torch.cat(values, dim=dim)

    return hub().exchange(members, xr.global_ordinal(), value.cpu(), compute).to(value.device)


def all_reduce(reduce_type, inputs, scale=1.0, groups=None, pin_layout=True):
    """Tensor: returns the reduced tensor. List: reduces every tensor of the
    list in place and returns the list (as xm.all_reduce does)."""
    assert reduce_type == xm.REDUCE_SUM, reduce_type
    members = _members(groups)
    tensors = [inputs] if isinstance(inputs, torch.Tensor) else list(inputs)

    def compute(values, me):
        return [_sum([v[i] for v in values]) * scale for i in range(len(tensors))]

    reduced = hub().exchange(members, xr.global_ordinal(), [t.cpu() for t in tensors], compute)
    if isinstance(inputs, torch.Tensor):
        return reduced[0].to(inputs.device)
    for t, r in zip(tensors, reduced):
        t.copy_(r.to(t.device))
    return inputs


def install() -> None:
    xm.reduce_scatter = reduce_scatter
    xm.all_gather = all_gather
    xm.all_reduce = all_reduce
