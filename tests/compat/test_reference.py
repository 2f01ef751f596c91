"""Self-checks of the pure-Python parts (no shardfs binary needed): the
reference against hand-worked examples of docs/formats/nxd-layout.md, the checkpoint
builders, the safetensors writer and the byte-comparison helpers."""

from __future__ import annotations

import struct
import zipfile
from collections import OrderedDict

import pytest
import torch

import checkpoints as C
from ptfile import assert_same_pt_bytes, first_difference, serialization_id, serialization_id_span, zip_layout
from reference import (Dims, Layout, LayoutError, hf_shapes, pp_layers, q_heads_of_rank, rank_state, stage_layers,
                       validate)


def head_tagged_state(d: Dims) -> "OrderedDict[str, torch.Tensor]":
    """A state dict whose Q/O head blocks hold their head index (Q rows,
    O columns), K head blocks 1000 + index, V 2000 + index; float32."""
    hd = d.head_dim
    sd = OrderedDict()
    sd["model.embed_tokens.weight"] = torch.arange(d.V, dtype=torch.float32)[:, None].repeat(1, d.h)
    for l in range(d.L):
        p = f"model.layers.{l}."
        sd[p + "self_attn.q_proj.weight"] = torch.arange(d.Hq).repeat_interleave(hd)[:, None].float().repeat(1, d.h)
        sd[p + "self_attn.k_proj.weight"] = 1000 + torch.arange(d.Hkv).repeat_interleave(hd)[:, None].float().repeat(1, d.h)
        sd[p + "self_attn.v_proj.weight"] = 2000 + torch.arange(d.Hkv).repeat_interleave(hd)[:, None].float().repeat(1, d.h)
        sd[p + "self_attn.o_proj.weight"] = torch.arange(d.Hq).repeat_interleave(hd)[None, :].float().repeat(d.h, 1)
        sd[p + "mlp.gate_proj.weight"] = torch.arange(d.I)[:, None].float().repeat(1, d.h)
        sd[p + "mlp.up_proj.weight"] = 10000 + torch.arange(d.I)[:, None].float().repeat(1, d.h)
        sd[p + "mlp.down_proj.weight"] = torch.arange(d.I)[None, :].float().repeat(d.h, 1)
        sd[p + "input_layernorm.weight"] = torch.full((d.h,), 100.0 + l)
        sd[p + "post_attention_layernorm.weight"] = torch.full((d.h,), 200.0 + l)
    sd["model.norm.weight"] = torch.full((d.h,), 7.0)
    sd["lm_head.weight"] = -torch.arange(d.V, dtype=torch.float32)[:, None].repeat(1, d.h)
    return sd


def row_tags(t: torch.Tensor, hd: int) -> list[int]:
    """One tag per head block of rows (checks the block is uniform)."""
    out = []
    for i in range(0, t.shape[0], hd):
        blk = t[i : i + hd]
        assert (blk == blk[0, 0]).all()
        out.append(int(blk[0, 0].item()))
    return out


def col_tags(t: torch.Tensor, hd: int) -> list[int]:
    return row_tags(t.t().contiguous(), hd)


# ---------------------------------------------------------------------------
# the spec's example: Llama-3-70B, T=32, P=8, m=4, qkv_linear, fuse, trn1

SEED = Dims(L=80, h=8192, Hq=64, Hkv=8, I=28672, V=128256, tied=False, head_dim=128)
SEED_LAYOUT = Layout(tp=32, pp=8, kv_mult=4, qkv_linear=True, fuse_qkv=True, backend="trn1")


