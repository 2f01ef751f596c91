"""NxD checkpoint tags written from Python the way NxD's trainer and
converter write them (as sources for `shardfs convert TAG ... --format hf`),
and byte-level rewrites of torch.save files for the bad-input tests.

Each rank's tensors come from reference.py's `rank_state` (the forward
layout of docs/formats/nxd-layout.md); what differs from ShardFS's own output is only how
they are stored:

- plain files as the trainer saves `model.state_dict()`: an `OrderedDict`
  with `_metadata` (built here from a real nn.Module tree), values
  nn.Parameter, q/k/v of a layer as views into one storage, `o_proj` stored
  column-major (as NxD's converter leaves it under qkv_linear), slices of a
  larger storage (a view of the whole, uncut tensor, as a converter that
  saves `narrow`ed slices writes it);
- the older naming `model/tp_rank_YY_pp_rank_ZZ/checkpoint.pt`;
- xser as the trainer writes it (docs/formats/xser.md): P holds TensorReference
  objects, P.info.pt their dtype and shape, P.tensors/tensor_<tid>.pt each
  tensor alone;
- next to `model/`, what a trainer's tag also holds and a reader must
  ignore: `optim/`, `scheduler.pt`, `user_content.pt`, `done`, `checkpoint`.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

import torch

from reference import Dims, Layout, rank_file_name, rank_state


# ---------------------------------------------------------------------------
# torch_xla's TensorReference (stand-in, as in test_xser.py)


def tensor_reference_class():
    """torch_xla.utils.serialization.TensorReference: torch_xla's own where
    it is installed (tests/zero1's venv), the stand-in class of test_xser.py
    when it is loaded, else one registered here under that module name
    (pickles as GLOBAL 'torch_xla.utils.serialization TensorReference',
    NEWOBJ, BUILD {'tid': n})."""
    try:
        from torch_xla.utils.serialization import TensorReference
        return TensorReference
    except ImportError:
        pass
    for name in ("torch_xla", "torch_xla.utils", "torch_xla.utils.serialization"):
        sys.modules.setdefault(name, types.ModuleType(name))
    mod = sys.modules["torch_xla.utils.serialization"]
    cls = getattr(mod, "TensorReference", None)
    if cls is None:
        class TensorReference:  # noqa: D401 - a stand-in
            def __init__(self, tid):
                self.tid = tid

        TensorReference.__module__ = "torch_xla.utils.serialization"
        TensorReference.__qualname__ = "TensorReference"
        mod.TensorReference = TensorReference
        cls = TensorReference
    return cls


# ---------------------------------------------------------------------------
# rank states as the trainer holds them


def _module_tree_state_dict(flat: "OrderedDict[str, torch.Tensor]") -> "OrderedDict[str, torch.Tensor]":
    """An nn.Module tree whose parameters have exactly the keys of `flat`
    (registered in that order), as nn.Parameter; its state_dict(keep_vars=True):
    an OrderedDict with `_metadata`, values the Parameters themselves."""
    root = torch.nn.Module()
    for key, t in flat.items():
        *path, leaf = key.split(".")
        mod = root
        for part in path:
            child = mod._modules.get(part)
            if child is None:
                child = torch.nn.Module()
                mod.add_module(part, child)
            mod = child
        mod.register_parameter(leaf, torch.nn.Parameter(t, requires_grad=True))
    sd = root.state_dict(keep_vars=True)
    assert list(sd) == list(flat), "module tree reordered the keys"
    return sd


def trainer_state(st: "OrderedDict[str, torch.Tensor]", *, parameters: bool, shared_qkv: bool,
                  o_colmajor: bool, slice_of_whole: Optional[dict] = None) -> "OrderedDict[str, torch.Tensor]":
    """The rank's tensors (values of `st`) stored the trainer's way:
    - shared_qkv: per layer, weight_q/k/v (or q/k/v_proj) as views into one
      storage holding [q; k; v];
    - o_colmajor: o_proj.weight column-major (t.t().contiguous().t());
    - slice_of_whole: {key: (whole tensor, dim, start)}: the value is
      whole.narrow(dim, start, n), a view into the uncut tensor's storage;
    - parameters: an OrderedDict with _metadata (from an nn.Module tree),
      values nn.Parameter; else a plain dict of tensors.
    Values are equal to `st`'s."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    keys = list(st)
    done = set()
    for k in keys:
        if k in done:
            continue
        trio = None
        for suffix in ("qkv_proj.weight_q", "q_proj.weight"):
            if k.endswith(suffix):
                stem = k[: -len(suffix)]
                names = ([stem + "qkv_proj.weight_" + x for x in "qkv"] if suffix.startswith("qkv")
                         else [stem + x + "_proj.weight" for x in "qkv"])
                if all(n in st for n in names):
                    trio = names
        if shared_qkv and trio is not None:
            big = torch.cat([st[n] for n in trio], dim=0)
            off = 0
            for n in trio:
                rows = st[n].shape[0]
                out[n] = big.narrow(0, off, rows)
                off += rows
                done.add(n)
            continue
        v = st[k]
        if slice_of_whole and k in slice_of_whole:
            whole, dim, start = slice_of_whole[k]
            v = whole.narrow(dim, start, st[k].shape[dim])
            assert torch.equal(v, st[k]), k
        if o_colmajor and k.endswith("self_attn.o_proj.weight"):
            v = v.t().contiguous().t()
            assert v.stride() == (1, v.shape[0])
        out[k] = v
        done.add(k)
    # keep the rank file's own key order
    out = OrderedDict((k, out[k]) for k in keys)
    for k in keys:
        assert torch.equal(out[k], st[k]) and out[k].dtype == st[k].dtype, k
    if parameters:
        return _module_tree_state_dict(out)
    return dict(out)


def rank_states(sd, cfg: dict, lay: Layout) -> dict:
    """{(tp, pp): reference rank_state}."""
    d = Dims.from_config(cfg)
    return {(t, p): rank_state(sd, d, lay, t, p) for t in range(lay.tp) for p in range(lay.pp)}


# ---------------------------------------------------------------------------
# writing a tag


def old_rank_path(tp: int, pp: int) -> str:
    return f"model/tp_rank_{tp:02d}_pp_rank_{pp:02d}/checkpoint.pt"


def new_rank_path(tp: int, pp: int) -> str:
    return "model/" + rank_file_name(tp, pp)


def write_plain_tag(tag: Path, states: dict, *, old_naming: bool = False, empty_tensors_dirs: bool = False,
                    store: Callable = lambda key, st: dict(st)) -> list[str]:
    """torch.save of store((tp, pp), rank state) per rank; -> paths written.
    empty_tensors_dirs: also an empty P.tensors/ folder per rank file, as
    NxD's offline converter leaves with --save_xser 1 on CPU tensors
    (docs/formats/xser.md): still a plain tag."""
    paths = []
    for (t, p), st in states.items():
        rel = old_rank_path(t, p) if old_naming else new_rank_path(t, p)
        path = tag / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(store((t, p), st), path)
        if empty_tensors_dirs:
            Path(f"{path}.tensors").mkdir()
        paths.append(rel)
    return paths


def write_xser_tag(tag: Path, states: dict) -> list[str]:
    """The trainer's xser layout (docs/formats/xser.md) for every rank."""
    ref_cls = tensor_reference_class()
    paths = []
    for (t, p), st in states.items():
        rel = new_rank_path(t, p)
        path = tag / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        refs = {}
        info = {}
        tdir = Path(f"{path}.tensors")
        tdir.mkdir(parents=True, exist_ok=True)
        for tid, (k, v) in enumerate(st.items()):
            refs[k] = ref_cls(tid)
            info[tid] = {"dtype": v.dtype, "shape": v.shape, "expert_model_parallel": False}
            torch.save(v.clone(), tdir / f"tensor_{tid}.pt")
        torch.save(refs, path)
        torch.save(info, f"{path}.info.pt")
        paths.append(rel)
    return paths


def add_trainer_extras(tag: Path, states: dict) -> list[str]:
    """What else a trainer's tag holds (never part of the model): optimizer
    state per rank under optim/, scheduler.pt, user_content.pt, and the
    `done` / `checkpoint` markers. -> paths written."""
    written = []
    (tag / "optim").mkdir(parents=True, exist_ok=True)
    for (t, p), st in states.items():
        # Adam-like state: step counts, exp_avg per parameter index, param groups
        opt = {
            "state": {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(v, dtype=torch.float32),
                          "exp_avg_sq": torch.ones_like(v, dtype=torch.float32)}
                      for i, v in enumerate(st.values())},
            "param_groups": [{"lr": 1e-4, "betas": (0.9, 0.95), "eps": 1e-8, "weight_decay": 0.1,
                              "params": list(range(len(st)))}],
        }
        rel = f"optim/dp_rank_00_tp_rank_{t:02d}_pp_rank_{p:02d}.pt"
        torch.save(opt, tag / rel)
        written.append(rel)
    torch.save({"last_epoch": 10, "base_lrs": [1e-4], "_step_count": 11}, tag / "scheduler.pt")
    torch.save({"batch_idx": 123, "note": "user content"}, tag / "user_content.pt")
    (tag / "done").write_bytes(b"")
    (tag / "checkpoint").write_text("step_10\n")
    written += ["scheduler.pt", "user_content.pt", "done", "checkpoint"]
    return written


