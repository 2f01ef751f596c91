"""A training tag's whole state resharded (docs/formats/zero1.md): `shardfs convert` and
`mount` of a tag with ZeRO-1 optimizer state into another TP/PP/DP layout,
judged against the state computed independently (optimizer_tags.py) by
torch.load: every optimizer file's structure and every value, the model
files, the carried files, `done` last; data.pkl byte for byte what
torch.save writes for the same dict; verify; refusals by name. The real
files of torch_xla's ZeroRedundancyOptimizer, and a run resumed from them,
are judged in tests/zero1."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from checks import files_under
from conftest import REPO
from mounting import zero_crcs
from optimizer_tags import TrainingState, assert_same, is_norm, load
from reference import Layout, rank_state

EXAMPLE = REPO / "examples/tiny-llama"


def layout_flags(lay: Layout, dp: int) -> list:
    return [*lay.cli_args(), "--dp-size", str(dp)]


@pytest.fixture(scope="module")
def state() -> TrainingState:
    sd = {}
    for f in sorted(EXAMPLE.glob("*.safetensors")):
        sd.update(load_file(f))
    return TrainingState(sd, json.loads((EXAMPLE / "config.json").read_text()))


@pytest.fixture(scope="module")
def tags(tmp_path_factory, state):
    """Tags by name, written once."""
    root = tmp_path_factory.mktemp("optimizer-tags")
    made = {}

    def tag(name, lay, dp, **kw):
        if name not in made:
            step = kw.pop("step", torch.tensor(7.0))
            state.step = step
            made[name] = (state.write_tag(root / name, lay, dp, **kw), lay, dp, kw)
        return made[name]
    return tag


# (source tag, its layout, its dp, how it is stored), (target layout, dp, format)
CASES = [
    ("tp2-pp2-dp2", Layout(tp=2, pp=2), 2, {}, Layout(tp=1, pp=1), 3, "pt"),
    ("tp2-pp2-dp2", Layout(tp=2, pp=2), 2, {}, Layout(tp=4, pp=2, qkv_linear=True, kv_mult=2, fuse_qkv=True), 2, "xser"),
    ("tp2-pp2-dp2", Layout(tp=2, pp=2), 2, {}, Layout(tp=8, pp=1, qkv_linear=True, kv_mult=4), 1, "pt"),
    ("tp4-fused-dp3-xser", Layout(tp=4, qkv_linear=True, kv_mult=2, fuse_qkv=True), 3, {"xser": True, "step": 7},
     Layout(tp=2, pp=4, qkv_linear=True), 4, "pt"),
    ("tp4-fused-dp3-xser", Layout(tp=4, qkv_linear=True, kv_mult=2, fuse_qkv=True), 3, {"xser": True, "step": 7},
     Layout(tp=1), 1, "xser"),
    ("tp1-dp1-no-master", Layout(), 1, {"master": False}, Layout(tp=2, pp=2, qkv_linear=True), 5, "pt"),
    ("tp2-trn2-dp2", Layout(tp=2, qkv_linear=True, backend="trn2"), 2, {},
     Layout(tp=4, qkv_linear=True, kv_mult=2, backend="trn2"), 2, "pt"),
]


def source_flags(lay: Layout) -> list:
    return ["--config", str(EXAMPLE), "--source-hw-backend", lay.backend]


def check_tag(out: Path, state: TrainingState, lay: Layout, dp: int, fmt: str, master: bool) -> None:
    """Every optimizer file, the model files and the carried files of `out` as `lay` at `dp` must hold them."""
    xser = fmt == "xser"
    for tp in range(lay.tp):
        for pp in range(lay.pp):
            for d in range(dp):
                path = out / "optim" / f"dp_rank_{d:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"
                assert_same(load(path, xser), state.optimizer_file(lay, tp, pp, d, dp, master), path.name)
            model = load(out / "model" / f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt", xser)
            # In the dtype the run trained in (the tag's float32), not the
            # config's bfloat16.
            want = rank_state(state.weights, state.dims, Layout(**{**lay.__dict__, "dtype": "float32"}), tp, pp)
            assert sorted(model) == sorted(want)
            for k in want:
                assert model[k].dtype == want[k].dtype and torch.equal(model[k], want[k]), f"model tp {tp} pp {pp}: {k}"
    for name in ("scheduler.pt", "user_content.pt", "checkpoint", "done"):
        assert (out / name).exists(), name


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-to-{'-'.join(c[4].cli_args())}-dp{c[5]}-{c[6]}" for c in CASES])
def test_reshard(shardfs, tags, state, tmp_path, case):
    name, lay_a, dp_a, kw, lay_b, dp_b, fmt = case
    tag, *_ = tags(name, lay_a, dp_a, **dict(kw))
    state.step = kw.get("step", torch.tensor(7.0))
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *source_flags(lay_a), *layout_flags(lay_b, dp_b), "--format", fmt)
    assert run.returncode == 0, run.describe()
    check_tag(out, state, lay_b, dp_b, fmt, kw.get("master", True))
    for name_ in ("scheduler.pt", "user_content.pt", "checkpoint", "done"):
        assert (out / name_).read_bytes() == (tag / name_).read_bytes(), name_
    # `done` is the last file written.
    newest = max((p for p in out.rglob("*") if p.is_file() and ".shardfs" not in p.parts), key=lambda p: p.stat().st_mtime_ns)
    assert (out / "done").stat().st_mtime_ns >= newest.stat().st_mtime_ns
    verify = shardfs.run("verify", tag, out, *source_flags(lay_a), *layout_flags(lay_b, dp_b), "--format", fmt)
    assert verify.returncode == 0, verify.describe()


def test_model_keeps_the_runs_dtype(shardfs, tags, state, tmp_path):
    """A resumed run's model files are in the dtype it trained in (the tag's
    float32), not config.json's (the Hugging Face checkpoint's, bfloat16
    here); --dtype still says otherwise, and leaves the optimizer alone."""
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    flags = [*source_flags(lay), "--tp-size", "1"]
    run = shardfs.run("convert", tag, tmp_path / "kept", *flags)
    assert run.returncode == 0, run.describe()
    kept = torch.load(tmp_path / "kept/model/dp_rank_00_tp_rank_00_pp_rank_00.pt", weights_only=True)
    assert {t.dtype for t in kept.values()} == {torch.float32}
    run = shardfs.run("convert", tag, tmp_path / "narrowed", *flags, "--dtype", "bfloat16")
    assert run.returncode == 0, run.describe()
    narrowed = torch.load(tmp_path / "narrowed/model/dp_rank_00_tp_rank_00_pp_rank_00.pt", weights_only=True)
    assert list(narrowed) == list(kept)
    for k, t in kept.items():
        assert narrowed[k].dtype == torch.bfloat16 and torch.equal(narrowed[k], t.bfloat16()), k
    # The optimizer files: the same records (serialization_id names the plan).
    for path in sorted((tmp_path / "kept/optim").iterdir()):
        a, b = zipfile.ZipFile(path), zipfile.ZipFile(tmp_path / "narrowed/optim" / path.name)
        assert a.namelist() == b.namelist(), path.name
        for n in a.namelist():
            assert n.endswith("serialization_id") or a.read(n) == b.read(n), f"{path.name}: {n}"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory) -> TrainingState:
    """The state of a bf16 run as NxD keeps it: model files bfloat16 but the
    norms float32, and after training the norms hold values bfloat16 cannot
    (so rounding one shows in its bits, not only in its dtype)."""
    sd = {}
    for f in sorted(EXAMPLE.glob("*.safetensors")):
        sd.update(load_file(f))
    run = TrainingState(sd, json.loads((EXAMPLE / "config.json").read_text()), seed=3, norms_fp32=True)
    g = torch.Generator().manual_seed(4)
    for k, v in run.weights.items():
        if is_norm(k):
            run.weights[k] = v + 2.0 ** -12 * torch.randn(v.shape, generator=g)
            assert not torch.equal(run.weights[k], run.weights[k].bfloat16().float()), k
    return run


def bf16_run_model(run: TrainingState, lay: Layout, tp: int, pp: int) -> dict:
    """A rank file of `lay` as the bf16 run keeps it: norms float32, the rest bfloat16."""
    return run.rank(dataclasses.replace(lay, dtype="bfloat16"), tp, pp)[0]


@pytest.mark.parametrize("model_data", [True, False], ids=["model-data", "model-from-master-weights"])
def test_a_bf16_run_keeps_its_float32_norms(shardfs, bf16_run, tmp_path, model_data):
    """A bf16 training tag (at TP 1 with qkv_linear, as NxD's trainer saves
    one) resharded: each model tensor in the dtype the tag holds it in (the
    norms float32, bit for bit; the rest bfloat16), also when the model files
    hold no data and the model comes from the master weights; verify passes,
    and names a model file whose norms were narrowed; --dtype bfloat16 still
    narrows every tensor."""
    lay_a = Layout(qkv_linear=True, dtype="bfloat16")
    tag = bf16_run.write_tag(tmp_path / "tag", lay_a, 2, xser=not model_data, model_data=model_data)
    info = torch.load(tmp_path / "tag/model/dp_rank_00_tp_rank_00_pp_rank_00.pt.info.pt", weights_only=False) \
        if not model_data else None
    if info is not None:  # the .info.pt names the dtypes; no tensor file holds them
        assert {v["dtype"] for v in info.values()} == {torch.bfloat16, torch.float32}
        assert not any((tag / "model").rglob("tensor_*.pt"))
    lay_b = Layout(tp=2, qkv_linear=True)
    flags = ["--config", str(EXAMPLE), "--tp-size", "2", "--dp-size", "1", "--qkv-linear"]
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *flags)
    assert run.returncode == 0, run.describe()
    for tp in range(2):
        name = f"model/dp_rank_00_tp_rank_{tp:02d}_pp_rank_00.pt"
        got = torch.load(out / name, weights_only=True)
        want = bf16_run_model(bf16_run, lay_b, tp, 0)
        assert sorted(got) == sorted(want)
        assert {k for k, v in got.items() if v.dtype == torch.float32} == {k for k in want if is_norm(k)}
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), f"{name}: {k}"
    for tp in range(2):
        path = out / "optim" / f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_00.pt"
        assert_same(load(path, False), bf16_run.optimizer_file(lay_b, tp, 0, 0, 1), path.name)
    verify = shardfs.run("verify", tag, out, *flags)
    assert verify.returncode == 0, verify.describe()
    # A model file whose norms were narrowed to bfloat16 (as ShardFS wrote them before).
    name = out / "model/dp_rank_00_tp_rank_01_pp_rank_00.pt"
    narrowed = {k: v.bfloat16() if is_norm(k) else v for k, v in torch.load(name, weights_only=True).items()}
    torch.save(narrowed, name)
    verify = shardfs.run("verify", tag, out, *flags)
    assert verify.returncode == 1, verify.describe()
    assert "model.layers.0.input_layernorm.weight is bfloat16, the layout wants float32" in verify.stdout, verify.describe()
    # --dtype bfloat16: every tensor narrowed, the norms rounded.
    run = shardfs.run("convert", tag, tmp_path / "narrowed", *flags, "--dtype", "bfloat16")
    assert run.returncode == 0, run.describe()
    got = torch.load(tmp_path / "narrowed/model/dp_rank_00_tp_rank_00_pp_rank_00.pt", weights_only=True)
    for k, v in bf16_run_model(bf16_run, lay_b, 0, 0).items():
        assert got[k].dtype == torch.bfloat16 and torch.equal(got[k], v.bfloat16()), k


@pytest.mark.mount
def test_mount_serves_the_trainers_layout_with_float32_norms(shardfs, mounts, bf16_run, tmp_path):
    """Through the mount, in xser: the bf16 run's TP 1 qkv_linear tag (the
    trainer's layout, both KV heads on the one rank) as TP 2 at DP 3: the
    same bytes as convert, each tensor in its dtype (the norms float32)."""
    tag = bf16_run.write_tag(tmp_path / "tag", Layout(qkv_linear=True, dtype="bfloat16"), 2)
    flags = ["--config", str(EXAMPLE), "--tp-size", "2", "--qkv-linear", "--dp-size", "3", "--format", "xser"]
    out = tmp_path / "out"
    assert shardfs.run("convert", tag, out, *flags).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.mount(tag, mnt, *flags)
    served = files_under(mnt)
    assert served == [p for p in files_under(out) if not p.startswith(".shardfs")]
    for rel in served:
        want = (out / rel).read_bytes() if "/" not in rel else zero_crcs((out / rel).read_bytes(), rel)
        assert (mnt / rel).read_bytes() == want, rel
    lay = Layout(tp=2, qkv_linear=True)
    for tp in range(2):
        got = load(mnt / "model" / f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_00.pt", True)
        want = bf16_run_model(bf16_run, lay, tp, 0)
        assert sorted(got) == sorted(want)
        for k in want:
            assert got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]), k
        for d in range(3):
            path = mnt / "optim" / f"dp_rank_{d:02d}_tp_rank_{tp:02d}_pp_rank_00.pt"
            assert_same(load(path, True), bf16_run.optimizer_file(lay, tp, 0, d, 3), path.name)


def test_data_pkl_is_what_torch_save_writes(shardfs, tags, state, tmp_path):
    """The pickle of each optimizer file is byte for byte torch.save's for
    the dict torch.load returns (floats, bools, None, lists, int keys)."""
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *source_flags(lay), "--tp-size", "2", "--dp-size", "3")
    assert run.returncode == 0, run.describe()
    for path in sorted((out / "optim").iterdir()):
        buffer = io.BytesIO()
        torch.save(torch.load(path, weights_only=True), buffer)
        ours, theirs = zipfile.ZipFile(path), zipfile.ZipFile(buffer)
        pickle = lambda z: z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))  # noqa: E731
        assert pickle(ours) == pickle(theirs), path.name


def test_round_trip_restores_the_source(shardfs, tags, state, tmp_path):
    """A -> B -> A gives A's optimizer files back, value for value."""
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    b, back = tmp_path / "b", tmp_path / "back"
    assert shardfs.run("convert", tag, b, *source_flags(lay), "--tp-size", "4", "--qkv-linear", "--kv-size-multiplier", "2",
                       "--dp-size", "3").returncode == 0
    run = shardfs.run("convert", b, back, "--config", str(EXAMPLE), "--source-hw-backend", "trn1",
                      "--tp-size", "2", "--pp-size", "2", "--dp-size", "2")
    assert run.returncode == 0, run.describe()
    for path in sorted((tag / "optim").iterdir()):
        assert_same(torch.load(back / "optim" / path.name, weights_only=True), torch.load(path, weights_only=True), path.name)


