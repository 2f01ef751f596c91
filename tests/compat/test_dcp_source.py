"""A PyTorch DCP folder as the SOURCE (Source/DCP/): a TorchTitan-shaped
training state saved with torch's own `dcp.save` (dcp_folders.py: three
processes, every tensor in row chunks over three `.distcp` files, torch's
uneven cuts falling inside RoPE heads; and one process, every tensor whole)
-> `shardfs convert DCP OUT --config CONFIG` into NxD layouts with their
ZeRO-1 optimizer state, and into Hugging Face safetensors.

Every expectation is computed here from the saved state, never from
ShardFS's output: TorchTitan names to Hugging Face names with wq and wk
un-permuted as TorchTitan's Llama3StateDictAdapter.to_hf does
(`to_hf_rows` below), then reference.py's `rank_state` cuts and
optimizer_tags.py's numbering (`optimizer_order`) and ZeRO-1 padding
(`shard`); files are read with torch.load(weights_only=True) (xser with
optimizer_tags.py's loader).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import dcp_folders as D
from optimizer_tags import assert_same, load, named_parameters_order, optimizer_order, shard
from reference import Dims, Layout, rank_state

# head_dim 8: 4 query heads, 1 KV head (so --qkv-linear at TP 2 needs a KV
# multiplier of 2); vocab 34: 17 rows per TP rank, padded to 18 at DP 2.
CFG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2,
       "num_attention_heads": 4, "num_key_value_heads": 1, "intermediate_size": 64, "vocab_size": 34,
       "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16", "tie_word_embeddings": False}
STEP = 3
NORMS = ("input_layernorm.weight", "post_attention_layernorm.weight", "model.norm.weight")


def to_hf_rows(w: torch.Tensor, heads: int) -> torch.Tensor:
    """TorchTitan's wq/wk (RoPE on interleaved row pairs) in Hugging Face's
    row order (RoPE on each head's halves): the adapter's to_hf permute."""
    rows, dim = w.shape
    d = rows // heads
    return w.view(heads, d // 2, 2, dim).transpose(1, 2).reshape(rows, dim)


class Saved:
    """The state dcp.save was given, and its Hugging Face-level tensors."""

    def __init__(self, state: dict):
        self.state = state
        self.dims = Dims.from_config(CFG)
        self.hf = {"param": {}, "exp_avg": {}, "exp_avg_sq": {}}
        for name, hf_name, _, heads in D.parameters(CFG):
            tensors = {"param": state[name], "exp_avg": state["optimizer"]["state"][name]["exp_avg"],
                       "exp_avg_sq": state["optimizer"]["state"][name]["exp_avg_sq"]}
            for kind, t in tensors.items():
                self.hf[kind][hf_name] = to_hf_rows(t, heads) if heads else t

    def model_file(self, lay: Layout, tp: int, pp: int) -> dict:
        """What model/dp_rank_00_tp_rank_XX_pp_rank_ZZ.pt holds: the cut in
        the layout's dtype, norms kept float32 in a bfloat16 layout."""
        want = rank_state(self.hf["param"], self.dims, lay, tp, pp)
        fp32 = rank_state(self.hf["param"], self.dims, dataclasses.replace(lay, dtype=None), tp, pp)
        return {k: fp32[k] if lay.dtype == "bfloat16" and k.endswith(NORMS) else v for k, v in want.items()}

    def optimizer_file(self, lay: Layout, tp: int, pp: int, dp_rank: int, dp: int, one_group: bool = False) -> dict:
        """What optim/dp_rank_DD_tp_rank_XX_pp_rank_ZZ.pt holds: NxD's ZeRO-1
        state of this rank, master weights (the fp32 model) whatever the
        model files' dtype (NxD versions that load the optimizer before the
        model resume from them)."""
        fp32 = dataclasses.replace(lay, dtype=None)
        kinds = {k: rank_state(v, self.dims, fp32, tp, pp) for k, v in self.hf.items()}
        if one_group:
            keys = named_parameters_order(kinds["param"])
            sizes = [len(keys)]
        else:
            keys, sizes = optimizer_order(kinds["param"])
        groups, first = [], 0
        for decay, size in zip((D.GROUP["weight_decay"], 0.0), sizes):
            groups.append({"weight_decay": decay, "lr": D.GROUP["lr"], "betas": list(D.GROUP["betas"]), "eps": D.GROUP["eps"],
                           "correct_bias": True, "capturable": False, "params": list(range(first, first + size))})
            first += size
        out = {
            "state": {},
            "param_groups": groups,
            "base_state": {i: {"step": STEP, "exp_avg": shard(kinds["exp_avg"][k], dp_rank, dp),
                               "exp_avg_sq": shard(kinds["exp_avg_sq"][k], dp_rank, dp)} for i, k in enumerate(keys)},
            "shape_info": {i: list(kinds["param"][k].shape) for i, k in enumerate(keys)},
        }
        out["sharded_master_weights"] = {i: shard(kinds["param"][k], dp_rank, dp) for i, k in enumerate(keys)}
        return out


@pytest.fixture(scope="module")
def saved() -> Saved:
    return Saved(D.titan_state(CFG, seed=1, step=STEP))


@pytest.fixture(scope="module")
def folders(tmp_path_factory, saved):
    """The config, and the state saved by 3 processes and by 1."""
    root = tmp_path_factory.mktemp("dcp-source")
    (root / "config.json").write_text(json.dumps(CFG))
    return {"config": root / "config.json",
            3: D.save(saved.state, root / "sharded", 3, root),
            1: D.save(saved.state, root / "whole", 1, root)}


def flags(folders) -> list:
    return ["--config", str(folders["config"])]


# (folder's processes, target layout, dp, format, one param group)
CASES = [
    (3, Layout(tp=2), 2, "pt", False),
    (3, Layout(tp=2, qkv_linear=True, kv_mult=2, dtype="bfloat16"), 2, "xser", False),
    (3, Layout(tp=2, pp=2, qkv_linear=True, kv_mult=2, fuse_qkv=True, dtype="bfloat16"), 3, "pt", False),
    (1, Layout(tp=2, qkv_linear=True, kv_mult=2), 2, "pt", True),
]


@pytest.mark.parametrize("case", CASES, ids=[f"w{c[0]}-{'-'.join(c[1].cli_args())}-dp{c[2]}-{c[3]}{'-all' if c[4] else ''}" for c in CASES])
def test_convert_to_nxd_with_optimizer(shardfs, folders, saved, tmp_path, case):
    world, lay, dp, fmt, one_group = case
    out = tmp_path / "out"
    extra = ["--optimizer-groups", "all"] if one_group else []
    run = shardfs.run("convert", folders[world], out, *flags(folders), *lay.cli_args(), "--dp-size", dp, "--format", fmt, *extra)
    assert run.returncode == 0, run.describe()
    xser = fmt == "xser"
    for tp in range(lay.tp):
        for pp in range(lay.pp):
            name = f"dp_rank_00_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"
            model, want = load(out / "model" / name, xser), saved.model_file(lay, tp, pp)
            assert list(model) == list(want), name
            for k, v in want.items():
                assert model[k].dtype == v.dtype and torch.equal(model[k], v), f"{name}: {k}"
            for d in range(dp):
                path = out / "optim" / f"dp_rank_{d:02d}_tp_rank_{tp:02d}_pp_rank_{pp:02d}.pt"
                assert_same(load(path, xser), saved.optimizer_file(lay, tp, pp, d, dp, one_group), path.name)
                if xser:
                    # .info.pt: each tensor file's dtype and shape, exactly.
                    info = torch.load(f"{path}.info.pt", weights_only=True)
                    for tid, entry in info.items():
                        t = torch.load(f"{path}.tensors/tensor_{tid}.pt", weights_only=True)
                        assert entry == {"dtype": t.dtype, "shape": t.shape, "expert_model_parallel": False}, (path.name, tid)
    # NxD's markers; nothing of TorchTitan's scheduler or data loader.
    assert (out / "checkpoint").read_text() == "1" and (out / "done").read_text() == "1"
    assert not (out / "scheduler.pt").exists() and not (out / "user_content.pt").exists()
    verify = shardfs.run("verify", folders[world], out, *flags(folders), *lay.cli_args(), "--dp-size", dp, "--format", fmt, *extra)
    assert verify.returncode == 0, verify.describe()


@pytest.mark.parametrize("world", [3, 1])
def test_convert_to_hugging_face(shardfs, folders, saved, tmp_path, world):
    """--format hf: the weights alone, float32 as trained, under Hugging
    Face names and row order; config.json as given."""
    out = tmp_path / "hf"
    run = shardfs.run("convert", folders[world], out, *flags(folders), "--format", "hf")
    assert run.returncode == 0, run.describe()
    got = load_file(out / "model.safetensors")
    assert sorted(got) == sorted(saved.hf["param"])
    for k, v in saved.hf["param"].items():
        assert got[k].dtype == torch.float32 and torch.equal(got[k], v), k
    assert (out / "config.json").read_bytes() == folders["config"].read_bytes()


def test_plan(shardfs, folders):
    run = shardfs.run("plan", folders[3], *flags(folders), "--tp-size", "2", "--dp-size", "2", "--dtype", "bfloat16")
    assert run.returncode == 0, run.describe()
    assert "model.layers.0.self_attn.q_proj.weight" in run.stdout and "__2_0.distcp" in run.stdout
    run = shardfs.run("plan", folders[3], *flags(folders), "--tp-size", "2", "--dp-size", "2", "--json")
    assert run.returncode == 0, run.describe()
    plan = json.loads(run.stdout)
    assert len(plan["files"]) == 2 and plan["optimizer"]["dpSize"] == 2


def refused(run, *words) -> str:
    assert run.returncode != 0, run.describe()
    for w in words:
        assert w in run.stderr, f"{w!r} not in:\n{run.describe()}"
    return run.stderr


def test_refusals_by_name(shardfs, folders, tmp_path):
    src = folders[3]
    out = tmp_path / "out"
    refused(shardfs.run("convert", src, out, *flags(folders), "--tp-size", "2"), "--dp-size", "missing")
    refused(shardfs.run("convert", src, out, "--tp-size", "2", "--dp-size", "2"), "--config", "DCP checkpoint")
    refused(shardfs.run("convert", src, out, *flags(folders), "--source-hw-backend", "trn2", "--dp-size", "1"), "--source-hw-backend")
    assert not out.exists()

    # A config the folder does not fit: its layers' sizes.
    other = tmp_path / "other.json"
    other.write_text(json.dumps(dict(CFG, intermediate_size=96)))
    refused(shardfs.run("convert", src, out, "--config", other, "--format", "hf"),
            "layers.0.feed_forward.w1.weight", "[64, 32]", "[96, 32]")
    fewer = tmp_path / "fewer.json"
    fewer.write_text(json.dumps(dict(CFG, num_hidden_layers=1)))
    refused(shardfs.run("convert", src, out, "--config", fewer, "--format", "hf"), "layers.1.", "num_hidden_layers = 1")

    # A .distcp file cut short: the item past its end is named.
    cut = tmp_path / "cut"
    cut.mkdir()
    for f in src.iterdir():
        (cut / f.name).write_bytes(f.read_bytes())
    data = (cut / "__2_0.distcp").read_bytes()
    (cut / "__2_0.distcp").write_bytes(data[:len(data) // 2])
    refused(shardfs.run("convert", cut, out, *flags(folders), "--format", "hf"), "__2_0.distcp", "of it (truncated")
    (cut / "__2_0.distcp").unlink()
    refused(shardfs.run("convert", cut, out, *flags(folders), "--format", "hf"), "__2_0.distcp: missing")
    assert not out.exists()


def test_unknown_entries_are_refused_and_the_data_loader_skipped(shardfs, folders, saved, tmp_path):
    state = dict(saved.state, extra_state={"ema_decay": 0.999})
    src = D.save(state, tmp_path / "extra", 1, tmp_path)
    refused(shardfs.run("convert", src, tmp_path / "out", *flags(folders), "--format", "hf"), "extra_state.ema_decay")
