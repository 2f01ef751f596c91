#!/usr/bin/env python3
"""`torch.distributed.checkpoint.load` of a DCP folder in N processes, as an
FSDP job resuming from it loads it: seconds and bytes.

N processes (torch.multiprocessing spawn, gloo, MASTER_ADDR 127.0.0.1) over
a 1-D CPU DeviceMesh. Each builds the state dict from the folder's
`.metadata` (read with pickle: keys, shapes, dtypes, nesting): every tensor
with a dim 0 as a DTensor sharded on dim 0 (`DTensor.from_local` of the rows
torch.chunk gives the rank, FSDP2's cut; no full tensor is ever allocated),
0-dim tensors as plain tensors and bytes entries as plain values, as
TorchTitan's state dict holds them. Then barrier, `dcp.load`, barrier: the
time between is what is reported. With 2 processes each holds half of the
state.

Prints one JSON line: seconds, the state's tensor bytes, what the ranks read
(/proc/self/io rchar during the load, summed) and each rank's VmHWM.

    python bench/dcp_load.py FOLDER [--procs 2]
"""
import argparse
import json
import os
import pickle
import socket
import time
import warnings


def vm_hwm_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    return 0.0


def rchar():
    with open("/proc/self/io") as f:
        for line in f:
            if line.startswith("rchar"):
                return int(line.split()[1])
    return 0


def set_path(sd, path, value):
    for p in path[:-1]:
        sd = sd.setdefault(p, {})
    sd[path[-1]] = value


def build_state_dict(folder, rank, procs, mesh):
    """The state dict of rank `rank` of `procs` for the folder's keys: (state dict, its tensor bytes, all tensor bytes)."""
    import torch
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    from torch.distributed.tensor import DTensor, Shard

    with open(os.path.join(folder, ".metadata"), "rb") as f:
        md = pickle.load(f)
    sd, local_bytes, total_bytes = {}, 0, 0
    for fqn, m in md.state_dict_metadata.items():
        path = md.planner_data.get(fqn, (fqn,)) if md.planner_data else (fqn,)
        if not isinstance(m, TensorStorageMetadata):
            set_path(sd, path, None)  # a Python value: dcp.load replaces it
            continue
        size, dtype = tuple(m.size), m.properties.dtype
        itemsize = torch.empty((), dtype=dtype).element_size()
        total_bytes += torch.Size(size).numel() * itemsize
        if not size:
            value = torch.zeros((), dtype=dtype)
            local_bytes += itemsize
        else:
            rows = size[0]
            per = -(-rows // procs)  # torch.chunk's rows per rank
            start, end = min(rank * per, rows), min((rank + 1) * per, rows)
            local = torch.empty((end - start, *size[1:]), dtype=dtype)
            local_bytes += local.numel() * itemsize
            stride, acc = [], 1
            for s in reversed(size):
                stride.insert(0, acc)
                acc *= s
            value = DTensor.from_local(local, mesh, [Shard(0)], run_check=False, shape=torch.Size(size), stride=tuple(stride))
        set_path(sd, path, value)
    return sd, local_bytes, total_bytes


def worker(rank, procs, folder, port, result_path):
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.device_mesh import init_device_mesh

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=procs)
    try:
        mesh = init_device_mesh("cpu", (procs,))
        sd, local_bytes, total_bytes = build_state_dict(folder, rank, procs, mesh)
        dist.barrier()
        read0, start = rchar(), time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.load(sd, checkpoint_id=folder)
        dist.barrier()
        seconds = time.monotonic() - start
        mine = {"rank": rank, "read": rchar() - read0, "local_bytes": local_bytes, "hwm_mb": vm_hwm_mb()}
        every = [None] * procs
        dist.all_gather_object(every, mine)
        if rank == 0:
            out = {"folder": folder, "procs": procs, "seconds": seconds, "bytes": total_bytes,
                   "gb_per_s": total_bytes / seconds / 1e9, "read": sum(e["read"] for e in every),
                   "local_bytes": [e["local_bytes"] for e in every], "hwm_mb": [round(e["hwm_mb"]) for e in every]}
            with open(result_path, "w") as f:
                json.dump(out, f)
    finally:
        dist.destroy_process_group()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder")
    ap.add_argument("--procs", type=int, default=2)
    a = ap.parse_args()
    import tempfile

    import torch.multiprocessing as mp

    with tempfile.NamedTemporaryFile("r", suffix=".json") as result:
        mp.spawn(worker, args=(a.procs, os.path.abspath(a.folder), free_port(), result.name), nprocs=a.procs, join=True)
        print(result.read().strip())


if __name__ == "__main__":
    main()