@pytest.mark.parametrize("r", range(32))
def test_seed_example_q_heads(r):
    """Rank r's Q heads are 2g and 2g+1 with g = 4*(r % 8) + r // 8, and
    they all belong to KV head r % 8."""
    g = 4 * (r % 8) + r // 8
    assert q_heads_of_rank(SEED, SEED_LAYOUT, r) == [2 * g, 2 * g + 1]
    assert all(h // (SEED.Hq // SEED.Hkv) == r % 8 for h in q_heads_of_rank(SEED, SEED_LAYOUT, r))


def test_seed_example_tensors_by_tag():
    """Same layout at head_dim 1 (h = 64) on head-tagged weights: the fused
    weight_qkv of rank r holds Q heads 2g, 2g+1, K head r%8, V head r%8;
    o_proj holds columns of heads 2g, 2g+1."""
    d = Dims(L=8, h=64, Hq=64, Hkv=8, I=64, V=64, tied=False, head_dim=1)
    sd = head_tagged_state(d)
    for r in range(32):
        g = 4 * (r % 8) + r // 8
        st = rank_state(sd, d, SEED_LAYOUT, r, 0)
        qkv = st["model.layers.0.self_attn.qkv_proj.weight_qkv"]
        assert row_tags(qkv, 1) == [2 * g, 2 * g + 1, 1000 + r % 8, 2000 + r % 8], r
        assert col_tags(st["model.layers.0.self_attn.o_proj.weight"], 1) == [2 * g, 2 * g + 1]


def test_seed_example_shapes():
    """The spec's per-rank shapes, computed on meta tensors at full size."""
    sd = OrderedDict()
    for k, shape in hf_shapes(SEED).items():
        sd[k] = torch.empty(shape, dtype=torch.bfloat16, device="meta")
    for pp in range(8):
        assert pp_layers(SEED.L, 8, 1, pp) == list(range(10 * pp, 10 * pp + 10))
    st0 = rank_state(sd, SEED, SEED_LAYOUT, 5, 0)
    st7 = rank_state(sd, SEED, SEED_LAYOUT, 5, 7)
    shapes0 = {k: tuple(v.shape) for k, v in st0.items()}
    assert shapes0["model.embed_tokens.weight"] == (4008, 8192)
    assert shapes0["model.layers.3.self_attn.qkv_proj.weight_qkv"] == (512, 8192)
    assert shapes0["model.layers.3.self_attn.o_proj.weight"] == (8192, 256)
    assert shapes0["model.layers.3.mlp.gate_up_proj.weight"] == (1792, 8192)
    assert shapes0["model.layers.3.mlp.down_proj.weight"] == (8192, 896)
    assert shapes0["model.layers.3.input_layernorm.weight"] == (8192,)
    assert "model.norm.weight" not in st0 and "lm_head.weight" not in st0
    assert tuple(st7["lm_head.weight"].shape) == (4008, 8192)
    assert tuple(st7["model.norm.weight"].shape) == (8192,)
    assert "model.embed_tokens.weight" not in st7
    assert len(st0) == 1 + 10 * 5 + 10 and len(st7) == 10 * 5 + 2 + 10
    # order: embed, per layer (o, gate_up, down, 2 norms), then the fused qkv keys
    keys = list(st7)
    assert keys[:5] == [
        "model.layers.70.self_attn.o_proj.weight",
        "model.layers.70.mlp.gate_up_proj.weight",
        "model.layers.70.mlp.down_proj.weight",
        "model.layers.70.input_layernorm.weight",
        "model.layers.70.post_attention_layernorm.weight",
    ]
    assert keys[50:52] == ["model.norm.weight", "lm_head.weight"]
    assert keys[52:] == [f"model.layers.{l}.self_attn.qkv_proj.weight_qkv" for l in range(70, 80)]


# ---------------------------------------------------------------------------
# hand-worked head assignments


SMALL = Dims(L=2, h=32, Hq=8, Hkv=2, I=16, V=16, tied=False, head_dim=4)


def test_trn1_m2_tp4_by_hand():
    # T=4, Hkv=2, m=2, n=2: r -> (i, j) = (r//2, r%2), g = 2j + i
    # r0: g0 heads 0,1 K0 | r1: g2 heads 4,5 K1 | r2: g1 heads 2,3 K0 | r3: g3 heads 6,7 K1
    lay = Layout(tp=4, kv_mult=2, qkv_linear=True, backend="trn1")
    want = {0: ([0, 1], 0), 1: ([4, 5], 1), 2: ([2, 3], 0), 3: ([6, 7], 1)}
    sd = head_tagged_state(SMALL)
    for r, (qh, kh) in want.items():
        st = rank_state(sd, SMALL, lay, r, 0)
        assert row_tags(st["model.layers.1.self_attn.qkv_proj.weight_q"], 4) == qh
        assert row_tags(st["model.layers.1.self_attn.qkv_proj.weight_k"], 4) == [1000 + kh]
        assert row_tags(st["model.layers.1.self_attn.qkv_proj.weight_v"], 4) == [2000 + kh]
        assert col_tags(st["model.layers.1.self_attn.o_proj.weight"], 4) == qh


def test_trn2_m2_tp4_by_hand():
    # trn2: Q in order (r -> heads 2r, 2r+1); K/V repeat_interleave: K0 K0 K1 K1 -> rank r holds K(r//2)
    lay = Layout(tp=4, kv_mult=2, qkv_linear=True, backend="trn2")
    sd = head_tagged_state(SMALL)
    for r in range(4):
        st = rank_state(sd, SMALL, lay, r, 0)
        assert row_tags(st["model.layers.0.self_attn.qkv_proj.weight_q"], 4) == [2 * r, 2 * r + 1]
        assert row_tags(st["model.layers.0.self_attn.qkv_proj.weight_k"], 4) == [1000 + r // 2]
        assert row_tags(st["model.layers.0.self_attn.qkv_proj.weight_v"], 4) == [2000 + r // 2]
        assert col_tags(st["model.layers.0.self_attn.o_proj.weight"], 4) == [2 * r, 2 * r + 1]
        # Q heads of rank r belong to the KV head it holds (group size Hq/Hkv = 4)
        assert all(h // 4 == r // 2 for h in (2 * r, 2 * r + 1))


def test_trn1_trn2_differ_only_in_kv_for_m_gt_1():
    """With m = 4, T = 8: trn1 tiles K (K0 K1 K0 K1 ...), trn2 interleaves
    (K0 K0 K0 K0 K1 ...)."""
    sd = head_tagged_state(SMALL)
    k1 = [row_tags(rank_state(sd, SMALL, Layout(tp=8, kv_mult=4, qkv_linear=True), r, 0)
                   ["model.layers.0.self_attn.qkv_proj.weight_k"], 4)[0] - 1000 for r in range(8)]
    k2 = [row_tags(rank_state(sd, SMALL, Layout(tp=8, kv_mult=4, qkv_linear=True, backend="trn2"), r, 0)
                   ["model.layers.0.self_attn.qkv_proj.weight_k"], 4)[0] - 1000 for r in range(8)]
    assert k1 == [0, 1, 0, 1, 0, 1, 0, 1]
    assert k2 == [0, 0, 0, 0, 1, 1, 1, 1]


def test_trn2_m1_hkv_multiple_of_tp():
    d = Dims(L=1, h=32, Hq=8, Hkv=4, I=16, V=16, tied=False, head_dim=4)
    sd = head_tagged_state(d)
    lay = Layout(tp=2, qkv_linear=True, backend="trn2")
    for r in range(2):
        st = rank_state(sd, d, lay, r, 0)
        assert row_tags(st["model.layers.0.self_attn.qkv_proj.weight_q"], 4) == [4 * r + i for i in range(4)]
        assert row_tags(st["model.layers.0.self_attn.qkv_proj.weight_k"], 4) == [1000 + 2 * r, 1001 + 2 * r]


def test_plain_cuts_and_gate_up():
    sd = head_tagged_state(SMALL)
    st = rank_state(sd, SMALL, Layout(tp=2), 1, 0)
    assert torch.equal(st["model.layers.0.self_attn.q_proj.weight"], sd["model.layers.0.self_attn.q_proj.weight"][16:])
    assert torch.equal(st["model.layers.0.self_attn.k_proj.weight"], sd["model.layers.0.self_attn.k_proj.weight"][4:])
    assert torch.equal(st["model.layers.0.self_attn.o_proj.weight"], sd["model.layers.0.self_attn.o_proj.weight"][:, 16:])
    gu = st["model.layers.0.mlp.gate_up_proj.weight"]
    assert gu[:, 0].tolist() == list(range(8, 16)) + list(range(10008, 10016))
    assert st["model.layers.0.mlp.down_proj.weight"][0].tolist() == list(range(8, 16))
    assert st["model.embed_tokens.weight"][:, 0].tolist() == list(range(8, 16))
    assert st["lm_head.weight"][:, 0].tolist() == [-float(i) for i in range(8, 16)]
    assert torch.equal(st["model.layers.1.input_layernorm.weight"], torch.full((32,), 101.0))


def test_key_order_unfused_and_fused():
    sd = head_tagged_state(SMALL)
    st = rank_state(sd, SMALL, Layout(tp=2, qkv_linear=True), 0, 0)
    per_layer = ["self_attn.qkv_proj.weight_q", "self_attn.qkv_proj.weight_k", "self_attn.qkv_proj.weight_v",
                 "self_attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight",
                 "input_layernorm.weight", "post_attention_layernorm.weight"]
    assert list(st) == (["model.embed_tokens.weight"]
                        + [f"model.layers.{l}.{s}" for l in range(2) for s in per_layer]
                        + ["model.norm.weight", "lm_head.weight"])
    st = rank_state(sd, SMALL, Layout(tp=2, qkv_linear=True, fuse_qkv=True), 0, 0)
    assert list(st) == (["model.embed_tokens.weight"]
                        + [f"model.layers.{l}.{s}" for l in range(2) for s in per_layer[3:]]
                        + ["model.norm.weight", "lm_head.weight"]
                        + [f"model.layers.{l}.self_attn.qkv_proj.weight_qkv" for l in range(2)])
    q = st["model.layers.1.self_attn.qkv_proj.weight_qkv"]
    assert row_tags(q, 4) == [0, 1, 2, 3, 1000, 2000]
    st = rank_state(sd, SMALL, Layout(tp=2), 0, 0)
    plain = ["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"] + per_layer[3:]
    assert list(st) == (["model.embed_tokens.weight"]
                        + [f"model.layers.{l}.{s}" for l in range(2) for s in plain]
                        + ["model.norm.weight", "lm_head.weight"])


@pytest.mark.parametrize("L,P,V,want", [
    (5, 2, 1, [[0, 1], [2, 3, 4]]),
    (5, 3, 1, [[0], [1, 2], [3, 4]]),
    (5, 2, 2, [[0], [1], [2], [3, 4]]),
    (80, 8, 1, [list(range(10 * i, 10 * i + 10)) for i in range(8)]),
    (7, 2, 2, [[0], [1, 2], [3, 4], [5, 6]]),
], ids=["L5P2", "L5P3", "L5P2V2", "L80P8", "L7P2V2"])
def test_stage_split(L, P, V, want):
    assert stage_layers(L, P, V) == want


def test_pp_rank_of_virtual_stages():
    # S = 4 stages of [0] [1] [2] [3,4]; stage s -> pp s % 2
    assert pp_layers(5, 2, 2, 0) == [0, 2]
    assert pp_layers(5, 2, 2, 1) == [1, 3, 4]
    with pytest.raises(LayoutError):
        stage_layers(5, 3, 2)


def test_trainer_layout_cuts_q_heads_contiguously():
    """m 1 and T dividing Hkv (Hq 16, Hkv 8, T 4; GQAQKVColumnParallelLinear
    cuts Q, K and V on dim 0 alike): rank r holds Q heads 4r..4r+3 and KV
    heads 2r, 2r+1 (each Q head j belongs to KV head j // 2), on trn1 and trn2."""
    d = Dims(L=1, h=64, Hq=16, Hkv=8, I=16, V=16, tied=False, head_dim=4)
    sd = {"model.embed_tokens.weight": torch.zeros(16, 64), "lm_head.weight": torch.zeros(16, 64),
          "model.norm.weight": torch.zeros(64), "model.layers.0.input_layernorm.weight": torch.zeros(64),
          "model.layers.0.post_attention_layernorm.weight": torch.zeros(64),
          "model.layers.0.self_attn.q_proj.weight": torch.arange(64.0).repeat_interleave(64).reshape(64, 64),
          "model.layers.0.self_attn.k_proj.weight": torch.arange(32.0).repeat_interleave(64).reshape(32, 64),
          "model.layers.0.self_attn.v_proj.weight": torch.zeros(32, 64),
          "model.layers.0.self_attn.o_proj.weight": torch.zeros(64, 64),
          "model.layers.0.mlp.gate_proj.weight": torch.zeros(16, 64), "model.layers.0.mlp.up_proj.weight": torch.zeros(16, 64),
          "model.layers.0.mlp.down_proj.weight": torch.zeros(64, 16)}
    for backend in ("trn1", "trn2"):
        lay = Layout(tp=4, qkv_linear=True, backend=backend)
        for r in range(4):
            assert q_heads_of_rank(d, lay, r) == [4 * r, 4 * r + 1, 4 * r + 2, 4 * r + 3]
            st = rank_state(sd, d, lay, r, 0)
            # rows hold their own row number: Q rows 16r..16r+15, K rows 8r..8r+7
            assert st["model.layers.0.self_attn.qkv_proj.weight_q"][:, 0].tolist() == list(range(16 * r, 16 * r + 16))
            assert st["model.layers.0.self_attn.qkv_proj.weight_k"][:, 0].tolist() == list(range(8 * r, 8 * r + 8))


def test_validate_conditions():
    # Layout(tp=1, qkv_linear=True): m 1 with T dividing Hkv, as NxD's trainer trains (on trn1 too)
    ok = [Layout(tp=2, qkv_linear=True), Layout(tp=4, kv_mult=2, qkv_linear=True),
          Layout(tp=2, qkv_linear=True, backend="trn2"), Layout(tp=1, qkv_linear=True, backend="trn2"),
          Layout(tp=1, qkv_linear=True), Layout(tp=8, kv_mult=4, qkv_linear=True, backend="trn2"), Layout(tp=8)]
    bad = [Layout(tp=4, qkv_linear=True),
           Layout(tp=4, qkv_linear=True, backend="trn2"), Layout(tp=8, kv_mult=2, qkv_linear=True, backend="trn2"),
           Layout(tp=2, fuse_qkv=True), Layout(tp=16, kv_mult=8, qkv_linear=True), Layout(tp=3)]
    for lay in ok:
        validate(SMALL, lay)
    for lay in bad:
        with pytest.raises(LayoutError):
            validate(SMALL, lay)
    with pytest.raises(LayoutError):
        validate(Dims(L=2, h=64, Hq=8, Hkv=2, I=16, V=16, tied=False, head_dim=16), Layout(tp=2, qkv_linear=True))
    validate(Dims(L=2, h=64, Hq=8, Hkv=2, I=16, V=16, tied=False, head_dim=16), Layout(tp=2))


def test_dtype_casts_match_hand_values():
    x = torch.tensor([1 + 2**-8, 1 + 3 * 2**-8, 3.4028234663852886e38, 3.3895313892515355e38])
    assert x.to(torch.bfloat16).float().tolist() == [1.0, 1 + 2**-6, float("inf"), 3.3895313892515355e38]
    y = torch.tensor([65519.0, 65520.0, 1 + 2**-11, 1 + 3 * 2**-11])
    assert y.to(torch.float16).float().tolist() == [65504.0, float("inf"), 1.0, 1 + 2**-9]


# ---------------------------------------------------------------------------
# checkpoint builders


@pytest.mark.parametrize("name", sorted(C.SPECS))
def test_checkpoint_builder(ckpts, name):
    ck = ckpts.get(name)  # builds and runs verify_checkpoint
    total = sum(p.stat().st_size for p in ck.path.iterdir())
    assert total < 10 * 2**20, f"{name} is {total} bytes"
    d = Dims.from_config(ck.config)
    s = ck.spec
    assert (d.L, d.h, d.Hq, d.Hkv, d.I, d.V, d.tied) == (s.layers, s.hidden, s.heads, s.kv_heads, s.inter,
                                                         s.vocab, s.tied)
    assert ck.config["architectures"] == [{"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM"}[s.arch]]
    dt = ck.config.get("dtype", ck.config.get("torch_dtype"))
    assert dt == C.DTYPE_NAMES[s.dtype]
    for k in s.drop_config_keys:
        assert k not in ck.config
    # reference works on every file of a plain tp1 layout and reproduces the state dict
    st = rank_state(ck.state_dict, d, Layout(), 0, 0)
    for k, v in st.items():
        if k.endswith("gate_up_proj.weight"):
            p = k[: -len("gate_up_proj.weight")]
            v2 = torch.cat([ck.state_dict[p + "gate_proj.weight"], ck.state_dict[p + "up_proj.weight"]])
            assert torch.equal(v, v2)
        else:
            assert torch.equal(v, ck.state_dict[k]), k


def test_tied_lm_head_comes_from_embedding(ckpts):
    ck = ckpts.get("tied")
    d = Dims.from_config(ck.config)
    st = rank_state(ck.state_dict, d, Layout(tp=2, pp=2), 1, 1)
    emb = ck.state_dict["model.embed_tokens.weight"]
    assert torch.equal(st["lm_head.weight"], emb[d.V // 2 :])


def test_f64_edge_values_double_round_in_torch(ckpts):
    """torch narrows float64 through float32; the f64 checkpoint holds values
    where that differs from a direct, correctly rounded conversion."""
    ck = ckpts.get("f64")
    w = ck.state_dict["model.norm.weight"]
    assert w.dtype == torch.float64
    n0 = len(C.EDGE_VALUES)
    assert w[n0 : n0 + len(C.F64_EDGE_VALUES)].tolist() == C.F64_EDGE_VALUES
    assert w[n0 : n0 + 3].to(torch.bfloat16).double().tolist() == [1.0, -1.0, 1 + 2**-6]
    assert w[n0 + 3 : n0 + 5].to(torch.float16).double().tolist() == [1.0, float("inf")]


def test_deep_key_counts(ckpts):
    ck = ckpts.get("deep")
    d = Dims.from_config(ck.config)
    assert [len(rank_state(ck.state_dict, d, Layout(pp=3), 0, p)) for p in range(3)] == [1001, 1000, 1002]


@pytest.mark.parametrize("n", [1, 2, 999, 1000, 1001, 2000, 2001])
def test_torch_save_dict_batching(tmp_path, n):
    """What torch.save (the C pickler, on an exact dict) does with item
    batches -- the authority the deep-* cases are compared with: a dict of
    exactly one item is a bare SETITEM; otherwise every batch of up to 1000
    items is MARK ... SETITEMS, a trailing batch of one included, and a size
    that is a multiple of 1000 ends with an empty MARK SETITEMS."""
    import pickletools
    import zipfile

    torch.save({f"k{i}": torch.zeros(1) for i in range(n)}, tmp_path / "d.pt")
    with zipfile.ZipFile(tmp_path / "d.pt") as z:
        pkl = z.read("d/data.pkl")
    ops = [op.name for op, _, _ in pickletools.genops(pkl)]
    # the dict's own MARKs: tensors use MARK twice each (args tuple, storage tuple)
    marks = ops.count("MARK") - 2 * n
    if n == 1:
        assert (marks, ops.count("SETITEMS"), ops.count("SETITEM")) == (0, 0, 1)
    else:
        batches = n // 1000 + 1 if n % 1000 == 0 else -(-n // 1000)
        assert (marks, ops.count("SETITEMS"), ops.count("SETITEM")) == (batches, batches, 0)


def test_edge_values_present(ckpts):
    ck = ckpts.get("uneven")
    w = ck.state_dict["model.norm.weight"]
    assert w.dtype == torch.float32
    assert w[: len(C.EDGE_VALUES)].tolist() == torch.tensor(C.EDGE_VALUES, dtype=torch.float32).tolist()
    assert torch.isinf(w.to(torch.float16)).sum() >= 3 and torch.isinf(w.to(torch.bfloat16)).sum() == 1


def test_safetensors_writer_roundtrip(ckpts, tmp_path):
    from safetensors.torch import load_file

    ck = ckpts.get("mha")
    entries, meta, data = C.read_safetensors(ck.path / "model.safetensors")
    p = tmp_path / "x.safetensors"
    C.write_safetensors_raw(p, C.header_json(entries, meta), data)
    a, b = load_file(str(p)), load_file(str(ck.path / "model.safetensors"))
    assert list(a) and a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8 : 8 + n].rstrip(b" ").endswith(b"}")
    entries2, data2 = C.pack_tensors(OrderedDict(sorted(b.items())))
    C.write_safetensors_raw(p, C.header_json(entries2), data2)
    a = load_file(str(p))
    assert all(torch.equal(a[k], b[k]) for k in b)


# ---------------------------------------------------------------------------
# byte-comparison helpers


def test_byte_compare_helpers(tmp_path):
    torch.serialization.set_crc32_options(True)
    d = {"a": torch.arange(300, dtype=torch.bfloat16), "b": torch.ones(3, 2)}
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    torch.save(d, tmp_path / "x" / "f.pt")
    torch.save(d, tmp_path / "y" / "f.pt")
    x, y = tmp_path / "x" / "f.pt", tmp_path / "y" / "f.pt"
    sid_x, sid_y = serialization_id(x), serialization_id(y)
    assert len(sid_x) == 40 and sid_x.isdigit()
    if sid_x != sid_y:  # ids differ, rest equal
        assert first_difference(x, y) is not None
    assert_same_pt_bytes(x, y)  # takes x's id over into y, CRC-32 recomputed
    assert serialization_id(y) == sid_x and x.read_bytes() == y.read_bytes()
    with zipfile.ZipFile(y) as z:
        assert z.testzip() is None
    off, n = serialization_id_span(x)
    assert x.read_bytes()[off : off + n] == sid_x
    # every record starts at a multiple of 64 and the names are as docs/formats/pt.md lists
    names = [m.name for m in zip_layout(x).members]
    assert names == ["f/data.pkl", "f/.format_version", "f/.storage_alignment", "f/byteorder",
                     "f/data/0", "f/data/1", "f/version", "f/.data/serialization_id"]
    assert all(m.data_offset % 64 == 0 for m in zip_layout(x).members)
    # a one-byte change in a data record is caught and located
    raw = bytearray(y.read_bytes())
    m = [m for m in zip_layout(y).members if m.name == "f/data/1"][0]
    raw[m.data_offset + 3] ^= 1
    y.write_bytes(bytes(raw))
    with pytest.raises(AssertionError, match=r"data of 'f/data/1' \(\+3"):
        assert_same_pt_bytes(x, y)
    # a different pickle is explained op by op
    torch.save({"a": d["a"], "c": d["b"]}, y)
    with pytest.raises(AssertionError, match="pickle differs"):
        assert_same_pt_bytes(x, y)
    # a different basename (archive name) is caught
    (tmp_path / "z").mkdir()
    torch.save(d, tmp_path / "z" / "g.pt")
    with pytest.raises(AssertionError):
        assert_same_pt_bytes(x, tmp_path / "z" / "g.pt")


def test_odd_checkpoint_hits_pad_0_and_63(ckpts, tmp_path):
    """The odd-pad0-pad63 case keeps exercising both extreme FB pads."""
    ck = ckpts.get("odd")
    st = rank_state(ck.state_dict, Dims.from_config(ck.config), Layout(), 0, 0)
    f = tmp_path / "dp_rank_00_tp_rank_00_pp_rank_00.pt"
    torch.save(dict(st), f)
    pads = {}
    for m in zip_layout(f).members:
        hid, n = struct.unpack("<HH", m.extra[:4])
        assert hid == 0x4246 and len(m.extra) == 4 + n and m.data_offset % 64 == 0
        pads[m.name.split("/", 1)[1]] = n
    assert pads[".format_version"] == 0 and pads["data/8"] == 63, pads
