"""The tiny Llama the ZeRO-1 harness trains: its Hugging Face config, a seeded
Hugging Face state dict, and a plain-torch forward over such a state dict.

The forward is the Hugging Face Llama's (RMSNorm, rotary embeddings, grouped
query attention with a causal mask, SiLU MLP, untied lm_head), written out in
torch ops so that it runs on an XLA device without transformers. Every layout
trains the same function of the same Hugging Face tensors: a layout only
changes how those tensors are cut into rank pieces (see pieces.py).

Dims are chosen so that ZeRO-1 has to pad: vocab 68 is 17 rows per rank at
TP 4 (padded to 18 at DP 2, 20 at DP 4), intermediate 76 gives a 38-row
gate_up_proj at TP 4.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "compat"))
from reference import Dims, hf_shapes  # noqa: E402

CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 48,
    "intermediate_size": 76,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_hidden_layers": 4,
    "vocab_size": 68,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 64,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "float32",
}

# Other models, by name (cases.Run.model): "kv4" has 4 KV heads (and 8 Q
# heads, head_dim 6), so that TP 2 with qkv_linear and KV multiplier 1 puts
# two whole KV heads and their four Q heads on each rank (the layout NxD's
# trainer trains in and its converter refuses).
MODELS = {
    "base": CONFIG,
    "kv4": {**CONFIG, "num_attention_heads": 8, "num_key_value_heads": 4},
}

# The fixed global batch: every layout and every DP size sees the same tokens.
BATCH, SEQ = 4, 16


def dims(cfg: dict = CONFIG) -> Dims:
    return Dims.from_config(cfg)


def init_state(d: Dims, seed: int, dtype: torch.dtype,
               norms_dtype: "torch.dtype | None" = None) -> "OrderedDict[str, torch.Tensor]":
    """Seeded weights: normal(0, 0.05) matrices, norms around 1 (not exactly
    1, so that a norm loaded from the wrong place shows). `norms_dtype`: the
    norms' own dtype (NxD's bf16 runs keep them float32)."""
    g = torch.Generator().manual_seed(seed)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    for k, shape in hf_shapes(d).items():
        if len(shape) == 1:
            t = 1.0 + 0.1 * torch.randn(shape, generator=g)
        else:
            t = 0.05 * torch.randn(shape, generator=g)
        out[k] = t.to(norms_dtype if len(shape) == 1 and norms_dtype is not None else dtype)
    return out


def tokens(d: Dims, seed: int = 1234) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, d.V, (BATCH, SEQ), generator=g)


def _rms_norm(x, w, eps):
    # As transformers' LlamaRMSNorm: normalise in fp32, scale in the weight's
    # dtype; a float32 weight over bf16 activations as NxD's LlamaRMSNorm
    # (modeling_llama_nxd.py): scale in fp32, then back to the input's dtype.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if w.dtype != x.dtype:
        return (w * xf).to(x.dtype)
    return w * xf.to(x.dtype)


def _rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


def _rotary(seq: int, hd: int, theta: float, device, dtype):
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(device=device, dtype=dtype), emb.sin().to(device=device, dtype=dtype)


def loss(w: dict, toks: torch.Tensor, d: Dims, cfg: dict = CONFIG) -> torch.Tensor:
    """Mean next-token cross-entropy of the Hugging Face Llama with weights
    `w` (key -> tensor, any device) on `toks` [B, S]."""
    B, S = toks.shape
    hd, eps = d.head_dim, cfg["rms_norm_eps"]
    x = w["model.embed_tokens.weight"][toks]
    cos, sin = _rotary(S, hd, cfg["rope_theta"], x.device, x.dtype)
    mask = torch.full((S, S), float("-inf")).triu(1).to(device=x.device, dtype=x.dtype)
    rep = d.Hq // d.Hkv
    for l in range(d.L):
        p = f"model.layers.{l}."
        h = _rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = (h @ w[p + "self_attn.q_proj.weight"].t()).view(B, S, d.Hq, hd).transpose(1, 2)
        k = (h @ w[p + "self_attn.k_proj.weight"].t()).view(B, S, d.Hkv, hd).transpose(1, 2)
        v = (h @ w[p + "self_attn.v_proj.weight"].t()).view(B, S, d.Hkv, hd).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        k = k * cos + _rotate_half(k) * sin
        # transformers' repeat_kv: query head j uses KV head j // rep
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        att = (q @ k.transpose(-1, -2)) / math.sqrt(hd) + mask
        att = torch.softmax(att.float(), dim=-1).to(q.dtype)
        o = (att @ v).transpose(1, 2).reshape(B, S, d.Hq * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].t()
        h = _rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        gate = h @ w[p + "mlp.gate_proj.weight"].t()
        up = h @ w[p + "mlp.up_proj.weight"].t()
        x = x + (F.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].t()
    x = _rms_norm(x, w["model.norm.weight"], eps)
    logits = (x @ w["lm_head.weight"].t()).float()
    return F.cross_entropy(logits[:, :-1].reshape(-1, d.V), toks[:, 1:].reshape(-1))
