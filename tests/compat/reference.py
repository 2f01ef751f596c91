"""The project's one reference of the NxD layout (docs/formats/nxd-layout.md) in torch ops,
independent of ShardFS: the compatibility tests judge ShardFS by it, and
bench/check_layout.py checks rank files with it. (The benchmark baselines,
bench/python_pipeline.py and python_merge.py, restate the layout on purpose:
they stand for what a user would write. tests/stress/rankcheck.py restates
nothing: it takes the slices from `shardfs plan --json`, which the tests
check against this file.)

Given the HF model's state_dict() (tied models: lm_head.weight present and
equal to embed_tokens) and a layout, `rank_state` returns, for one
(tp_rank, pp_rank), the ordered dict key -> tensor that the rank file
must hold, in the spec's key order and the output dtype. Tensors are
contiguous clones that own their storage (so torch.save of the result is the
byte reference of docs/formats/pt.md).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional

import torch


class LayoutError(ValueError):
    """The layout is one the spec says ShardFS must refuse."""


@dataclass(frozen=True)
class Dims:
    L: int  # num_hidden_layers
    h: int  # hidden_size
    Hq: int  # num_attention_heads
    Hkv: int  # num_key_value_heads
    I: int  # intermediate_size
    V: int  # vocab_size
    tied: bool
    head_dim: int  # d

    @staticmethod
    def from_config(cfg: dict) -> "Dims":
        hq = cfg["num_attention_heads"]
        h = cfg["hidden_size"]
        return Dims(
            L=cfg["num_hidden_layers"],
            h=h,
            Hq=hq,
            Hkv=cfg.get("num_key_value_heads", hq),
            I=cfg["intermediate_size"],
            V=cfg["vocab_size"],
            tied=bool(cfg.get("tie_word_embeddings", False)),
            head_dim=cfg.get("head_dim") or h // hq,
        )


@dataclass(frozen=True)
class Layout:
    tp: int = 1
    pp: int = 1
    vpp: int = 1
    kv_mult: int = 1
    qkv_linear: bool = False
    fuse_qkv: bool = False
    backend: str = "trn1"
    dtype: Optional[str] = None  # "float32" | "bfloat16" | "float16" | None (= source)

    def cli_args(self) -> list[str]:
        """Flags for `shardfs convert/plan`; defaults are left out so that the
        CLI's defaults are exercised too."""
        a = []
        if self.tp != 1:
            a += ["--tp-size", str(self.tp)]
        if self.pp != 1:
            a += ["--pp-size", str(self.pp)]
        if self.vpp != 1:
            a += ["--virtual-pp-size", str(self.vpp)]
        if self.kv_mult != 1:
            a += ["--kv-size-multiplier", str(self.kv_mult)]
        if self.qkv_linear:
            a += ["--qkv-linear"]
        if self.fuse_qkv:
            a += ["--fuse-qkv"]
        if self.backend != "trn1":
            a += ["--hw-backend", self.backend]
        if self.dtype is not None:
            a += ["--dtype", self.dtype]
        return a


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def hf_shapes(d: Dims) -> "OrderedDict[str, tuple]":
    """Hugging Face key -> shape of a Llama of these dims, in the state dict's order."""
    s: "OrderedDict[str, tuple]" = OrderedDict()
    s["model.embed_tokens.weight"] = (d.V, d.h)
    for l in range(d.L):
        p = f"model.layers.{l}."
        s[p + "self_attn.q_proj.weight"] = (d.Hq * d.head_dim, d.h)
        s[p + "self_attn.k_proj.weight"] = (d.Hkv * d.head_dim, d.h)
        s[p + "self_attn.v_proj.weight"] = (d.Hkv * d.head_dim, d.h)
        s[p + "self_attn.o_proj.weight"] = (d.h, d.Hq * d.head_dim)
        s[p + "mlp.gate_proj.weight"] = (d.I, d.h)
        s[p + "mlp.up_proj.weight"] = (d.I, d.h)
        s[p + "mlp.down_proj.weight"] = (d.h, d.I)
        s[p + "input_layernorm.weight"] = (d.h,)
        s[p + "post_attention_layernorm.weight"] = (d.h,)
    s["model.norm.weight"] = (d.h,)
    s["lm_head.weight"] = (d.V, d.h)
    return s