@pytest.mark.mount
def test_mount_serves_what_convert_writes(shardfs, mounts, tags, state, tmp_path):
    """Through the mount: the same bytes as convert (CRC fields 0), in xser too."""
    tag, lay, dp, _ = tags("tp4-fused-dp3-xser", Layout(tp=4, qkv_linear=True, kv_mult=2, fuse_qkv=True), 3,
                           xser=True, step=7)
    flags = [*source_flags(lay), "--tp-size", "2", "--qkv-linear", "--dp-size", "2", "--format", "xser"]
    out = tmp_path / "out"
    assert shardfs.run("convert", tag, out, *flags).returncode == 0
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    mounts.mount(tag, mnt, *flags)
    served = [p for p in files_under(mnt)]
    assert served == [p for p in files_under(out) if not p.startswith(".shardfs")]
    for rel in served:
        # Carried files are the source's bytes; the files ShardFS makes have 0 in their CRC fields when served.
        want = (out / rel).read_bytes() if "/" not in rel else zero_crcs((out / rel).read_bytes(), rel)
        assert (mnt / rel).read_bytes() == want, rel
    state.step = 7
    check_tag(mnt, state, Layout(tp=2, qkv_linear=True), 2, "xser", True)


def test_model_from_master_weights(shardfs, tags, state, tmp_path):
    """An xser tag whose model files hold no data (master weights kept,
    avoid_saving_lower_precision_weights): the model comes from the master
    weights, in another layout and to Hugging Face."""
    tag, lay, dp, _ = tags("no-model-data", Layout(tp=2), 2, xser=True, model_data=False)
    assert not any((tag / "model").rglob("tensor_*.pt"))
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *source_flags(lay), "--tp-size", "1", "--dp-size", "1")
    assert run.returncode == 0, run.describe()
    state.step = torch.tensor(7.0)
    check_tag(out, state, Layout(tp=1), 1, "pt", True)
    hf = tmp_path / "hf"
    run = shardfs.run("convert", tag, hf, *source_flags(lay), "--format", "hf")
    assert run.returncode == 0, run.describe()
    got = load_file(hf / "model.safetensors")
    assert sorted(got) == sorted(state.weights)
    for k, v in state.weights.items():
        assert torch.equal(got[k], v.to(torch.bfloat16)), k


