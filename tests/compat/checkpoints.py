"""Tiny Hugging Face Llama checkpoints for the ShardFS compatibility tests.

Every checkpoint is built with real transformers classes (LlamaConfig /
LlamaForCausalLM, MistralConfig / MistralForCausalLM) under a fixed
torch.manual_seed and written with save_pretrained(safe_serialization=True).
The builder keeps the model's state_dict() (which, for tied models, holds an
lm_head.weight equal to embed_tokens, as the NxD converter's input does) and
checks that the files on disk hold exactly those tensors.

Also here: raw safetensors reading/writing, used to corrupt checkpoints by
hand for the error tests, and the sparse >4 GiB checkpoint of the zip64 test.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from reference import Dims

DTYPE_NAMES = {
    torch.float64: "float64",
    torch.float32: "float32",
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
}
NAME_TO_DTYPE = {v: k for k, v in DTYPE_NAMES.items()}

# safetensors dtype tags
ST_DTYPES = {torch.float64: "F64", torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16"}
ST_TO_DTYPE = {v: k for k, v in ST_DTYPES.items()}


@dataclass(frozen=True)
class CkptSpec:
    name: str
    hidden: int
    heads: int
    kv_heads: int
    inter: int
    vocab: int
    layers: int
    dtype: torch.dtype = torch.bfloat16
    tied: bool = False
    # None: single model.safetensors; else max_shard_size for save_pretrained
    shard_size: Optional[str] = None
    arch: str = "llama"  # or "mistral"
    head_dim: Optional[int] = None  # None: hidden // heads
    seed: int = 0
    # config.json edits applied after save_pretrained:
    # keys to drop, and keys to rename (old -> new)
    drop_config_keys: tuple = ()
    rename_config_keys: tuple = ()  # ((old, new), ...)
    # put hand-picked rounding/overflow edge values into model.norm.weight
    edge_values: bool = False


# Values that exercise round-to-nearest-even and overflow when narrowing
# float32 to bfloat16 / float16 (torch's .to() is the reference).
EDGE_VALUES = [
    1.0 + 2.0**-8,  # bf16 tie -> 1.0 (even)
    1.0 + 3 * 2.0**-8,  # bf16 tie -> 1 + 2^-6 (even)
    -(1.0 + 2.0**-8),
    1.0 + 2.0**-11,  # f16 tie -> 1.0
    1.0 + 3 * 2.0**-11,  # f16 tie -> 1 + 2^-9
    65504.0,  # f16 max
    65519.0,  # f16: rounds down to 65504
    65520.0,  # f16: rounds to inf
    -70000.0,  # f16: -inf
    3.3895313892515355e38,  # bf16 max, exact
    3.4028234663852886e38,  # f32 max: bf16 inf, f16 inf
    1e-8,  # f16 subnormal range
    -3e-8,  # f16 subnormal / tie region
    5.96e-8,  # ~smallest f16 subnormal
    2.0**-150,  # f32 subnormal
    1e-40,  # f32 subnormal
    -0.0,
    0.1,
    -0.3333333,
    1.00390625,  # exactly 1 + 2^-8
    1.01171875,  # exactly representable in bf16
]


# float64 sources: torch narrows float64 to bfloat16/float16 through float32
# (double rounding), which a direct, correctly rounded conversion does not
# reproduce on these values.
F64_EDGE_VALUES = [
    1.0 + 2.0**-8 + 2.0**-30,  # bf16: torch 1.0, direct 1 + 2^-7
    -(1.0 + 2.0**-8 + 2.0**-30),
    1.0 + 3 * 2.0**-8 - 2.0**-30,  # bf16: torch 1 + 2^-6, direct 1 + 2^-7
    1.0 + 2.0**-11 + 2.0**-30,  # f16: torch 1.0, direct 1 + 2^-10
    65519.99999999,  # f16: torch inf (f32 65520), direct 65504
    1e300,  # beyond f32: inf
    -1e300,
    1e-300,  # below f32: 0
    0.75 * 2.0**-149,  # rounds to the smallest f32 subnormal
    0.1,  # not representable in f32
]

SPECS = {
    s.name: s
    for s in [
        # GQA, bf16, sharded with an index
        CkptSpec("gqa", hidden=64, heads=8, kv_heads=2, inter=128, vocab=256,
                 layers=2, shard_size="64KB", seed=1),
        # MHA, bf16, single file
        CkptSpec("mha", hidden=64, heads=4, kv_heads=4, inter=128, vocab=128,
                 layers=2, seed=2),
        # tied embeddings: files hold no lm_head.weight
        CkptSpec("tied", hidden=64, heads=8, kv_heads=4, inter=128, vocab=128,
                 layers=2, tied=True, seed=3),
        # Llama-3-70B's 64/8 head ratio at small width (head_dim 8), sharded
        CkptSpec("r64x8", hidden=512, heads=64, kv_heads=8, inter=128, vocab=128,
                 layers=2, shard_size="1MB", seed=4),
        # 5 layers (uneven over 2, 3, 4 stages), float32, sharded,
        # config spells the dtype "torch_dtype", edge values in model.norm
        CkptSpec("uneven", hidden=64, heads=8, kv_heads=2, inter=128, vocab=128,
                 layers=5, dtype=torch.float32, shard_size="100KB", seed=5,
                 rename_config_keys=(("dtype", "torch_dtype"),), edge_values=True),
        # float16 source
        CkptSpec("f16", hidden=64, heads=8, kv_heads=2, inter=128, vocab=128,
                 layers=2, dtype=torch.float16, seed=6),
        # float64 source (stored F64) with double-rounding edge values
        CkptSpec("f64", hidden=64, heads=8, kv_heads=2, inter=128, vocab=128,
                 layers=2, dtype=torch.float64, seed=13, edge_values=True),
        # 375 layers: >= 1000 keys per rank file (pickle batches of 1000
        # items, a trailing batch of one, an exact multiple of 1000, memo
        # indices >= 256)
        CkptSpec("deep", hidden=8, heads=2, kv_heads=1, inter=8, vocab=16,
                 layers=375, shard_size="200KB", seed=14),
        # sizes chosen so that the tp1 rank file has records whose FB pad
        # is 0 (.format_version: data.pkl size = 30 mod 64) and 63 (data/8,
        # after a 104-byte norm)
        CkptSpec("odd", hidden=52, heads=2, kv_heads=1, inter=16, vocab=16,
                 layers=3, seed=15),
        # MistralForCausalLM is accepted too
        CkptSpec("mistral", hidden=64, heads=8, kv_heads=2, inter=128, vocab=128,
                 layers=2, arch="mistral", seed=7),
        # head_dim != hidden / heads (fine without qkv_linear, refused with it)
        CkptSpec("headdim16", hidden=64, heads=8, kv_heads=2, inter=128, vocab=128,
                 layers=2, head_dim=16, seed=8),
        # MHA without num_key_value_heads in config.json (defaults to heads)
        CkptSpec("mha_nokv", hidden=64, heads=4, kv_heads=4, inter=128, vocab=128,
                 layers=2, seed=9, drop_config_keys=("num_key_value_heads",)),
        # hidden 64 not divisible by tp 3, while vocab/intermediate are
        CkptSpec("h64_v96", hidden=64, heads=8, kv_heads=8, inter=96, vocab=96,
                 layers=1, seed=10),
        # vocab 100 not divisible by tp 8
        CkptSpec("v100", hidden=64, heads=8, kv_heads=8, inter=128, vocab=100,
                 layers=1, seed=11),
        # intermediate 100 not divisible by tp 8
        CkptSpec("i100", hidden=64, heads=8, kv_heads=8, inter=100, vocab=128,
                 layers=1, seed=12),
    ]
}


def dims(name: str) -> Dims:
    """The reference's Dims of the spec `name`, known before anything is built
    (the cases check their layouts against the spec at import)."""
    s = SPECS[name]
    return Dims(L=s.layers, h=s.hidden, Hq=s.heads, Hkv=s.kv_heads, I=s.inter, V=s.vocab,
                tied=s.tied, head_dim=s.head_dim or s.hidden // s.heads)


@dataclass
class Checkpoint:
    spec: CkptSpec
    path: Path
    config: dict
    # the HF model's state_dict() (tied: lm_head.weight == embed_tokens)
    state_dict: "OrderedDict[str, torch.Tensor]" = field(repr=False)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def dtype(self) -> torch.dtype:
        return self.spec.dtype

    def files(self) -> list[str]:
        return sorted(p.name for p in self.path.iterdir() if p.name.endswith(".safetensors"))

    def copy_to(self, dst: Path) -> Path:
        shutil.copytree(self.path, dst)
        return dst


def _make_model(spec: CkptSpec):
    import transformers

    kw = dict(
        hidden_size=spec.hidden,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.kv_heads,
        intermediate_size=spec.inter,
        vocab_size=spec.vocab,
        num_hidden_layers=spec.layers,
        tie_word_embeddings=spec.tied,
        max_position_embeddings=128,
    )
    if spec.head_dim is not None:
        kw["head_dim"] = spec.head_dim
    if spec.arch == "llama":
        cfg = transformers.LlamaConfig(**kw)
        cls = transformers.LlamaForCausalLM
    elif spec.arch == "mistral":
        cfg = transformers.MistralConfig(**kw)
        cls = transformers.MistralForCausalLM
    else:
        raise ValueError(spec.arch)
    torch.manual_seed(spec.seed)
    model = cls(cfg)
    gen = torch.Generator().manual_seed(1000 + spec.seed)
    with torch.no_grad():
        # HF initialises every RMSNorm to ones; make them distinct so that a
        # misplaced norm is caught.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
    model = model.to(spec.dtype)
    if spec.edge_values:
        with torch.no_grad():
            w = model.model.norm.weight
            vals = EDGE_VALUES + (F64_EDGE_VALUES if spec.dtype == torch.float64 else [])
            w[: len(vals)] = torch.tensor(vals, dtype=torch.float64).to(spec.dtype)
    return model


def build_checkpoint(spec: CkptSpec, dst: Path) -> Checkpoint:
    model = _make_model(spec)
    sd = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    kwargs = dict(safe_serialization=True)
    if spec.shard_size is not None:
        kwargs["max_shard_size"] = spec.shard_size
    else:
        kwargs["max_shard_size"] = "1GB"
    model.save_pretrained(str(dst), **kwargs)
    # keep only what a checkpoint directory needs
    gc = dst / "generation_config.json"
    if gc.exists():
        gc.unlink()
    cfg_path = dst / "config.json"
    config = json.loads(cfg_path.read_text())
    for k in spec.drop_config_keys:
        config.pop(k, None)
    for old, new in spec.rename_config_keys:
        if old in config:
            config[new] = config.pop(old)
    cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    ck = Checkpoint(spec=spec, path=dst, config=config, state_dict=sd)
    verify_checkpoint(ck)
    return ck


def load_checkpoint_tensors(path: Path) -> "OrderedDict[str, torch.Tensor]":
    """All tensors stored in the directory, via the safetensors library."""
    from safetensors.torch import load_file

    out = OrderedDict()
    for f in sorted(path.glob("*.safetensors")):
        for k, v in load_file(str(f)).items():
            assert k not in out, f"{k} stored twice"
            out[k] = v
    return out


def verify_checkpoint(ck: Checkpoint) -> None:
    """Builder self-check: the files hold exactly the state dict (minus a
    tied lm_head), the index exists exactly when sharded, dims match."""
    spec = ck.spec
    stored = load_checkpoint_tensors(ck.path)
    expect = OrderedDict(ck.state_dict)
    if spec.tied:
        assert "lm_head.weight" not in stored, "tied checkpoint stores lm_head.weight"
        assert torch.equal(expect["lm_head.weight"], expect["model.embed_tokens.weight"])
        del expect["lm_head.weight"]
    assert set(stored) == set(expect), (set(stored) ^ set(expect))
    for k, v in expect.items():
        assert stored[k].dtype == spec.dtype, (k, stored[k].dtype)
        assert torch.equal(stored[k], v), k
    has_index = (ck.path / "model.safetensors.index.json").exists()
    single = (ck.path / "model.safetensors").exists()
    if spec.shard_size is not None:
        assert has_index and not single, f"{spec.name}: expected a sharded checkpoint"
        assert len(ck.files()) >= 2
    else:
        assert single and not has_index, f"{spec.name}: expected a single file"
    d = spec.head_dim or spec.hidden // spec.heads
    sd = ck.state_dict
    assert sd["model.layers.0.self_attn.q_proj.weight"].shape == (spec.heads * d, spec.hidden)
    assert sd["model.layers.0.self_attn.k_proj.weight"].shape == (spec.kv_heads * d, spec.hidden)
    assert sd["model.embed_tokens.weight"].shape == (spec.vocab, spec.hidden)
    assert not any(k.endswith(".bias") for k in sd)


# ---------------------------------------------------------------------------
# raw safetensors


@dataclass
class STEntry:
    name: str
    dtype: str  # safetensors tag, e.g. "BF16"
    shape: list
    begin: int
    end: int


def read_safetensors(path: Path):
    """-> (entries in data order, metadata dict or None, data bytes)."""
    raw = Path(path).read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    meta = header.pop("__metadata__", None)
    entries = [
        STEntry(k, v["dtype"], list(v["shape"]), v["data_offsets"][0], v["data_offsets"][1])
        for k, v in header.items()
    ]
    entries.sort(key=lambda e: e.begin)
    return entries, meta, raw[8 + n :]


def header_json(entries, meta=None) -> bytes:
    h = {}
    if meta is not None:
        h["__metadata__"] = meta
    for e in entries:
        h[e.name] = {"dtype": e.dtype, "shape": e.shape, "data_offsets": [e.begin, e.end]}
    return json.dumps(h, separators=(",", ":")).encode()


def write_safetensors_raw(path: Path, header: bytes, data: bytes, header_len: Optional[int] = None,
                          pad: bool = True) -> None:
    """8-byte little-endian header length + header + data. The header is
    padded with spaces to a multiple of 8 (as the safetensors library does)
    unless pad=False; header_len overrides the announced length."""
    if pad:
        header = header + b" " * (-len(header) % 8)
    n = len(header) if header_len is None else header_len
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", n))
        f.write(header)
        f.write(data)


def pack_tensors(tensors: "OrderedDict[str, torch.Tensor]"):
    """-> (entries, data) laying the tensors out contiguously in order."""
    entries, chunks, off = [], [], 0
    for k, t in tensors.items():
        b = tensor_bytes(t)
        entries.append(STEntry(k, ST_DTYPES[t.dtype], list(t.shape), off, off + len(b)))
        chunks.append(b)
        off += len(b)
    return entries, b"".join(chunks)


def tensor_bytes(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


# ---------------------------------------------------------------------------
# the sparse > 4 GiB checkpoint of the zip64 test

ZIP64_VOCAB = 2**24 + 8  # embed [V, 64] float32 = 4 GiB + 2 KiB
ZIP64_HIDDEN = 64


def build_sparse_zip64_checkpoint(dst: Path, seed: int = 21):
    """A 1-layer bf16 Llama whose embed_tokens and lm_head [2^24+8, 64] are
    sparse zeros (2 GiB each in bf16, > 4 GiB each in float32). Returns
    (small_tensors OrderedDict, config dict, big_shape)."""
    dst.mkdir(parents=True)
    V, h, heads, kv, inter = ZIP64_VOCAB, ZIP64_HIDDEN, 4, 2, 128
    d = h // heads
    g = torch.Generator().manual_seed(seed)

    def rnd(*shape):
        return (0.02 * torch.randn(*shape, generator=g)).to(torch.bfloat16)

    small = OrderedDict()
    small["model.layers.0.self_attn.q_proj.weight"] = rnd(heads * d, h)
    small["model.layers.0.self_attn.k_proj.weight"] = rnd(kv * d, h)
    small["model.layers.0.self_attn.v_proj.weight"] = rnd(kv * d, h)
    small["model.layers.0.self_attn.o_proj.weight"] = rnd(h, heads * d)
    small["model.layers.0.mlp.gate_proj.weight"] = rnd(inter, h)
    small["model.layers.0.mlp.up_proj.weight"] = rnd(inter, h)
    small["model.layers.0.mlp.down_proj.weight"] = rnd(h, inter)
    small["model.layers.0.input_layernorm.weight"] = (1 + rnd(h)).to(torch.bfloat16)
    small["model.layers.0.post_attention_layernorm.weight"] = (1 + rnd(h)).to(torch.bfloat16)
    small["model.norm.weight"] = (1 + rnd(h)).to(torch.bfloat16)
    entries, data = pack_tensors(small)
    off = len(data)
    big_bytes = V * h * 2
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        entries.append(STEntry(name, "BF16", [V, h], off, off + big_bytes))
        off += big_bytes
    header = header_json(entries, {"format": "pt"})
    header += b" " * (-len(header) % 8)
    path = dst / "model.safetensors"
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)))
        f.write(header)
        f.write(data)
        f.truncate(8 + len(header) + off)  # the two big tensors: a hole of zeros
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": h,
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "intermediate_size": inter,
        "vocab_size": V,
        "num_hidden_layers": 1,
        "head_dim": d,
        "tie_word_embeddings": False,
        "rms_norm_eps": 1e-6,
        "hidden_act": "silu",
        "max_position_embeddings": 128,
        "dtype": "bfloat16",
    }
    (dst / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return small, config, (V, h)