def rank_file_name(tp_rank: int, pp_rank: int) -> str:
    return f"dp_rank_00_tp_rank_{tp_rank:02d}_pp_rank_{pp_rank:02d}.pt"


def expected_files(layout: Layout) -> list[str]:
    return sorted(
        "model/" + rank_file_name(t, p) for t in range(layout.tp) for p in range(layout.pp)
    )


# ---------------------------------------------------------------------------
# pipeline split


def stage_layers(L: int, P: int, Vp: int = 1) -> list[list[int]]:
    """S = P*Vp stages, each L // S layers, the last L % S one more."""
    S = P * Vp
    if L < S:
        raise LayoutError(f"{L} layers < {S} stages")
    base, extra = divmod(L, S)
    out, start = [], 0
    for s in range(S):
        n = base + (1 if s >= S - extra else 0)
        out.append(list(range(start, start + n)))
        start += n
    assert start == L
    return out


def pp_layers(L: int, P: int, Vp: int, pp_rank: int) -> list[int]:
    """Layers of pipeline rank pp_rank (stage s -> rank s % P), ascending."""
    return sorted(
        l for s, ls in enumerate(stage_layers(L, P, Vp)) if s % P == pp_rank for l in ls
    )


# ---------------------------------------------------------------------------
# validation (the refusals of the spec that depend only on dims + layout)


def validate(d: Dims, lay: Layout) -> None:
    T = lay.tp
    stage_layers(d.L, lay.pp, lay.vpp)
    if lay.fuse_qkv and not lay.qkv_linear:
        raise LayoutError("fuse_qkv without qkv_linear")
    cuts = {
        "embed/lm_head vocab": d.V,
        "q rows": d.Hq * d.head_dim,
        "o cols": d.Hq * d.head_dim,
        "intermediate": d.I,
    }
    if not lay.qkv_linear:
        cuts["k/v rows"] = d.Hkv * d.head_dim
    for what, size in cuts.items():
        if size % T:
            raise LayoutError(f"{what} {size} % tp {T}")
    if lay.qkv_linear:
        if d.head_dim * d.Hq != d.h:
            raise LayoutError("head_dim != hidden/heads under qkv_linear")
        if d.Hq % T:
            raise LayoutError("Hq % T")
        m = lay.kv_mult
        if lay.backend not in ("trn1", "trn2"):
            raise LayoutError(lay.backend)
        # NxD's converter: Hkv*m == T; its trainer (GQAQKVColumnParallelLinear)
        # also trains with m == 1 and T dividing Hkv, on either backend.
        if not (d.Hkv * m == T or (m == 1 and d.Hkv % T == 0)):
            raise LayoutError(f"{lay.backend} needs Hkv*m == T or (m == 1 and Hkv % T == 0)")


# ---------------------------------------------------------------------------
# per-tensor cuts


def _cut(t: torch.Tensor, dim: int, r: int, T: int) -> torch.Tensor:
    size = t.shape[dim]
    assert size % T == 0, (tuple(t.shape), dim, T)
    k = size // T
    return t.narrow(dim, r * k, k)