def test_weights_only_and_hf_leave_the_optimizer_out(shardfs, tags, state, tmp_path):
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *source_flags(lay), "--tp-size", "1", "--weights-only")
    assert run.returncode == 0, run.describe()
    assert files_under(out) == ["model/dp_rank_00_tp_rank_00_pp_rank_00.pt"] or all(
        p.startswith(("model/", ".shardfs")) for p in files_under(out)), files_under(out)


def test_part_leaves_done_to_the_last_share(shardfs, tags, state, tmp_path):
    """--part shares cannot know when the others finish: a share writes `done`
    only once it finds every other file of the layout finished (the last one
    to finish), after them; a run over the whole keeps their files."""
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    out = tmp_path / "out"
    flags = [*source_flags(lay), "--tp-size", "2", "--pp-size", "2", "--dp-size", "2"]
    run = shardfs.run("convert", tag, out, *flags, "--part", "1/2")
    assert run.returncode == 0, run.describe()
    assert not (out / "done").exists() and not (out / "scheduler.pt").exists()
    run = shardfs.run("convert", tag, out, *flags, "--part", "0/2")
    assert run.returncode == 0, run.describe()
    assert (out / "done").exists() and (out / "scheduler.pt").exists()
    newest = max((p for p in out.rglob("*") if p.is_file() and ".shardfs" not in p.parts and p.name != "done"),
                 key=lambda p: p.stat().st_mtime_ns)
    assert (out / "done").stat().st_mtime_ns >= newest.stat().st_mtime_ns
    run = shardfs.run("convert", tag, out, *flags)
    assert run.returncode == 0 and (out / "done").exists(), run.describe()
    assert "wrote 0 files" in run.stderr or "kept" in run.stderr, run.describe()


