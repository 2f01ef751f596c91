"""Resume a training run in another layout, optimizer included.

Tag A is written by a simulated NxD run (nxd_run.py) with torch_xla's real
ZeroRedundancyOptimizer; a resharder turns it into tag B; a fresh run in
layout B loads tag B as NxD's load_checkpoint does and trains one step; that
step must match continuing in layout A (compare.py states the tolerances).
Resharders: `reference` (reference_zero1.py) and `shardfs`
($SHARDFS_BIN convert; skipped when SHARDFS_BIN is unset, failed when it is
set and the command fails).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import compare
import decay_groups
import optimizers
import reference_zero1 as rz
import tiny_llama
from cases import CASES, RUNS, SEED, STEPS
from lab import JobFailed, shardfs_bin
from pieces import PieceMap, ranks, trainer_state
from reference import Layout

RESHARDERS = ["reference", "shardfs"]


def ids(x):
    return x.id if hasattr(x, "id") else x.name


def need(fn, *args):
    """fn(*args), or fail the test with the job's own error."""
    try:
        return fn(*args)
    except JobFailed as e:
        message = str(e)
    pytest.fail(message, pytrace=False)


def need_shardfs():
    if not shardfs_bin():
        pytest.skip("SHARDFS_BIN is not set: the shardfs resharder is not judged")


# ---------------------------------------------------------------------------
# the harness's own maps (no XLA)


MAPS = sorted({(r.model, r.layout) for r in RUNS} | {(c.a.model, c.layout) for c in CASES}, key=repr)


@pytest.mark.parametrize("model,lay", MAPS, ids=[f"{m}-{lay!r}" for m, lay in MAPS])
def test_piece_maps_agree(model: str, lay: Layout):
    """The trainer's assembly (pieces.PieceMap) and the reference resharder's
    merge are written independently: on pieces holding their own positions,
    both must take the same (first) holder of every Hugging Face element, and
    cutting then merging real tensors must give them back (in their dtypes:
    a bf16 model's float32 norms too)."""
    d = tiny_llama.dims(tiny_llama.MODELS[model])
    pmap = PieceMap(d, lay)
    positions, off = {}, 0
    for r, keys in pmap.keys.items():
        positions[r] = {}
        for k, shape in keys.items():
            n = torch.Size(shape).numel()
            positions[r][k] = torch.arange(off, off + n, dtype=torch.float64).reshape(shape)
            off += n
    merged = rz.merge(positions, d, lay)
    assert torch.equal(torch.cat([v.reshape(-1) for v in merged.values()]), pmap.first.double())
    sd = tiny_llama.init_state(d, 7, torch.float32)
    pieces = {r: trainer_state(sd, d, lay, *r) for r in ranks(lay)}
    for k, v in rz.merge(pieces, d, lay).items():
        assert torch.equal(v, sd[k]), k
    for k, v in pmap.assemble(pieces).items():
        assert torch.equal(v, sd[k]), k
    mixed = tiny_llama.init_state(d, 7, torch.bfloat16, torch.float32)
    pieces = {r: trainer_state(mixed, d, lay, *r) for r in ranks(lay)}
    for k, v in rz.merge(pieces, d, lay).items():
        assert v.dtype == mixed[k].dtype and torch.equal(v, mixed[k]), k


# ---------------------------------------------------------------------------
# layout A: the real files and resuming in place


@pytest.mark.parametrize("run", RUNS, ids=ids)
def test_resume_in_a(lab, run):
    """Loading tag A into a fresh run in layout A and stepping equals
    stepping on without the save: with master weights bit for bit.
    Without them NxD's load order shows: load_checkpoint loads the optimizer
    first, and ZeRO-1's load_state_dict re-shards the parameters the model
    holds at that moment (the fresh run's init); the model file loaded next
    gives the right loss, but the step updates the stale shards and
    all-gathers them over the loaded parameters."""
    a = need(lab.a, run)
    u, r = a["uninterrupted"], a["resumed"]
    losses = u["train_losses"]
    assert losses[-1] < losses[0], f"training does not learn: {losses}"
    assert r["user_content"] == {"epoch": 0, "global_step": STEPS}
    assert r["loss"] == u["loss"], "the resumed model is not the saved one"
    assert r["replica_spread"] == 0.0 and u["replica_spread"] == 0.0
    assert r["lrs"] == u["lrs"] and r["scheduler"] == u["scheduler"]
    if run.master:
        assert compare.check_results(u, r, exact=True, dtype=run.dtype) == []
    else:
        fresh = run.init_state(SEED + 1000)  # nxd_run.resume's init
        lr = max(u["lrs"])
        to_fresh = max(float((r["params"][k].double() - fresh[k].double()).abs().max()) for k in fresh)
        to_saved = compare.max_diff(u, r, "params")
        assert to_fresh < 3 * lr < 10 * lr < to_saved, (to_fresh, to_saved, lr)