# ---------------------------------------------------------------------------
# rewriting torch.save files


def pt_records(path: Path) -> list[tuple[str, bytes]]:
    """(name below the archive folder, bytes) of every record, in order."""
    with zipfile.ZipFile(path) as z:
        out = []
        for info in z.infolist():
            rel = info.filename.split("/", 1)[1]
            out.append((rel, z.read(info)))
    return out


def rewrite_pt(path: Path, edit_pkl: Callable[[bytes], bytes] = lambda b: b) -> None:
    """Rewrites a torch.save file in place with torch's own zip writer
    (same archive name, alignment and framing as torch.save), data.pkl
    replaced by edit_pkl(data.pkl). `version` and the serialization id are
    written by the writer itself."""
    recs = pt_records(path)
    scratch = path.parent / ".rewrite"
    scratch.mkdir(exist_ok=True)
    tmp = scratch / path.name  # same basename: same archive name
    w = torch._C.PyTorchFileWriter(str(tmp))
    for rel, data in recs:
        if rel in ("version", ".data/serialization_id"):
            continue
        if rel == "data.pkl":
            data = edit_pkl(data)
        w.write_record(rel, data, len(data))
    w.write_end_of_file()
    del w
    os.replace(tmp, path)
    shutil.rmtree(scratch)


def rewrite_deflated(path: Path) -> None:
    """The same records, every one compressed (ZIP_DEFLATED), by zipfile."""
    with zipfile.ZipFile(path) as z:
        recs = [(i.filename, z.read(i)) for i in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in recs:
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())
