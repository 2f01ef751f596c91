"""The training tags this suite judges, made with tests/compat's
optimizer_tags.py (plain torch, no torch_xla): NxD's file layout, ZeRO-1's
padded DP chunks, pt or xser, with or without master weights.

Each tag comes from one Hugging Face-level state (weights, exp_avg,
exp_avg_sq, step) that `TrainingState` cuts for the layout. The weights are
seeded float32 values that bfloat16 cannot hold exactly, so that in a bf16
tag the fp32 master weights and the widened bf16 model weights differ in
almost every element (taking the wrong one shows). The hyper-parameters
differ from TorchTitan's and torch's defaults (a converter that writes
defaults instead of the tag's values shows).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

HERE = Path(__file__).resolve().parent
for _p in (HERE, HERE.parent / "compat"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

from optimizer_tags import TrainingState  # noqa: E402
from reference import Layout  # noqa: E402

# Small enough to run fast, big enough for every cut: TP 4 (q heads 4,
# kv heads 2, so qkv_linear at TP 4 replicates each KV head twice), PP 2
# (4 layers), DP 3 (TP 2's 50 vocabulary rows are padded to 51).
CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "num_hidden_layers": 4,
    "vocab_size": 100,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "max_position_embeddings": 64,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}

# The optimizer's hyper-parameters in the tags (scheduler.pt, written by
# optimizer_tags, says base_lrs 1e-3 and _last_lr 7e-4 at step 7: the
# groups' lr is that current 7e-4).
HYPER = {"lr": 7e-4, "betas": [0.8, 0.99], "eps": 1e-7, "weight_decay": 0.05}


def zero1_config() -> dict:
    """tests/zero1's tiny Llama config (the model of the real torch_xla tags)."""
    spec = importlib.util.spec_from_file_location("zero1_tiny_llama", HERE.parent / "zero1" / "tiny_llama.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return dict(mod.CONFIG)


def hf_weights(cfg: dict, seed: int) -> dict:
    from expected import hf_shapes
    from reference import Dims

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in hf_shapes(Dims.from_config(cfg)).items():
        t = torch.randn(shape, generator=g)
        out[k] = (1.0 + 0.1 * t) if len(shape) == 1 else 0.05 * t
    return out


class TagState(TrainingState):
    """optimizer_tags.TrainingState with this suite's hyper-parameters."""

    def groups(self, lr=None):
        groups = super().groups(HYPER["lr"])
        for g in groups:
            g["betas"] = list(HYPER["betas"])
            g["eps"] = HYPER["eps"]
        groups[0]["weight_decay"] = HYPER["weight_decay"]
        return groups


@dataclass(frozen=True)
class TagSpec:
    name: str
    layout: Layout  # layout.dtype: the model files' dtype (None: float32)
    dp: int
    xser: bool = False
    master: bool = True
    model_data: bool = True
    int_step: bool = False
    seed: int = 0

    @property
    def source_args(self) -> list:
        """What `shardfs convert` must be told about the tag beyond the files:
        the hardware backend when the head order depends on it (qkv_linear
        with a KV multiplier; docs/commands.md)."""
        lay = self.layout
        return ["--source-hw-backend", lay.backend] if lay.qkv_linear and lay.kv_mult > 1 else []


SPECS = [
    TagSpec("tp1-dp1-fp32-pt-master", Layout(), 1),
    TagSpec("tp2-pp2-dp3-fp32-pt-nomaster", Layout(tp=2, pp=2), 3, master=False, seed=1),
    TagSpec("tp2-qkvlin-dp2-bf16-xser-master", Layout(tp=2, qkv_linear=True, dtype="bfloat16"), 2,
            xser=True, seed=2),
    TagSpec("tp4-qkvfused-kv2-dp1-bf16-pt-nomaster-intstep",
            Layout(tp=4, qkv_linear=True, fuse_qkv=True, kv_mult=2, dtype="bfloat16"), 1,
            master=False, int_step=True, seed=3),
    TagSpec("tp4-qkvlin-kv2-trn2-dp2-fp32-xser-master",
            Layout(tp=4, qkv_linear=True, kv_mult=2, backend="trn2"), 2, xser=True, seed=4),
    TagSpec("pp2-dp2-bf16-xser-master-nomodeldata", Layout(pp=2, dtype="bfloat16"), 2, xser=True,
            model_data=False, seed=5),
]
BY_NAME = {s.name: s for s in SPECS}


@dataclass
class Tag:
    spec: TagSpec
    path: Path
    config: Path  # config.json
    state: TrainingState = field(repr=False)

    @property
    def cfg(self) -> dict:
        return json.loads(self.config.read_text())


def make_tag(spec: TagSpec, root: Path, cfg: Optional[dict] = None) -> Tag:
    cfg = cfg or CONFIG
    root.mkdir(parents=True, exist_ok=True)
    config = root / "config.json"
    config.write_text(json.dumps(cfg, indent=2))
    state = TagState(hf_weights(cfg, spec.seed), cfg, seed=100 + spec.seed,
                     step=7 if spec.int_step else torch.tensor(7.0))
    path = state.write_tag(root / "tag", spec.layout, spec.dp, xser=spec.xser, master=spec.master,
                           model_data=spec.model_data)
    return Tag(spec, path, config, state)