def test_plan_shows_the_inferred_optimizer(shardfs, tags, state):
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    run = shardfs.run("plan", tag, *source_flags(lay), "--tp-size", "1", "--dp-size", "3", "--json")
    assert run.returncode == 0, run.describe()
    report = json.loads(run.stdout)["optimizer"]
    keys, _sizes = __import__("optimizer_tags").optimizer_order(state.rank(lay, 0, 1)[0])
    assert report["sourceDPSize"] == 2 and report["dpSize"] == 3
    assert report["source"][1]["parameters"] == keys  # tp 0, pp 1
    assert report["state"] == ["step = 7.0 (0-d float32 tensor)", "exp_avg", "exp_avg_sq"]
    assert [f["paths"] for f in report["files"]] == [[f"optim/dp_rank_0{d}_tp_rank_00_pp_rank_00.pt" for d in range(3)]]
    text = shardfs.run("plan", tag, *source_flags(lay), "--tp-size", "1", "--dp-size", "3")
    assert "first copy (TP rank 0's)" in text.stdout and "dp 2 -> dp 3" in text.stdout, text.describe()


def test_verify_names_a_damaged_shard(shardfs, tags, state, tmp_path):
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    out = tmp_path / "out"
    flags = [*source_flags(lay), "--tp-size", "1", "--dp-size", "2"]
    assert shardfs.run("convert", tag, out, *flags).returncode == 0
    path = out / "optim" / "dp_rank_01_tp_rank_00_pp_rank_00.pt"
    d = torch.load(path, weights_only=True)
    d["base_state"][4]["exp_avg"][0, 3] += 1
    torch.save(d, path)
    (out / "user_content.pt").write_bytes(b"x")
    run = shardfs.run("verify", tag, out, *flags)
    assert run.returncode == 1, run.describe()
    assert "base_state[4]['exp_avg']" in run.stdout and "element [0, 3]" in run.stdout, run.describe()
    assert "user_content.pt" in run.stdout, run.describe()


