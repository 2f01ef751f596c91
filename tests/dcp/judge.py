"""The judgements, as functions that raise AssertionError naming what is
wrong (the tests call them on the folder under test; test_harness.py calls
them on deliberately broken folders and expects them to raise).

(a) `judge_dcp_load`: torch.distributed.checkpoint.load in this process into
    a state dict shaped like TorchTitan's (its Transformer's state_dict, the
    flattened get_optimizer_state_dict of its AdamW, the LR scheduler's and
    the train state's): every tensor bitwise, every param_groups / scheduler
    / train_state value equal in type and value.
(b) `judge_titan_report`: what TorchTitan's CheckpointManager loaded (in a
    1- or 2-process gloo group, FSDP2 with 2; titan_worker.py), as full
    tensors, and the parameters after one AdamW step (c).
(c) `judge_step`: one AdamW step with fixed gradients after loading the
    folder the way CheckpointManager.dcp_load does (dcp.load of TorchTitan's
    Stateful optimizer and scheduler containers, the model's tensors in
    place), against a plain torch.optim.AdamW continued from expected.py's
    state. Both run torch's for-loop AdamW on CPU (the folder's
    foreach=None and fused=None select it, and the reference uses the same
    values), the same float32 operations in the same order on the same
    inputs: the comparison is bitwise, no tolerance.
(d) `judge_metadata`: the folder's `.metadata` against a folder TorchTitan's
    own CheckpointManager saved for the same model (its `dataloader` entry
    aside): the same keys, kinds (tensor or bytes), tensor properties
    (dtype, layout, requires_grad, memory_format, pin_memory), sizes and
    planner paths, nothing more; chunks that tile each tensor; every item
    stored in a `.distcp` file of the folder, and no other file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import BytesStorageMetadata, MetadataIndex, TensorStorageMetadata
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_optimizer_state_dict,
                                                     set_optimizer_state_dict)

import consumers
from expected import Expected, titan_order

# What a converter may leave in OUT besides the DCP files (ShardFS's own
# record of a convert, as in its other outputs).
OWN_RECORD = ".shardfs"


# ---------------------------------------------------------------------------
# comparisons


def assert_bitwise(got, want: torch.Tensor, name: str) -> None:
    assert isinstance(got, torch.Tensor), f"{name}: a {type(got).__name__}, not a tensor"
    assert got.dtype == want.dtype, f"{name}: dtype {got.dtype}, want {want.dtype}"
    assert tuple(got.shape) == tuple(want.shape), f"{name}: shape {tuple(got.shape)}, want {tuple(want.shape)}"
    g, w = got.detach().contiguous().reshape(-1), want.detach().contiguous().reshape(-1)
    if g.numel() == 0:
        return
    same = g.view(torch.uint8).reshape(g.numel(), -1) == w.view(torch.uint8).reshape(w.numel(), -1)
    bad = (~same.all(dim=1)).nonzero().flatten()
    if bad.numel():
        i = int(bad[0])
        where = list(torch.unravel_index(torch.tensor(i), tuple(want.shape))) if want.dim() else []
        raise AssertionError(
            f"{name}: {bad.numel()} of {g.numel()} elements differ; first at {[int(x) for x in where]}: "
            f"got {g[i].item()!r}, want {w[i].item()!r}")


def assert_value(got, want, name: str) -> None:
    """Equal type and value (a tuple is not a list, 1 is not 1.0)."""
    assert type(got) is type(want), f"{name}: {got!r} ({type(got).__name__}), want {want!r} ({type(want).__name__})"
    if isinstance(want, (list, tuple)):
        assert len(got) == len(want), f"{name}: {got!r}, want {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_value(g, w, f"{name}[{i}]")
    elif isinstance(want, torch.Tensor):
        assert_bitwise(got, want, name)
    else:
        assert got == want, f"{name}: {got!r}, want {want!r}"


def _load(state_dict: dict, out: Path, what: str) -> None:
    try:
        dcp.load(state_dict, checkpoint_id=str(out))
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f"{what}: dcp.load failed: {type(e).__name__}: {e}") from e
    except BaseException as e:  # CheckpointException derives from BaseException
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        raise AssertionError(f"{what}: dcp.load failed: {type(e).__name__}: {e}") from None


# ---------------------------------------------------------------------------
# (a)


def _scheduler_state(lrs) -> dict:
    """The scheduler's state_dict without `lr_lambdas`: TorchTitan's is [{}]
    (a functools.partial's empty __dict__), which DCP flattens to nothing."""
    return {k: v for k, v in lrs.state_dict().items() if k != "lr_lambdas"}


def titan_shaped_state_dict(cfg: dict, tt=None) -> dict:
    """What TorchTitan's CheckpointManager hands dcp.load (model flattened to
    the top level, the optimizer as get_optimizer_state_dict(...,
    flatten_optimizer_state_dict=True) gives it), with the real Transformer
    and AdamW when `tt` is TorchTitan, else a plain module of the same names."""
    model = consumers.build_model(cfg, tt)
    opt = consumers.build_optimizer(model, tt)
    lrs = consumers.build_lr_scheduler(opt, tt)
    inner = opt.optimizers[0] if tt else opt
    osd = get_optimizer_state_dict(model, inner, options=StateDictOptions(flatten_optimizer_state_dict=True))
    sched = _scheduler_state(lrs)
    sd = {"train_state": consumers.TrainState().state_dict(), "optimizer": osd, "lr_scheduler": sched}
    sd.update(model.state_dict())
    return sd


def judge_dcp_load(out: Path, e: Expected, tt=None) -> None:
    sd = titan_shaped_state_dict(e.cfg, tt)
    opt_keys = set(sd["optimizer"])
    want_keys = {f"state.{f}.{k}" for f in e.params for k in ("step", "exp_avg", "exp_avg_sq")}
    want_keys |= {f"param_groups.{f}.{k}" for f in e.params for k in e.param_group}
    assert opt_keys == want_keys, (
        f"the live optimizer's state dict keys are not expected.py's (torch changed?): "
        f"{sorted(opt_keys ^ want_keys)[:6]}")
    _load(sd, out, "dcp.load into a TorchTitan-shaped state dict")
    for fqn in titan_order(e.cfg):
        assert_bitwise(sd[fqn], e.params[fqn], fqn)
    for fqn in titan_order(e.cfg):
        for k, want in e.state(fqn).items():
            assert_bitwise(sd["optimizer"][f"state.{fqn}.{k}"], want, f"optimizer.state.{fqn}.{k}")
    for fqn in titan_order(e.cfg):
        for k, want in e.param_group.items():
            assert_value(sd["optimizer"][f"param_groups.{fqn}.{k}"], want, f"optimizer.param_groups.{fqn}.{k}")
    for k, want in e.lr_scheduler.items():
        assert_value(sd["lr_scheduler"][k], want, f"lr_scheduler.{k}")
    for k, want in e.train_state.items():
        assert_value(sd["train_state"][k], want, f"train_state.{k}")


# ---------------------------------------------------------------------------
# (c) in this process, and (b) + (c) from a worker's report


def load_for_training(out: Path, cfg: dict, tt=None):
    """(model, optimizer, scheduler, train state) loaded from `out` as
    CheckpointManager.dcp_load loads them: dcp.load of {train_state,
    optimizer, lr_scheduler: Stateful, model tensors at the top level}.
    Without TorchTitan, a plain module and AdamW: the flattened optimizer
    state dict is loaded, then set_optimizer_state_dict (what TorchTitan's
    OptimizersContainer.load_state_dict does)."""
    model = consumers.build_model(cfg, tt)
    opt = consumers.build_optimizer(model, tt)
    lrs = consumers.build_lr_scheduler(opt, tt)
    ts = consumers.TrainState()
    if tt:
        states = {"train_state": ts, "optimizer": opt, "lr_scheduler": lrs}
        states.update(model.state_dict())
        _load(states, out, "dcp.load of TorchTitan's Stateful containers")
    else:
        options = StateDictOptions(flatten_optimizer_state_dict=True)
        sd = {"train_state": ts.state_dict(), "optimizer": get_optimizer_state_dict(model, opt, options=options),
              "lr_scheduler": _scheduler_state(lrs)}
        sd.update(model.state_dict())
        _load(sd, out, "dcp.load into a plain module's state dict")
        set_optimizer_state_dict(model, opt, sd["optimizer"], options=options)
        lrs.load_state_dict({**sd["lr_scheduler"], "lr_lambdas": [None]})
        ts.load_state_dict(sd["train_state"])
    return model, opt, lrs, ts


def judge_stepped(stepped: dict, reference: dict, what: str) -> None:
    assert sorted(stepped) == sorted(reference), f"{what}: parameters {sorted(set(stepped) ^ set(reference))}"
    for fqn, want in reference.items():
        assert_bitwise(stepped[fqn], want, f"{what}: {fqn} after one AdamW step")


def judge_step(out: Path, e: Expected, reference: dict, tt=None) -> None:
    model, opt, _, _ = load_for_training(out, e.cfg, tt)
    consumers.set_fixed_grads(model)
    opt.step()
    judge_stepped({fqn: p.detach() for fqn, p in model.named_parameters()}, reference,
                  "TorchTitan's AdamW" if tt else "torch AdamW (plain module)")


def judge_titan_report(rep: dict, e: Expected, reference: Optional[dict], what: str) -> None:
    """(b): what the CheckpointManager loaded; (c): the step after it."""
    for fqn in titan_order(e.cfg):
        assert_bitwise(rep["params"][fqn], e.params[fqn], f"{what}: {fqn}")
    for fqn in titan_order(e.cfg):
        assert fqn in rep["state"], f"{what}: no optimizer state for {fqn}"
        got = rep["state"][fqn]
        assert sorted(got) == ["exp_avg", "exp_avg_sq", "step"], f"{what}: optimizer state of {fqn} has {sorted(got)}"
        for k, want in e.state(fqn).items():
            assert_bitwise(got[k], want, f"{what}: optimizer.state.{fqn}.{k}")
    assert len(rep["param_groups"]) == 1, f"{what}: {len(rep['param_groups'])} param groups, TorchTitan has 1"
    group = rep["param_groups"][0]
    assert sorted(group) == sorted(e.param_group), f"{what}: param group keys {sorted(set(group) ^ set(e.param_group))}"
    for k, want in e.param_group.items():
        assert_value(group[k], want, f"{what}: the optimizer's param group {k}")
    for i, sched in enumerate(rep["lr_scheduler"]):
        for k, want in e.lr_scheduler.items():
            assert_value(sched[k], want, f"{what}: lr scheduler {i} {k}")
    for k, want in e.train_state.items():
        assert_value(rep["train_state"][k], want, f"{what}: train_state.{k}")
    if reference is not None:
        judge_stepped(rep["stepped"], reference, what)


# ---------------------------------------------------------------------------
# (d)


def read_metadata(folder: Path):
    return FileSystemReader(str(folder)).read_metadata()


def describe(md) -> dict:
    """fqn -> what a load relies on: kind, then for a tensor its properties and size."""
    out = {}
    for fqn, m in md.state_dict_metadata.items():
        if isinstance(m, TensorStorageMetadata):
            p = m.properties
            out[fqn] = ("tensor", p.dtype, p.layout, p.requires_grad, p.memory_format, p.pin_memory, tuple(m.size))
        elif isinstance(m, BytesStorageMetadata):
            out[fqn] = ("bytes",)
        else:
            out[fqn] = (type(m).__name__,)
    return out


def _is_dataloader(fqn: str) -> bool:
    return fqn == "dataloader" or fqn.startswith("dataloader.")


def judge_metadata(out: Path, yardstick: Path, shards: Optional[int] = None) -> None:
    out = Path(out)
    assert (out / ".metadata").is_file(), f"{out} has no .metadata"
    try:
        md = read_metadata(out)
    except Exception as e:  # noqa: BLE001
        raise AssertionError(f".metadata does not load: {type(e).__name__}: {e}") from e
    ref = read_metadata(yardstick)
    got = describe(md)
    want = {k: v for k, v in describe(ref).items() if not _is_dataloader(k)}
    missing = [k for k in want if k not in got]
    extra = [k for k in got if k not in want]
    assert not missing and not extra, (
        f".metadata keys differ from TorchTitan's: missing {missing[:8]}{' ...' if len(missing) > 8 else ''}, "
        f"extra {extra[:8]}{' ...' if len(extra) > 8 else ''}")
    for k, w in want.items():
        g = got[k]
        if g[0] != w[0]:
            raise AssertionError(f".metadata {k}: a {g[0]} item, TorchTitan saves a {w[0]} item")
        if w[0] == "tensor":
            names = ("dtype", "layout", "requires_grad", "memory_format", "pin_memory", "size")
            for name, a, b in zip(names, g[1:], w[1:]):
                assert a == b, f".metadata {k}: {name} {a}, TorchTitan saves {b}"
    pd_got, pd_want = md.planner_data or {}, ref.planner_data or {}
    for k in want:
        assert pd_got.get(k) == pd_want.get(k), (
            f".metadata planner_data[{k!r}]: {pd_got.get(k)!r}, TorchTitan's {pd_want.get(k)!r}")
    assert md.version == ref.version, f".metadata version {md.version!r}, TorchTitan's {ref.version!r}"
    # chunks tile each tensor, each stored somewhere in the folder
    files = set()
    storage = md.storage_data
    for k, m in md.state_dict_metadata.items():
        if isinstance(m, TensorStorageMetadata):
            size = tuple(m.size)
            cover = torch.zeros(size, dtype=torch.int32)
            for c in m.chunks:
                offs, sizes = tuple(c.offsets), tuple(c.sizes)
                assert len(offs) == len(size) and all(o >= 0 and o + s <= n for o, s, n in zip(offs, sizes, size)), (
                    f".metadata {k}: chunk at {offs} of {sizes} outside {size}")
                view = cover
                for dim, (o, s) in enumerate(zip(offs, sizes)):
                    view = view.narrow(dim, o, s)
                view += 1
                info = storage.get(MetadataIndex(k, c.offsets))
                assert info is not None, f".metadata {k}: no storage entry for the chunk at {offs}"
                files.add(info.relative_path)
            assert bool((cover == 1).all()), f".metadata {k}: chunks do not tile {size} exactly once"
        else:
            info = storage.get(MetadataIndex(k))
            assert info is not None, f".metadata {k}: no storage entry"
            files.add(info.relative_path)
    for f in sorted(files):
        assert f.endswith(".distcp") and "/" not in f, (
            f".metadata stores items in {f!r}, not a .distcp file of the folder")
        assert (out / f).is_file(), f".metadata stores items in {f}, which is not in the folder"
    present = {p.name for p in out.iterdir()} - {".metadata", OWN_RECORD}
    assert present == files, f"files in the folder besides .metadata: {sorted(present)}, .metadata uses {sorted(files)}"
    if shards is not None:
        assert len(files) == shards, f"{len(files)} .distcp files, --dcp-shards asked for {shards}"
    # each stored item's bytes lie within its file
    for idx, info in storage.items():
        n = (out / info.relative_path).stat().st_size
        assert info.offset >= 0 and info.offset + info.length <= n, (
            f"{idx.fqn}: bytes {info.offset}..{info.offset + info.length} beyond {info.relative_path} ({n} bytes)")