def q_heads_of_rank(d: Dims, lay: Layout, r: int) -> list[int]:
    """Q (and O) head indices held by tensor rank r under qkv_linear: on trn1
    with KV heads replicated (m > 1, Hkv*m == T), the converter's shuffle
    that gives rank r the Q heads of KV head r % Hkv; else (trn2, or m == 1,
    where the trainer's GQAQKVColumnParallelLinear cuts Q contiguously)
    heads r*n ... r*n+n-1."""
    T = lay.tp
    n = d.Hq // T
    if lay.backend == "trn1" and lay.kv_mult > 1:
        i, j = r // d.Hkv, r % d.Hkv
        g = j * (T // d.Hkv) + i
    else:
        g = r
    return list(range(g * n, g * n + n))


def _heads(t: torch.Tensor, dim: int, heads: list[int], hd: int) -> torch.Tensor:
    return torch.cat([t.narrow(dim, hh * hd, hd) for hh in heads], dim=dim)


def _kv(t: torch.Tensor, d: Dims, lay: Layout, r: int) -> torch.Tensor:
    m, hd = lay.kv_mult, d.head_dim
    if lay.backend == "trn1":
        full = t.repeat(m, 1)  # K0..K(Hkv-1), K0.., m times
    else:
        # each head block m times in a row: K0 x m, K1 x m, ...
        full = t.reshape(d.Hkv, hd, t.shape[1]).repeat_interleave(m, dim=0)
        full = full.reshape(d.Hkv * m * hd, t.shape[1])
    return _cut(full, 0, r, lay.tp)


def _final(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    return t.to(dtype or t.dtype).clone(memory_format=torch.contiguous_format)


def rank_state(
    sd: "dict[str, torch.Tensor]", d: Dims, lay: Layout, tp_rank: int, pp_rank: int
) -> "OrderedDict[str, torch.Tensor]":
    validate(d, lay)
    T, r = lay.tp, tp_rank
    # lay.dtype, else each tensor its own (a bf16 run's float32 norms stay float32)
    out_dtype = DTYPES[lay.dtype] if lay.dtype else None
    hd = d.head_dim
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    fused: "OrderedDict[str, torch.Tensor]" = OrderedDict()

    def put(k, t):
        assert k not in out
        out[k] = _final(t, out_dtype)

    if pp_rank == 0:
        put("model.embed_tokens.weight", _cut(sd["model.embed_tokens.weight"], 0, r, T))
    for l in pp_layers(d.L, lay.pp, lay.vpp, pp_rank):
        p = f"model.layers.{l}."
        q = sd[p + "self_attn.q_proj.weight"]
        k = sd[p + "self_attn.k_proj.weight"]
        v = sd[p + "self_attn.v_proj.weight"]
        o = sd[p + "self_attn.o_proj.weight"]
        if lay.qkv_linear:
            heads = q_heads_of_rank(d, lay, r)
            qq = _heads(q, 0, heads, hd)
            kk = _kv(k, d, lay, r)
            vv = _kv(v, d, lay, r)
            oo = _heads(o, 1, heads, hd)
            if lay.fuse_qkv:
                fused[p + "self_attn.qkv_proj.weight_qkv"] = _final(
                    torch.cat([qq, kk, vv], dim=0), out_dtype
                )
            else:
                put(p + "self_attn.qkv_proj.weight_q", qq)
                put(p + "self_attn.qkv_proj.weight_k", kk)
                put(p + "self_attn.qkv_proj.weight_v", vv)
            put(p + "self_attn.o_proj.weight", oo)
        else:
            put(p + "self_attn.q_proj.weight", _cut(q, 0, r, T))
            put(p + "self_attn.k_proj.weight", _cut(k, 0, r, T))
            put(p + "self_attn.v_proj.weight", _cut(v, 0, r, T))
            put(p + "self_attn.o_proj.weight", _cut(o, 1, r, T))
        gate = _cut(sd[p + "mlp.gate_proj.weight"], 0, r, T)
        up = _cut(sd[p + "mlp.up_proj.weight"], 0, r, T)
        put(p + "mlp.gate_up_proj.weight", torch.cat([gate, up], dim=0))
        put(p + "mlp.down_proj.weight", _cut(sd[p + "mlp.down_proj.weight"], 1, r, T))
        put(p + "input_layernorm.weight", sd[p + "input_layernorm.weight"])
        put(p + "post_attention_layernorm.weight", sd[p + "post_attention_layernorm.weight"])
    if pp_rank == lay.pp - 1:
        put("model.norm.weight", sd["model.norm.weight"])
        put("lm_head.weight", _cut(sd["lm_head.weight"], 0, r, T))
    for k2, t in fused.items():
        out[k2] = t
    return out


def all_rank_states(sd, d: Dims, lay: Layout):
    """{relative path: rank_state} for every file of the layout."""
    return {
        "model/" + rank_file_name(t, p): rank_state(sd, d, lay, t, p)
        for t in range(lay.tp)
        for p in range(lay.pp)
    }
