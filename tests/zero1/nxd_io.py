"""The few steps of NxD's trainer/checkpoint.py that write and read a tag,
restated for the harness (neuronx_distributed is not importable here: it
needs Neuron-only modules). Each function names the NxD function it mirrors;
the tensor walks are torch_xla's own (xm.ToXlaTensorArena), as in NxD, so
that tuples and torch.Size become lists and a dict's subclass a plain dict
exactly as in a real tag.

Ranks: the caller is one DP rank (an xmp.spawn thread) holding every
(tp, pp) rank's model and optimizer; `xm.rendezvous` becomes a barrier of the
job's Hub, and "global rank 0" is DP rank 0.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch_xla
import torch_xla.core.xla_model as xm
import torch_xla.utils.serialization as xser

import host_collectives as hc


def rank_path(kind: str, dp: int, tp: int, pp: int) -> str:
    """_get_path: optimizer files carry the DP rank (ZeRO-1), model files dp 00."""
    return f"{kind}/dp_rank_{dp:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"


def move_all_tensor_to_cpu(data):
    """parallel_layers/utils.py move_all_tensor_to_cpu: XLA tensors -> CPU;
    the walk rewrites tuples (and torch.Size) as lists, dicts as dicts."""

    def convert_fn(tensors):
        torch_xla._XLAC._xla_sync_multi(tensors, devices=[], wait=True, sync_xla_data=False)
        return [t.to("cpu") for t in tensors]

    def select_fn(v):
        return isinstance(v, torch.Tensor) and v.device.type == "xla"

    return xm.ToXlaTensorArena(convert_fn, select_fn).transform(data)


class _InternalTensorReference:
    def __init__(self, tid, shape, dtype, expert_model_parallel):
        self.tid, self.shape, self.dtype = tid, shape, dtype
        self.expert_model_parallel = expert_model_parallel


def _assign_tensors_to_bins(tensors, bin_count):
    """_assign_tensors_to_bins: which DP rank writes which replicated tensor."""
    bins = [[] for _ in range(bin_count)]
    sizes = [0] * bin_count
    for i, size in sorted(((i, t.numel() * t.element_size()) for i, t in enumerate(tensors)),
                          key=lambda a: a[1]):
        b = sizes.index(min(sizes))
        bins[b].append(i)
        sizes[b] += size
    return bins


def _xser_save_data(path: str, state_dict, dp_rank: int, dp_size: int, grouped: bool,
                    ignore_tensor_data: bool):
    """_xser_save_data: every torch.Tensor (XLA or CPU) becomes a reference
    numbered in walk order, saved alone as path/tensor_<tid>.pt; replicated
    state (grouped) is written by the DP ranks in bins."""

    def convert_fn(tensors):
        torch_xla._XLAC._xla_sync_multi(tensors, devices=[], wait=True, sync_xla_data=False)
        mine = _assign_tensors_to_bins(tensors, dp_size)[dp_rank] if grouped else None
        out = []
        for i, t in enumerate(tensors):
            if (mine is None or i in mine) and not ignore_tensor_data:
                torch.save(t.cpu(), xser._get_tensor_file(path, i))
            out.append(_InternalTensorReference(i, t.shape, t.dtype, False))
        return out

    def select_fn(v):
        return isinstance(v, torch.Tensor)

    os.makedirs(path, exist_ok=True)
    return xm.ToXlaTensorArena(convert_fn, select_fn).transform(state_dict)


def _extract_tensor_info_and_update_state_dict(state_dict: dict, tensor_info: dict) -> None:
    """_extract_tensor_info_and_update_state_dict (dict values only, as NxD)."""
    for k, v in state_dict.items():
        if isinstance(v, _InternalTensorReference):
            tensor_info[v.tid] = {"dtype": v.dtype, "shape": v.shape,
                                  "expert_model_parallel": v.expert_model_parallel}
            state_dict[k] = xser.TensorReference(v.tid)
        if isinstance(v, dict):
            _extract_tensor_info_and_update_state_dict(v, tensor_info)


def save(ckpt, path: str, *, use_xser: bool, grouped: bool, dp_rank: int, dp_size: int,
         ignore_tensor_data: bool = False) -> None:
    """_save. grouped: the object is replicated over the DP group (the model);
    else every DP rank's object is its own (a ZeRO-1 optimizer)."""
    if use_xser:
        sd = _xser_save_data(xser._get_tensors_folder(path), ckpt, dp_rank, dp_size, grouped,
                             ignore_tensor_data)
        if not grouped or dp_rank == 0:
            info: dict = {}
            _extract_tensor_info_and_update_state_dict(sd, info)
            torch.save(sd, path)
            torch.save(info, path + ".info.pt")
        return
    if not grouped or dp_rank == 0:
        torch.save(move_all_tensor_to_cpu(ckpt), path)


def is_checkpoint_xser(tag: Path) -> bool:
    """FilesysCheckpointStorage.is_checkpoint_xser: a `*.tensors` entry in a
    folder of the tag."""
    return any(y.name.endswith(".tensors") for x in tag.iterdir() if x.is_dir() for y in x.iterdir())


def xser_load_data(path: str, *, grouped: bool, dp_rank: int, dp_size: int,
                   ignore_tensor_data: bool = False):
    """_xser_load_data. grouped (the model): tensor i is read by DP rank
    i % dp_size, the others start from zeros of the .info.pt dtype and shape,
    and an in-place all_reduce sums them (NxD's broadcast). With
    ignore_tensor_data no tensor file is read (NxD returns None for them)."""
    ref_data = torch.load(path, weights_only=False)
    ref_info = torch.load(path + ".info.pt", weights_only=False) if os.path.exists(path + ".info.pt") else None
    folder = xser._get_tensors_folder(path)
    device = torch_xla.device()

    def convert_fn(refs):
        out = [None] * len(refs)
        if ignore_tensor_data:
            if ref_info is None or any(ref_info[r.tid]["dtype"] is None for r in refs):
                raise RuntimeError("Error: cannot ignore tensor data when dtype was not given")
            return out
        for i, r in enumerate(refs):
            tensor_file = xser._get_tensor_file(folder, r.tid)
            if ref_info is not None and grouped:
                if i % dp_size == dp_rank:
                    loaded = torch.load(tensor_file, weights_only=False).to(device)
                else:
                    info = ref_info[r.tid]
                    loaded = torch.zeros(info["shape"], dtype=info["dtype"], device=device)
                xm.all_reduce(xm.REDUCE_SUM, [loaded])
            else:
                loaded = torch.load(tensor_file, weights_only=False).to(device)
            out[i] = loaded
        if grouped:
            torch_xla.sync()
        return out

    def select_fn(v):
        return isinstance(v, xser.TensorReference)

    return xm.ToXlaTensorArena(convert_fn, select_fn).transform(ref_data)


def move_step_to_cpu(ckpt, key=None):
    """_move_step_to_cpu: xser loads every tensor onto the device; `step`
    tensors go back to the CPU, where torch.optim keeps them."""
    if key == "step" and isinstance(ckpt, torch.Tensor):
        return ckpt.cpu()
    if isinstance(ckpt, dict):
        return {k: move_step_to_cpu(v, k) for k, v in ckpt.items()}
    return ckpt


def write_text(path: Path, text: str = "1") -> None:
    path.write_text(text)


def barrier() -> None:
    """xm.rendezvous between the DP ranks of the job."""
    hc.hub().barrier()