@pytest.mark.parametrize("run", RUNS, ids=ids)
def test_real_files(lab, run):
    """What torch_xla's ZeroRedundancyOptimizer and NxD's save wrote
    (the facts of docs/formats/zero1.md that a resharder relies on)."""
    tag = need(lab.a, run)["tag"]
    lay, dp = run.layout, run.dp
    names = {p.name for p in (tag / "optim").iterdir() if p.name.endswith(".pt") and "info" not in p.name}
    assert names == {f"dp_rank_{d:02d}_tp_rank_{t:02d}_pp_rank_{p:02d}.pt"
                     for d in range(dp) for t in range(lay.tp) for p in range(lay.pp)}
    assert (tag / "checkpoint").read_text() == "1" and (tag / "done").read_text() == "1"
    sched = torch.load(tag / "scheduler.pt", weights_only=True)
    assert sched["lr_lambdas"] == [None, None] and sched["last_epoch"] == STEPS
    for t in range(lay.tp):
        for p in range(lay.pp):
            model = rz.read(tag / rz.name("model", 0, t, p))
            keys = list(model)
            # every tensor in the run's dtype, the norms in theirs (NxD's bf16 runs: float32)
            want = trainer_state(run.init_state(0), run.dims, lay, t, p)
            assert keys == list(want)
            assert type(model) is dict, "NxD's move-to-CPU walk makes the state_dict a plain dict"
            if run.avoid_lower:
                assert all(isinstance(v, rz.Absent) and v.dtype == want[k].dtype for k, v in model.items())
                assert not list(Path(f"{tag / rz.name('model', 0, t, p)}.tensors").iterdir())
            else:
                assert all(isinstance(v, torch.Tensor) and v.dtype == want[k].dtype for k, v in model.items())
            if run.norms:
                assert {k for k, v in model.items() if v.dtype == torch.float32} == {k for k in keys if "norm" in k}
            order = decay_groups.group_order(keys)
            for d in range(dp):
                path = tag / rz.name("optim", d, t, p)
                o = rz.read(path)
                want = ["state", "param_groups", "base_state", "shape_info"]
                assert list(o) == want + (["sharded_master_weights"] if run.master else [])
                assert o["state"] == {}
                g0, g1 = o["param_groups"]
                assert list(g0)[-1] == "params" and type(g0["betas"]) is list
                assert (g0["weight_decay"], g1["weight_decay"]) == (optimizers.HYPER["weight_decay"], 0.0)
                assert "initial_lr" in g0 and g0["lr"] == g1["lr"]
                n0 = len(g0["params"])
                assert g0["params"] + g1["params"] == list(range(len(keys)))
                assert all("norm" in k for k in order[n0:]) and not any("norm" in k for k in order[:n0])
                assert list(o["base_state"]) == list(range(len(keys)))
                for i, k in enumerate(order):
                    shape = list(model[k].shape)
                    assert type(o["shape_info"][i]) is list and o["shape_info"][i] == shape
                    rows = -(-shape[0] // dp)
                    entry = o["base_state"][i]
                    assert list(entry) == ["step", "exp_avg", "exp_avg_sq"]
                    if run.opt == "int":
                        assert type(entry["step"]) is int and entry["step"] == STEPS
                    else:
                        s = entry["step"]
                        assert isinstance(s, torch.Tensor) and s.dim() == 0 and s.dtype == torch.float32
                        assert float(s) == STEPS
                    for kind in ("exp_avg", "exp_avg_sq"):
                        assert entry[kind].dtype == torch.float32 and list(entry[kind].shape) == [rows, *shape[1:]]
                    if run.master:
                        mw = o["sharded_master_weights"][i]
                        assert mw.dtype == torch.float32 and list(mw.shape) == [rows, *shape[1:]]
                    if d == dp - 1 and rows * dp > shape[0]:  # ZeRO's zero padding sits in the last chunk
                        pad = rows * dp - shape[0]
                        assert not entry["exp_avg"][-pad:].any() and not entry["exp_avg_sq"][-pad:].any()
                if run.xser:
                    _check_xser_numbering(path, run)


def _check_xser_numbering(path: Path, run):
    """tids follow NxD's walk of the state dict: per parameter step (when a
    tensor), exp_avg, exp_avg_sq, then the master weights; an int step stays
    in the reference file."""
    ref_cls = rz.tensor_reference_class()
    refs = torch.load(path, weights_only=False)
    info = torch.load(f"{path}.info.pt", weights_only=False)
    tids = []
    for entry in refs["base_state"].values():
        for k, v in entry.items():
            if k == "step" and run.opt == "int":
                assert type(v) is int
            else:
                assert type(v) is ref_cls
                tids.append(v.tid)
    tids += [v.tid for v in refs.get("sharded_master_weights", {}).values()]
    assert tids == list(range(len(tids))) == list(info)
    assert all(set(v) == {"dtype", "shape", "expert_model_parallel"} and type(v["shape"]) is torch.Size
               for v in info.values())


@pytest.mark.parametrize("run", RUNS, ids=ids)
def test_reference_identity(lab, run, tmp_path):
    """The reference resharder from a layout to itself gives tag A back:
    every optimizer file equal in structure, types and bits (xser: the same
    references and .info.pt as well)."""
    tag = need(lab.a, run)["tag"]
    rz.reshard(tag, tmp_path / "tag", tiny_llama.CONFIG, run.layout, run.layout, run.dp, xser=run.xser)
    lay = run.layout
    for t in range(lay.tp):
        for p in range(lay.pp):
            for d in range(run.dp):
                n = rz.name("optim", d, t, p)
                assert compare.same_object(rz.read(tag / n), rz.read(tmp_path / "tag" / n), n) == []
                if run.xser:
                    for suffix in ("", ".info.pt"):
                        x = torch.load(f"{tag / n}{suffix}", weights_only=False)
                        y = torch.load(f"{tmp_path / 'tag' / n}{suffix}", weights_only=False)
                        assert compare.same_object(x, y, n + suffix) == []
            n = rz.name("model", 0, t, p)
            a, b = rz.read(tag / n), rz.read(tmp_path / "tag" / n)
            if run.avoid_lower:
                a = {k: None for k in a}  # no data in A; B's comes from the master weights
                b = {k: None for k in b}
            assert compare.same_object(a, b, n) == []


# ---------------------------------------------------------------------------
# layout B


@pytest.mark.parametrize("resharder", RESHARDERS)
@pytest.mark.parametrize("case", CASES, ids=ids)
def test_resume_in_b(lab, case, resharder):
    """Resuming tag B in layout B = continuing in layout A (compare.py)."""
    if resharder == "shardfs":
        need_shardfs()
    a = need(lab.a, case.a)["resumed"]
    b = need(lab.b, case, resharder)
    assert b["user_content"] == {"epoch": 0, "global_step": STEPS}
    assert b["replica_spread"] == 0.0
    bad = compare.check_results(a, b, exact=case.same_dp, dtype=case.a.dtype)
    assert bad == [], "\n".join(bad[:20])


@pytest.mark.parametrize("case", CASES, ids=ids)
def test_shardfs_files_equal_reference(lab, case):
    """ShardFS's tag B holds the reference's files: the same names, and every
    file, loaded with weights_only=True, equal in structure, types and bits."""
    need_shardfs()
    ref = need(lab.tag_b, case, "reference")
    got = need(lab.tag_b, case, "shardfs")
    files = sorted(str(p.relative_to(ref)) for p in ref.rglob("*") if p.is_file())
    # .shardfs/ is convert's own record (layout, finished files) for resuming
    # an interrupted convert; NxD's load_checkpoint never looks at it.
    ours = sorted(str(p.relative_to(got)) for p in got.rglob("*")
                  if p.is_file() and p.relative_to(got).parts[0] != ".shardfs")
    assert ours == files
    ref_cls = rz.tensor_reference_class()
    bad = []
    for f in files:
        if f.startswith("model/"):
            # The model files as the converter orders them (docs/formats/nxd-layout.md: a
            # fused weight_qkv comes after lm_head), the reference's as the
            # trainer's state_dict does; load_state_dict is blind to the
            # order, so they are compared by name, an xser file with its
            # references resolved (its .info.pt and tensor files with it).
            if f.endswith(".pt") and ".pt.tensors/" not in f and not f.endswith(".info.pt"):
                x, y = rz.read(ref / f), rz.read(got / f)
                bad += compare.same_object(dict(sorted(x.items())), dict(sorted(y.items())), f)
            continue
        if f in ("checkpoint", "done"):
            bad += [] if (got / f).read_bytes() == (ref / f).read_bytes() else [f"{f}: content differs"]
            continue
        with torch.serialization.safe_globals([ref_cls]):
            x = torch.load(ref / f, weights_only=True)
            y = torch.load(got / f, weights_only=True)
        bad += compare.same_object(x, y, f)
    assert bad == [], "\n".join(bad[:30])