def _drop(tag: Path, rel: str):
    os.remove(tag / rel)


def _regroup(tag: Path, rel: str):
    d = torch.load(tag / rel, weights_only=True)
    d["param_groups"] = [dict(d["param_groups"][0], params=d["param_groups"][0]["params"] + d["param_groups"][1]["params"])]
    torch.save(d, tag / rel)


def _shape(tag: Path, rel: str):
    d = torch.load(tag / rel, weights_only=True)
    d["shape_info"][2] = [d["shape_info"][2][0] + 1, *d["shape_info"][2][1:]]
    torch.save(d, tag / rel)


def _lr(tag: Path, rel: str):
    d = torch.load(tag / rel, weights_only=True)
    d["param_groups"][0]["lr"] = 0.5
    torch.save(d, tag / rel)


REL = "optim/dp_rank_01_tp_rank_01_pp_rank_00.pt"
BAD = [
    ("missing-optimizer-file", _drop, [], [REL, "missing"]),
    ("one-group", _regroup, [], [REL, "param groups"]),
    ("shape-info", _shape, [], ["shape"]),
    ("hyper-parameters-differ", _lr, [], [REL, "param_groups[0]", "lr"]),
    ("wrong-grouping-stated", None, ["--optimizer-groups", "all"], ["--optimizer-groups"]),
    ("absurd-dp-size", None, ["--dp-size", "1000000000"], ["--dp-size"]),
]


@pytest.mark.parametrize("bad", BAD, ids=[b[0] for b in BAD])
def test_refusals_name_the_fault(shardfs, tags, state, tmp_path, bad):
    _, mutate, flags, names = bad
    tag, lay, dp, _ = tags("tp2-pp2-dp2", Layout(tp=2, pp=2), 2)
    if mutate:
        copy = tmp_path / "tag"
        import shutil
        shutil.copytree(tag, copy)
        mutate(copy, REL)
        tag = copy
    out = tmp_path / "out"
    run = shardfs.run("convert", tag, out, *source_flags(lay), "--tp-size", "1", *flags, timeout=60)
    assert run.returncode != 0, run.describe()
    for name in names:
        assert name in run.stderr, f"{name!r} not named\n{run.describe()}"
    assert "Fatal error" not in run.stderr
    assert not out.exists() or files_under(out) == [], files_under(out)


def test_dp_size_needs_a_training_tag(shardfs):
    run = shardfs.run("plan", EXAMPLE, "--tp-size", "2", "--dp-size", "2")
    assert run.returncode == 1 and "--dp-size" in run.stderr, run.describe()
